"""Findings as a CycloneDX 1.6 (or 1.5) BOM with runtime call-stack evidence.

- One component per vulnerable package (by PURL). Its ``evidence.callstack.frames`` is the
  most observed call path that reached a vulnerable function of it, innermost frame first
  as in a stack trace (CycloneDX holds one call stack per component); every observed path,
  in every container, is an ``evidence.occurrences`` entry whose ``additionalContext`` gives
  the path and its counts (1.6; 1.5 occurrences hold the location only).
- One ``vulnerabilities`` entry per vulnerability and package. ``analysis.state`` is
  ``in_triage`` whether or not the function was reached: CycloneDX's states judge
  exploitability (``exploitable`` claims an attacker can use it), which running the code
  does not show. What was observed is in ``detail`` and in the properties
  ``runtime-signals:reachability`` (``reached`` in a confirmed affected version,
  ``reached-version-undecided``, ``reached-unaffected-version``, ``matched-by-name-only``,
  ``not-observed``); each observed package version is an ``affects[].versions[]`` entry
  with status ``affected``, ``unaffected`` or ``unknown``. Never ``not_affected``.
- Every frame of the evidence call stack names its ``package`` (the frame's PURL) when it
  is known; frames of unpackaged binaries name none.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from packageurl import PackageURL

from runtime_signals.consumer.models import PathEvidence
from runtime_signals.evidence import export
from runtime_signals.evidence.export import Finding
from runtime_signals.evidence.openvex import coverage_notes, evidence_notes, path_text, undecided_notes

SPEC_VERSIONS = ("1.5", "1.6")


def frames(evidence: PathEvidence) -> list[dict[str, Any]]:
    """The path as CycloneDX frames, innermost (the probed function) first."""
    out = []
    for index in range(len(evidence.symbols) - 1, -1, -1):
        library = evidence.libraries[index] if index < len(evidence.libraries) else None
        frame: dict[str, Any] = {
            # module is required: the file the frame is in, or "unknown" for anonymous memory.
            "module": PurePosixPath(library).name if library else "unknown",
            "function": evidence.symbols[index],
        }
        if library:
            frame["fullFilename"] = library
        package = _package(evidence, index)
        if package:
            frame["package"] = package
        out.append(frame)
    return out


def _package(evidence: PathEvidence, index: int) -> str | None:
    """The frame's package PURL: the agent's for the probed function, else the frame's
    module identity when it names a package (not pkg:generic, an unpackaged binary)."""
    if index == len(evidence.symbols) - 1 and evidence.purl:
        return evidence.purl
    module = evidence.frame_purls[index] if index < len(evidence.frame_purls) else None
    return module if module and not module.startswith("pkg:generic/") else None


_REACHABILITY = {export.AFFECTED: "reached", export.VERSION_UNKNOWN: "reached-version-undecided",
                 export.NOT_AFFECTED: "reached-unaffected-version", export.UNCONFIRMED: "matched-by-name-only"}
_VERSION_STATUS = {export.AFFECTED: "affected", export.NOT_AFFECTED: "unaffected", export.VERSION_UNKNOWN: "unknown"}


def reachability(finding: Finding) -> str:
    """The strongest thing observed, as runtime-signals:reachability says it."""
    for status in (export.AFFECTED, export.VERSION_UNKNOWN, export.NOT_AFFECTED, export.UNCONFIRMED):
        if finding.verdicts_with(status):
            return _REACHABILITY[status]
    return "not-observed"


def _versions(finding: Finding) -> list[dict[str, str]]:
    """Each confirmed package version observed, with the advisory's verdict on it."""
    found: dict[str, str] = {}
    for verdict in finding.verdicts:
        if verdict.version and verdict.status in _VERSION_STATUS:
            found.setdefault(verdict.version, _VERSION_STATUS[verdict.status])
    return [{"version": version, "status": status} for version, status in sorted(found.items())]


def _component(purl: str | None, name_hint: str, reference: str) -> dict[str, Any]:
    component: dict[str, Any] = {"type": "library", "bom-ref": reference, "name": name_hint}
    if purl:
        parsed = PackageURL.from_string(purl)
        component["name"] = parsed.name
        if parsed.namespace:
            component["group"] = parsed.namespace
        if parsed.version:
            component["version"] = parsed.version
        component["purl"] = purl
    return component


