"""Export verdicts respect versions and never over-claim (issue 13, points 4 and 7).

Advisories are in the shapes their databases publish (OSV JSON of the Go vulnerability
database, RustSec, GitHub advisories and Debian security advisories); versions are compared
per ecosystem by univers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.consumer import Summary
from runtime_signals.evidence import cyclonedx, export, openvex
from runtime_signals.evidence.versions import (
    AFFECTED,
    NOT_AFFECTED,
    UNKNOWN,
    AffectedVersions,
    judge,
)
from tests.consumer import sample_summaries as sample
from tests.test_export import assert_valid, cyclonedx_validator, openvex_validator

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# GO-2023-2102 (golang.org/x/net HTTP/2 rapid reset), as vuln.go.dev serves it.
GO_VULNDB = {"package": {"ecosystem": "Go", "name": "golang.org/x/net"},
             "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.17.0"}]}]}
# RUSTSEC-2021-0003 (smallvec), two ranges.
RUSTSEC = {"package": {"ecosystem": "crates.io", "name": "smallvec", "purl": "pkg:cargo/smallvec"},
           "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.6.3"}, {"fixed": "0.6.14"},
                                                    {"introduced": "1.0.0"}, {"fixed": "1.6.1"}]}]}
# GHSA-j8r2-6x86-q33q (requests), an ECOSYSTEM range of PyPI versions.
GHSA_PYPI = {"package": {"ecosystem": "PyPI", "name": "requests"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}]}
# A GHSA npm entry with last_affected instead of fixed.
GHSA_NPM = {"package": {"ecosystem": "npm", "name": "lodash"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "4.17.20"}]}]}
# DSA-5532-1 (openssl in Debian 12): the fix is a ~deb12u version.
DEBIAN = {"package": {"ecosystem": "Debian:12", "name": "openssl"},
          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}]}]}
# A Debian fix with an epoch (glibc-like).
DEBIAN_EPOCH = {"package": {"ecosystem": "Debian:12", "name": "libfoo"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:2.36-9+deb12u3"}]}]}
GIT_ONLY = {"package": {"ecosystem": "Debian:12", "name": "libbar"},
            "ranges": [{"type": "GIT", "repo": "https://example.org/bar.git",
                        "events": [{"introduced": "0"}, {"fixed": "9f2c0e1a"}]}]}


def verdict(entry: dict[str, Any], version: str | None) -> str:
    purl = export.purl_for(entry["package"]["ecosystem"], entry["package"]["name"]) or entry["package"]["purl"]
    kind = purl.split(":", 1)[1].split("/", 1)[0]
    return judge(version, AffectedVersions.from_osv(kind, entry)).status


@pytest.mark.parametrize(("entry", "version", "expected"), [
    (GO_VULNDB, "v0.16.0", AFFECTED),
    (GO_VULNDB, "v0.17.0", NOT_AFFECTED),        # the fixed version
    (GO_VULNDB, "v0.9.0", AFFECTED),             # 9 < 16 numerically, not as text
    (RUSTSEC, "0.6.2", NOT_AFFECTED),
    (RUSTSEC, "0.6.13", AFFECTED),
    (RUSTSEC, "0.7.0", NOT_AFFECTED),            # between the two ranges
    (RUSTSEC, "1.6.0", AFFECTED),
    (RUSTSEC, "1.6.1", NOT_AFFECTED),
    (GHSA_PYPI, "2.30.0", AFFECTED),
    (GHSA_PYPI, "2.31.0", NOT_AFFECTED),
    (GHSA_PYPI, "2.2.1", NOT_AFFECTED),
    (GHSA_PYPI, "2.31.0rc1", AFFECTED),          # PEP 440: a pre-release comes before the release
    (GHSA_NPM, "4.17.20", AFFECTED),             # last_affected is inclusive
    (GHSA_NPM, "4.17.21", NOT_AFFECTED),
    (DEBIAN, "3.0.11-1~deb12u1", AFFECTED),
    (DEBIAN, "3.0.11-1~deb12u2", NOT_AFFECTED),
    (DEBIAN, "3.0.11-1", NOT_AFFECTED),          # ~ sorts before the empty string
    (DEBIAN, "3.0.9-1", AFFECTED),
    (DEBIAN_EPOCH, "2.40-1", AFFECTED),          # no epoch is epoch 0, below 1:
    (DEBIAN_EPOCH, "1:2.36-9+deb12u3", NOT_AFFECTED),
    (DEBIAN_EPOCH, "1:2.36-9+deb12u2", AFFECTED),
    (GIT_ONLY, "1.0-1", UNKNOWN),                # commits do not order package versions
    (DEBIAN, None, UNKNOWN),                     # no version known
])
def test_real_advisory_shapes(entry: dict[str, Any], version: str | None, expected: str) -> None:
    assert verdict(entry, version) == expected


def test_explicit_versions_and_other_ecosystems() -> None:
    listed = AffectedVersions("maven", versions=("2.14.1",))
    assert judge("2.14.1", listed).status == AFFECTED and judge("2.15.0", listed).status == NOT_AFFECTED
    rpm = AffectedVersions.from_osv("rpm", {"ranges": [{"type": "ECOSYSTEM", "events": [
        {"introduced": "0"}, {"fixed": "1.1.1k-7.el8"}]}]})
    assert judge("1.1.1k-6.el8", rpm).status == AFFECTED and judge("1.1.1k-7.el8", rpm).status == NOT_AFFECTED
    apk = AffectedVersions.from_osv("apk", {"ranges": [{"type": "ECOSYSTEM", "events": [
        {"introduced": "0"}, {"fixed": "3.1.4-r1"}]}]})
    assert judge("3.1.4-r0", apk).status == AFFECTED and judge("3.1.4-r1", apk).status == NOT_AFFECTED
    maven = AffectedVersions.from_osv("maven", {"ranges": [{"type": "ECOSYSTEM", "events": [
        {"introduced": "2.0-beta9"}, {"fixed": "2.15.0"}]}]})
    assert judge("2.14.1", maven).status == AFFECTED and judge("2.15.0", maven).status == NOT_AFFECTED
    assert judge("1.0", AffectedVersions("swift", (), ())).status == UNKNOWN
    assert "no version ordering" in judge("1.0", AffectedVersions.from_osv("swift", {"ranges": [
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]})).reason


def _summaries(purl: str | None) -> list[Summary]:
    record = sample.summary_record("web-1", 0, [sample.path_record("web-1", 0, sample.UPLOAD, 7, purl)])
    return [Summary.from_record(record)]


def _documents(tmp_path: Path, functions_file: str, summaries: list[Summary]) -> tuple[dict[str, Any], dict[str, Any]]:
    path = tmp_path / ("input.json" if functions_file.lstrip().startswith("{") else "input.txt")
    path.write_text(functions_file)
    findings = export.findings(export.load_vulnerable_functions(path, "CVE-2026-7"), summaries)
    vex = openvex.document(findings, author="a", tooling="t", now=NOW)
    bom = cyclonedx.bom(findings, tool_name="t", tool_version="1", now=NOW)
    assert_valid(openvex_validator(), vex)
    assert_valid(cyclonedx_validator("1.6"), bom)
    return vex, bom


def _osv(fixed: str) -> str:
    return json.dumps({"id": "DSA-9999-1", "affected": [{
        "package": {"ecosystem": "Debian:12", "name": "libimage"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
        "ecosystem_specific": {"functions": ["parse_image_header"]}}]})


def test_a_function_reached_in_a_fixed_version_is_not_affected(tmp_path: Path) -> None:
    reached_fixed = _summaries("pkg:deb/debian/libimage@1:1.2.3-1~deb12u1?arch=amd64")
    vex, bom = _documents(tmp_path, _osv("1:1.2.3-1~deb12u1"), reached_fixed)
    (statement,) = vex["statements"]
    assert statement["status"] == "under_investigation"
    assert "outside the affected ranges" in statement["status_notes"]
    assert "this is not a not_affected claim" in statement["status_notes"]
    (vulnerability,) = bom["vulnerabilities"]
    assert vulnerability["affects"][0]["versions"] == [{"version": "1:1.2.3-1~deb12u1", "status": "unaffected"}]
    assert {p["name"]: p["value"] for p in vulnerability["properties"]}["runtime-signals:reachability"] == \
        "reached-unaffected-version"

    # One Debian revision earlier (~deb12u0 sorts below ~deb12u1): affected.
    vex, bom = _documents(tmp_path, _osv("1:1.2.3-1~deb12u1"),
                          _summaries("pkg:deb/debian/libimage@1:1.2.3-1~deb12u0?arch=amd64"))
    assert vex["statements"][0]["status"] == "affected"
    assert bom["vulnerabilities"][0]["affects"][0]["versions"] == [
        {"version": "1:1.2.3-1~deb12u0", "status": "affected"}]
    assert bom["vulnerabilities"][0]["analysis"]["state"] == "in_triage"  # reached, not "exploitable"


def test_an_unknown_package_version_says_so(tmp_path: Path) -> None:
    vex, bom = _documents(tmp_path, _osv("1.2.4"), _summaries("pkg:deb/debian/libimage?arch=amd64"))
    (statement,) = vex["statements"]
    assert statement["status"] == "under_investigation"
    assert "whether its version is affected is not known: the package version is not known" in statement["status_notes"]
    props = {p["name"]: p["value"] for p in bom["vulnerabilities"][0]["properties"]}
    assert props["runtime-signals:reachability"] == "reached-version-undecided"


def test_a_function_matched_by_name_in_an_unpackaged_binary_is_no_verdict(tmp_path: Path) -> None:
    """The issue's case: `pkg:deb/debian/openssl@3.0.0 parse_image_header` against a program's
    own parse_image_header (no package) was exported as affected, and CycloneDX said
    exploitable."""
    unpackaged = _summaries(None)
    vex, bom = _documents(tmp_path, "pkg:deb/debian/openssl@3.0.0 parse_image_header CVE-2026-7\n", unpackaged)
    (statement,) = vex["statements"]
    assert statement["status"] == "under_investigation"
    assert "package not confirmed: matched by name" in statement["status_notes"]
    assert "no verdict on the package" in statement["status_notes"]
    (vulnerability,) = bom["vulnerabilities"]
    assert vulnerability["analysis"]["state"] == "in_triage" and "versions" not in vulnerability["affects"][0]
    assert {p["name"]: p["value"] for p in vulnerability["properties"]}["runtime-signals:reachability"] == \
        "matched-by-name-only"
    # The same function in another package's frame does not match at all.
    vex, _ = _documents(tmp_path, "pkg:deb/debian/openssl@3.0.0 parse_image_header CVE-2026-7\n",
                        _summaries(sample.LIBIMAGE))
    assert vex["statements"][0]["status"] == "under_investigation"
    assert vex["statements"][0]["status_notes"].startswith("Not observed")


def test_a_text_list_version_is_the_affected_version(tmp_path: Path) -> None:
    vex, _ = _documents(tmp_path, "pkg:deb/debian/libimage@1.2.3 parse_image_header CVE-2026-7\n",
                        _summaries("pkg:deb/debian/libimage@1.2.4?arch=amd64"))
    assert vex["statements"][0]["status"] == "under_investigation"
    assert "version 1.2.4 is not among the affected versions 1.2.3" in vex["statements"][0]["status_notes"]
    vex, _ = _documents(tmp_path, "pkg:deb/debian/libimage@1.2.3 parse_image_header CVE-2026-7\n",
                        _summaries("pkg:deb/debian/libimage@1.2.3?arch=amd64"))
    assert vex["statements"][0]["status"] == "affected"


def test_every_frame_of_the_cyclonedx_call_stack_names_its_package(tmp_path: Path) -> None:
    _, bom = _documents(tmp_path, _osv("9.9"), _summaries("pkg:deb/debian/libimage@1.2.3?arch=amd64"))
    frames = bom["components"][0]["evidence"]["callstack"]["frames"]
    assert frames[0]["package"] == "pkg:deb/debian/libimage@1.2.3?arch=amd64"
    # The callers are in /app/server, which no package installed: no package is claimed.
    assert all("package" not in f for f in frames[1:])
    assert "taken by /app/server (sha256:" in bom["components"][0]["evidence"]["occurrences"][0]["additionalContext"]
