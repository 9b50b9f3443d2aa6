"""Findings as an OpenVEX 0.2.0 document.

Status choice, per finding:
- reached in the package, at a version the advisory calls affected -> ``affected``: the
  vulnerable function ran in the product. ``status_notes`` carries the evidence (calls,
  first/last observed, each call path with the program that took it and the version's
  verdict) and ``action_statement`` (required for affected) says what to do.
- reached, but not provably so -> ``under_investigation``, with the evidence and why no
  verdict follows: the function matched by name only (package not confirmed: an
  unpackaged binary, or a frame of unknown package), the package version is unknown or
  the advisory's ranges cannot order it, or the version is outside the affected ranges
  (runtime observation does not show that no other copy of the package exists, so this
  is no ``not_affected`` claim either).
- not reached -> ``under_investigation``, never ``not_affected``: runtime observation only
  shows what ran while it watched, in the containers it watched, for the functions the
  agents probed. ``status_notes`` states that window and coverage plainly, so a reader
  can decide with a static analysis or a longer observation whether to claim
  ``vulnerable_code_not_in_execute_path``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from runtime_signals.consumer.models import Coverage, iso
from runtime_signals.evidence import export
from runtime_signals.evidence.export import Finding

CONTEXT = "https://openvex.dev/ns/v0.2.0"
_MAX_PATHS_IN_NOTES = 10


def container_iri(container_id: str) -> str:
    """A URI naming a container (OpenVEX products are IRIs)."""
    return "urn:runtime-signals:container:" + quote(container_id, safe="")


def path_text(symbols: Sequence[str], matched_frame: int) -> str:
    return " -> ".join(f"[{s}]" if i == matched_frame else s for i, s in enumerate(symbols))


def evidence_notes(finding: Finding) -> str:
    answer = finding.answer
    functions = ", ".join(finding.functions)
    where = f"in {finding.scope}"
    lines = [f"runtime-signals observed {functions} running {where}: {answer.observation_count} calls "
             f"on {len(answer.paths)} call path(s), first {iso(answer.first_observed_at_us)}, "
             f"last {iso(answer.last_observed_at_us)}."]
    verdicts = {v.evidence: v for v in finding.verdicts}
    for evidence in answer.paths[:_MAX_PATHS_IN_NOTES]:
        unverified = "" if evidence.purl_verified else " (package not confirmed: matched by name)"
        verdict = verdicts.get(evidence)
        judged = f"; {verdict.status.replace('_', ' ')}: {verdict.reason}" if verdict and evidence.purl_verified else ""
        programs = ", ".join(e.describe() for e in evidence.executables)
        taken_by = f"; taken by {programs}" if programs else ""
        lines.append(f"Path ({evidence.observation_count} calls, {evidence.windows} window(s), "
                     f"container {evidence.container_id}{unverified}{taken_by}{judged}): "
                     f"{path_text(evidence.symbols, evidence.matched_frame)}")
    if len(answer.paths) > _MAX_PATHS_IN_NOTES:
        lines.append(f"... and {len(answer.paths) - _MAX_PATHS_IN_NOTES} more path(s).")
    return "\n".join(lines)


def coverage_notes(finding: Finding) -> str:
    coverage = finding.answer.coverage
    functions = ", ".join(finding.functions)
    if coverage.windows == 0:
        return (f"No runtime observation: runtime-signals had no summary for "
                f"{finding.scope} in the requested range, so nothing is known about "
                f"whether {functions} runs. This is not a not_affected claim.")
    probed = ", ".join(coverage.probed_functions) or "none"
    return (f"Not observed: runtime-signals saw no call of {functions} in "
            f"{', '.join(coverage.containers)} between {iso(coverage.first_window_start_us)} and "
            f"{iso(coverage.last_window_end_us)} ({coverage.windows} window(s); {coverage.total_events} calls "
            f"of probed functions were observed, {coverage.dropped_events} dropped, {coverage.late_events} late; "
            f"probed functions seen called: {probed}).{_watched_note(coverage)} Runtime observation covers only "
            f"that window and only the functions the agents probed: make sure {functions} was probed. This is "
            f"not a not_affected claim.")


def _watched_note(coverage: Coverage) -> str:
    watch = coverage.watched
    if watch is None or not watch.reports:
        return ""
    if not watch.probes:
        return f" No agent of these containers reported a probe on {watch.function} in that span: it was not watched."
    return (f" Its probes watched {watch.function} for at least {watch.watched_us() / 1e6:.1f} s of "
            f"{watch.span_us / 1e6:.1f} s (the rest: detached by the agent's budget, agent down, or not reported).")


def undecided_notes(finding: Finding) -> str:
    """Why a reached function is no verdict on the package."""
    parts = []
    if finding.verdicts_with(export.UNCONFIRMED):
        parts.append(f"A function of that name ran, but not in a frame known to belong to {finding.purl}: "
                     f"matched by name only, this is no verdict on the package.")
    unknown = finding.verdicts_with(export.VERSION_UNKNOWN)
    if unknown:
        parts.append("The package ran, but whether its version is affected is not known: "
                     + "; ".join(sorted({v.reason for v in unknown})) + ".")
    fixed = finding.verdicts_with(export.NOT_AFFECTED)
    if fixed:
        parts.append("The package ran only in versions the advisory does not call affected: "
                     + "; ".join(sorted({v.reason for v in fixed}))
                     + ". Runtime observation does not show that no other copy exists: this is not a "
                       "not_affected claim.")
    return "\n".join(parts)


def statement(finding: Finding, timestamp: str) -> dict[str, Any]:
    # The product is what the statement is about: the named product, else the container,
    # else (nothing observed at all) the vulnerable package itself.
    product: dict[str, Any]
    if finding.product or finding.container:
        product = {"@id": finding.product or container_iri(finding.container or "")}
        if finding.product and finding.product.startswith("pkg:"):
            product["identifiers"] = {"purl": finding.product}
        if finding.purl:
            product["subcomponents"] = [{"@id": finding.purl, "identifiers": {"purl": finding.purl}}]
    elif finding.purl:
        product = {"@id": finding.purl, "identifiers": {"purl": finding.purl}}
    else:
        product = {"@id": "urn:runtime-signals:unobserved"}
    vulnerability: dict[str, Any] = {"name": finding.vulnerability}
    if finding.aliases:
        vulnerability["aliases"] = sorted(set(finding.aliases))
    out: dict[str, Any] = {"vulnerability": vulnerability, "timestamp": timestamp, "products": [product]}
    if finding.affected:
        out["status"] = "affected"
        out["status_notes"] = evidence_notes(finding)
        out["action_statement"] = (
            f"The vulnerable code of {finding.vulnerability} runs in this product: update "
            f"{finding.purl or 'the package'} to a fixed version, or remove the call paths listed in status_notes.")
    elif finding.answer.reached:
        out["status"] = "under_investigation"
        out["status_notes"] = evidence_notes(finding) + "\n" + undecided_notes(finding)
    else:
        out["status"] = "under_investigation"
        out["status_notes"] = coverage_notes(finding)
    return out


def document(findings: Sequence[Finding], *, author: str, tooling: str,
             now: datetime | None = None) -> dict[str, Any]:
    """The OpenVEX document; its @id is derived from the statements, so the same
    evidence gives the same id."""
    timestamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    statements = [statement(f, timestamp) for f in findings]
    if not statements:
        raise ValueError("an OpenVEX document needs at least one statement: no vulnerable function was given")
    digest = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(
        [{k: v for k, v in s.items() if k != "timestamp"} for s in statements], sort_keys=True))
    return {
        "@context": CONTEXT,
        "@id": f"urn:uuid:{digest}",
        "author": author,
        "timestamp": timestamp,
        "version": 1,
        "tooling": tooling,
        "statements": statements,
    }


def finding_status(finding: Finding) -> str:
    return "affected" if finding.affected else "under_investigation"