def bom(findings: Sequence[Finding], *, tool_name: str, tool_version: str, spec_version: str = "1.6",
        now: datetime | None = None) -> dict[str, Any]:
    """The BOM; its serial number is derived from its content, so equal evidence gives
    equal serials."""
    if spec_version not in SPEC_VERSIONS:
        raise ValueError(f"CycloneDX spec version {spec_version!r}: choose one of {', '.join(SPEC_VERSIONS)}")
    components: dict[str | None, dict[str, Any]] = {}
    evidence_by_ref: dict[str, list[PathEvidence]] = {}
    vulnerabilities: list[dict[str, Any]] = []
    for finding in findings:
        key = finding.purl or f"function:{finding.functions[0]}"
        if key not in components:
            reference = f"component-{len(components) + 1}"
            components[key] = _component(finding.purl, finding.functions[0], reference)
            evidence_by_ref[reference] = []
        reference = components[key]["bom-ref"]
        evidence_by_ref[reference].extend(finding.answer.paths)
        reached = finding.answer.reached
        detail = coverage_notes(finding)
        if finding.affected:
            detail = evidence_notes(finding)
        elif reached:
            detail = evidence_notes(finding) + "\n" + undecided_notes(finding)
        affects: dict[str, Any] = {"ref": reference}
        observed_versions = _versions(finding)
        if observed_versions:
            affects["versions"] = observed_versions
        vulnerability: dict[str, Any] = {
            "bom-ref": f"vulnerability-{len(vulnerabilities) + 1}",
            "id": finding.vulnerability,
            "analysis": {"state": "in_triage", "detail": detail},
            "affects": [affects],
            "properties": [
                {"name": "runtime-signals:scope", "value": finding.scope},
                {"name": "runtime-signals:reachability", "value": reachability(finding)},
                {"name": "runtime-signals:functions", "value": ", ".join(finding.functions)},
                {"name": "runtime-signals:observation_count", "value": str(finding.answer.observation_count)},
            ],
        }
        if finding.aliases:
            vulnerability["references"] = [{"id": alias, "source": {"name": _source_of(alias)}}
                                           for alias in sorted(set(finding.aliases))]
        vulnerabilities.append(vulnerability)
    for component in components.values():
        _add_evidence(component, evidence_by_ref[component["bom-ref"]], spec_version)
    timestamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    body = {"components": list(components.values()), "vulnerabilities": vulnerabilities}
    serial = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(body, sort_keys=True))
    return {
        "bomFormat": "CycloneDX",
        "specVersion": spec_version,
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": tool_name, "version": tool_version}]},
        },
        **body,
    }


def _add_evidence(component: dict[str, Any], paths: list[PathEvidence], spec_version: str) -> None:
    if not paths:
        return
    unique = sorted(set(paths), key=lambda e: (-e.observation_count, e.container_id, e.symbols))
    occurrences = []
    seen_locations = set()
    for evidence in unique:
        location = f"container {evidence.container_id}: {' -> '.join(evidence.symbols)}"
        if location in seen_locations:
            continue
        seen_locations.add(location)
        occurrence: dict[str, Any] = {"location": location}
        if spec_version != "1.5":
            occurrence["symbol"] = evidence.symbols[evidence.matched_frame]
            programs = ", ".join(e.describe() for e in evidence.executables)
            occurrence["additionalContext"] = (
                f"{evidence.observation_count} calls in {evidence.windows} window(s); "
                f"path {path_text(evidence.symbols, evidence.matched_frame)}; "
                f"path hash {evidence.path_hash}; callstack hash {evidence.callstack_hash}"
                + (f"; taken by {programs}" if programs else ""))
        occurrences.append(occurrence)
    component["evidence"] = {"callstack": {"frames": frames(unique[0])}, "occurrences": occurrences}


def _source_of(alias: str) -> str:
    prefix = alias.split("-", 1)[0]
    return {"CVE": "NVD", "GHSA": "GitHub Advisories", "GO": "Go Vulnerability Database"}.get(prefix, "OSV")
