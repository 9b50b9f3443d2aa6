"""Is this version inside an OSV ``affected[]`` entry? (``versions`` list and ``ranges`` events).

Kept small on purpose, for probe plans only (evidence/plan.py): versions are compared with
``univers`` (Go and other SEMVER ranges as semver, Debian's as dpkg compares them); an
ecosystem univers does not know, or a version it cannot parse, answers None (unknown), never
a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from univers.versions import DebianVersion, InvalidVersion, SemverVersion, Version

_ECOSYSTEM_VERSIONS: dict[str, type[Version]] = {"Go": SemverVersion, "crates.io": SemverVersion,
                                                  "Debian": DebianVersion, "Ubuntu": DebianVersion}


def _parse(kind: type[Version], text: str) -> Version | None:
    try:
        return kind(text.removeprefix("v") if kind is SemverVersion else text)
    except (InvalidVersion, ValueError, TypeError):
        return None


def is_affected(version: str | None, affected: Mapping[str, Any], ecosystem: str) -> bool | None:
    """True/False when the entry decides; None when it cannot be told (no version known, an
    ecosystem or version syntax not understood). No ranges and no versions: every version."""
    if version is None:
        return None
    listed = affected.get("versions") or []
    if version in listed or version.removeprefix("v") in listed:
        return True
    ranges = [r for r in affected.get("ranges") or [] if r.get("type") in ("SEMVER", "ECOSYSTEM")]
    if not ranges:
        return None if listed else True
    kind = _ECOSYSTEM_VERSIONS.get(ecosystem.split(":", 1)[0])
    if kind is None:
        return None
    mine = _parse(kind, version)
    if mine is None:
        return None
    for described in ranges:
        # Events in order: introduced opens an interval, fixed (exclusive) or last_affected
        # (inclusive) closes it; "0" is the start of time.
        inside = False
        for event in described.get("events") or []:
            ((what, value),) = event.items() if len(event) == 1 else (("", ""),)
            if what == "introduced":
                start = None if value == "0" else _parse(kind, value)
                inside = start is None or mine >= start
            elif what in ("fixed", "last_affected") and inside:
                end = _parse(kind, value)
                if end is None:
                    return None
                if mine < end or (what == "last_affected" and mine == end):
                    return True
                inside = False
        if inside:
            return True
    return False
