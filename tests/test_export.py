"""`signals export`: vulnerable-function lists in, OpenVEX and CycloneDX out, validated
against their JSON schemas (CycloneDX's as cyclonedx-python-lib ships them; OpenVEX's
written from the specification, tests/data/openvex-0.2.0.schema.json says why) and read
back by an independent OpenVEX model (vexipy)."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import vexipy
from cyclonedx import schema as cyclonedx_schemas
from referencing import Registry, Resource

from runtime_signals.consumer import Summary
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.evidence import cyclonedx, export, openvex
from runtime_signals.schemas.topics import TopicNames
from tests.consumer import sample_summaries as sample

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

OSV_GO = {
    "id": "GO-2026-0001",
    "aliases": ["CVE-2026-0001", "GHSA-aaaa-bbbb-cccc"],
    "affected": [{
        "package": {"ecosystem": "Go", "name": "golang.org/x/net"},
        # The sample runs x/net v0.17.0: inside these ranges.
        "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.18.0"}]}],
        "ecosystem_specific": {"imports": [{"path": "golang.org/x/net/html",
                                            "symbols": ["Parse", "Tokenizer.Next"]}]},
    }],
}
TEXT = """\
# PURL  FUNCTION  VULNERABILITY
pkg:deb/debian/libimage parse_image_header CVE-2026-1111
pkg:deb/debian/libimage png_read_chunk CVE-2026-2222
"""


def openvex_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DATA / "openvex-0.2.0.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def cyclonedx_validator(version: str) -> jsonschema.protocols.Validator:
    """The published CycloneDX schema, with the SPDX and JSF schemas it refers to."""
    directory = Path(cyclonedx_schemas.__file__).parent / "_res"
    registry: Registry = Registry()
    for path in directory.glob("*.schema.json"):
        registry = registry.with_resource(f"http://cyclonedx.org/schema/{path.name}",
                                          Resource.from_contents(json.loads(path.read_text())))
    schema = json.loads((directory / f"bom-{version}.SNAPSHOT.schema.json").read_text())
    return jsonschema.Draft7Validator(schema, registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def assert_valid(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


@pytest.fixture
def summaries() -> list[Summary]:
    return [Summary.from_record(r) for r in sample.samples()]


def test_osv_go_symbols_become_the_linkers_names(tmp_path: Path) -> None:
    (tmp_path / "go.json").write_text(json.dumps({"vulns": [OSV_GO]}))
    functions = export.load_vulnerable_functions(tmp_path / "go.json")
    assert [(f.vulnerability, f.purl, f.names) for f in functions] == [
        ("GO-2026-0001", "pkg:golang/golang.org/x/net", ("golang.org/x/net/html.Parse",)),
        ("GO-2026-0001", "pkg:golang/golang.org/x/net", ("golang.org/x/net/html.(*Tokenizer).Next",
                                                         "golang.org/x/net/html.Tokenizer.Next")),
    ]
    assert functions[0].aliases == ("CVE-2026-0001", "GHSA-aaaa-bbbb-cccc")


def test_text_lists_name_the_bad_line(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text(TEXT + "pkg:deb/debian/libimage\n")
    with pytest.raises(export.ExportError, match=r"list.txt:4: expected `PURL FUNCTION"):
        export.load_vulnerable_functions(tmp_path / "list.txt")
    (tmp_path / "noid.txt").write_text("pkg:deb/debian/libimage parse_image_header\n")
    with pytest.raises(export.ExportError, match=r"noid.txt:1: no vulnerability id"):
        export.load_vulnerable_functions(tmp_path / "noid.txt")
    assert export.load_vulnerable_functions(tmp_path / "noid.txt", "CVE-2026-9")[0].vulnerability == "CVE-2026-9"


def _findings(tmp_path: Path, summaries: list[Summary], product: str | None = None) -> list[export.Finding]:
    (tmp_path / "list.txt").write_text(TEXT)
    (tmp_path / "go.json").write_text(json.dumps(OSV_GO))
    functions = (export.load_vulnerable_functions(tmp_path / "list.txt")
                 + export.load_vulnerable_functions(tmp_path / "go.json"))
    return export.findings(functions, summaries, product=product)


def test_openvex_says_affected_with_paths_where_reached_and_under_investigation_elsewhere(
        tmp_path: Path, summaries: list[Summary]) -> None:
    document = openvex.document(_findings(tmp_path, summaries), author="security@example.com",
                                tooling="runtime-signals test", now=NOW)
    assert_valid(openvex_validator(), document)
    vexipy.Document.model_validate(document)  # an independent reading of the spec accepts it too

    by_key = {(s["vulnerability"]["name"], s["products"][0]["@id"]): s for s in document["statements"]}
    web = openvex.container_iri("web-1")
    reached = by_key[("CVE-2026-1111", web)]
    assert reached["status"] == "affected" and "update pkg:deb/debian/libimage" in reached["action_statement"]
    assert reached["products"][0]["subcomponents"] == [{"@id": "pkg:deb/debian/libimage",
                                                       "identifiers": {"purl": "pkg:deb/debian/libimage"}}]
    notes = reached["status_notes"]
    assert "14 calls on 2 call path(s)" in notes
    assert "Path (9 calls, 2 window(s), container web-1; taken by /app/server (sha256:" in notes
    assert "; affected: the input lists every version of pkg:deb/debian/libimage as affected): " \
           "_start -> main -> handle_upload -> decode_image -> [parse_image_header]" in notes

    unseen = by_key[("CVE-2026-2222", web)]
    assert unseen["status"] == "under_investigation" and "justification" not in unseen
    first, last = (datetime.fromtimestamp(t / 1e6, UTC).isoformat(timespec="microseconds")
                   for t in (sample.T0_US, sample.T0_US + 2 * sample.WINDOW_US))
    assert f"between {first} and {last} (2 window(s); 14 calls of probed functions" in unseen["status_notes"]
    assert "not a not_affected claim" in unseen["status_notes"]

    # The Go method has two linker spellings; html.Parse ran in worker-2 only.
    go = {p: s["status"] for (v, p), s in by_key.items() if v == "GO-2026-0001"}
    assert go == {web: "under_investigation", openvex.container_iri("worker-2"): "affected"}
    assert by_key[("GO-2026-0001", web)]["vulnerability"]["aliases"] == ["CVE-2026-0001", "GHSA-aaaa-bbbb-cccc"]
    assert all(s["status"] != "not_affected" for s in document["statements"])


def test_the_openvex_schema_rejects_what_the_spec_forbids() -> None:
    """The hand-written schema is only worth its constraints: show they bite."""
    validator = openvex_validator()
    base = {"@context": openvex.CONTEXT, "@id": "urn:uuid:0", "author": "a", "timestamp": NOW.isoformat(),
            "version": 1}
    affected = {"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:deb/debian/x"}], "status": "affected"}
    assert not validator.is_valid(base | {"statements": [affected]})  # no action_statement
    assert not validator.is_valid(base | {"statements": [affected | {"status": "unknown"}]})
    assert not validator.is_valid(base | {"statements": [affected | {"action_statement": "x", "evidence": "y"}]})
    assert validator.is_valid(base | {"statements": [affected | {"action_statement": "update"}]})


@pytest.mark.parametrize("version", ["1.6", "1.5"])
def test_cyclonedx_carries_the_observed_call_stack_as_evidence(
        tmp_path: Path, summaries: list[Summary], version: str) -> None:
    bom = cyclonedx.bom(_findings(tmp_path, summaries), tool_name="runtime-signals", tool_version="0.1.0",
                        spec_version=version, now=NOW)
    assert_valid(cyclonedx_validator(version), bom)
    # The schema does check evidence: a frame without its required module is refused.
    broken = json.loads(json.dumps(bom))
    next(c for c in broken["components"] if "evidence" in c)["evidence"]["callstack"]["frames"][0].pop("module")
    assert not cyclonedx_validator(version).is_valid(broken)

    components = {c["purl"]: c for c in bom["components"]}
    libimage = components["pkg:deb/debian/libimage"]
    frames = libimage["evidence"]["callstack"]["frames"]
    # The most observed path, innermost frame first, as a stack trace reads.
    assert [f["function"] for f in frames] == list(reversed(sample.UPLOAD))
    assert frames[0] == {"module": "libimage.so.1", "function": "parse_image_header",
                         "fullFilename": "/usr/lib/libimage.so.1", "package": sample.LIBIMAGE}
    locations = [o["location"] for o in libimage["evidence"]["occurrences"]]
    assert locations == ["container web-1: " + " -> ".join(sample.UPLOAD),
                         "container web-1: " + " -> ".join(sample.PREVIEW)]
    if version == "1.6":
        assert libimage["evidence"]["occurrences"][0]["additionalContext"].startswith("9 calls in 2 window(s)")
    # Running the code is not exploitability: the state stays in_triage, the reachability says what ran.
    states = {(v["id"], v["properties"][0]["value"]): (v["analysis"]["state"], v["properties"][1]["value"])
              for v in bom["vulnerabilities"]}
    assert states[("CVE-2026-1111", "web-1")] == ("in_triage", "reached")
    assert states[("CVE-2026-2222", "web-1")] == ("in_triage", "not-observed")
    assert all(v["analysis"]["state"] != "exploitable" for v in bom["vulnerabilities"])
    go_frames = components["pkg:golang/golang.org/x/net"]["evidence"]["callstack"]["frames"]
    assert [f["function"] for f in go_frames] == list(reversed(sample.GO_PARSE))
    assert "evidence" not in components.get("pkg:deb/debian/libscale", {})  # never asked about


def test_with_no_observation_at_all_the_statement_says_so(tmp_path: Path) -> None:
    document = openvex.document(_findings(tmp_path, []), author="a", tooling="t", now=NOW)
    assert_valid(openvex_validator(), document)
    assert {s["status"] for s in document["statements"]} == {"under_investigation"}
    assert all("No runtime observation" in s["status_notes"] for s in document["statements"])


@pytest.mark.broker
def test_the_export_command_reads_the_summary_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"export-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=3)
    sample.produce(kafka_bootstrap, names.summaries, sample.samples())
    (tmp_path / "list.txt").write_text(TEXT)
    for fmt, validator in (("openvex", openvex_validator()), ("cyclonedx", cyclonedx_validator("1.6"))):
        out = tmp_path / f"{fmt}.json"
        done = subprocess.run(signals_command("export", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                                              "--functions", str(tmp_path / "list.txt"), "--format", fmt,
                                              "--product", "pkg:oci/shop@sha256%3Aabc", "-o", str(out)),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "2 finding(s), 1 reached" in done.stderr
        document = json.loads(out.read_text())
        assert_valid(validator, document)
    statements = json.loads((tmp_path / "openvex.json").read_text())["statements"]
    assert [(s["vulnerability"]["name"], s["status"], s["products"][0]["@id"]) for s in statements] == [
        ("CVE-2026-1111", "affected", "pkg:oci/shop@sha256%3Aabc"),
        ("CVE-2026-2222", "under_investigation", "pkg:oci/shop@sha256%3Aabc")]
