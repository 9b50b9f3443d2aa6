"""Whether a package version is inside an advisory's affected versions (OSV ``affected[]``).

OSV gives, per affected package, ``versions`` (an explicit list) and ``ranges``, each a
sorted-by-meaning list of events (``introduced``, ``fixed``, ``last_affected``, ``limit``)
of one type: ``ECOSYSTEM`` (the package ecosystem's own ordering), ``SEMVER`` (SemVer 2.0)
or ``GIT`` (commit hashes). Versions are compared by univers, per ecosystem: Debian
(epochs, ``~``), RPM, Alpine, PyPI (PEP 440), npm and Cargo (SemVer), Maven and Go.

Three answers, never a guess: ``affected``, ``not_affected`` (the version is in no range and
not listed) and ``unknown`` with the reason (no version known, an ecosystem without a
comparator, a version that does not parse, only GIT ranges, which name commits, not
versions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from univers import versions as uv

AFFECTED = "affected"
NOT_AFFECTED = "not_affected"
UNKNOWN = "unknown"

# purl type -> univers version class for ECOSYSTEM ranges.
_BY_PURL_TYPE: dict[str, type[uv.Version]] = {
    "deb": uv.DebianVersion,
    "rpm": uv.RpmVersion,
    "apk": uv.AlpineLinuxVersion,
    "pypi": uv.PypiVersion,
    "npm": uv.SemverVersion,
    "cargo": uv.SemverVersion,
    "maven": uv.MavenVersion,
    "golang": uv.GolangVersion,
    "gem": uv.RubygemsVersion,
    "nuget": uv.NugetVersion,
    "composer": uv.ComposerVersion,
}


@dataclass(frozen=True, slots=True)
class Range:
    kind: str                                   # ECOSYSTEM, SEMVER or GIT
    events: tuple[tuple[str, str], ...]         # (event name, version), as given


@dataclass(frozen=True, slots=True)
class AffectedVersions:
    """One OSV ``affected[]`` entry's versions, for the package named by ``purl_type``."""

    purl_type: str
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()

    @classmethod
    def from_osv(cls, purl_type: str, affected: Mapping[str, Any]) -> AffectedVersions:
        ranges = []
        for entry in affected.get("ranges") or ():
            events = tuple((name, str(value)) for event in entry.get("events") or ()
                           for name, value in event.items()
                           if name in ("introduced", "fixed", "last_affected", "limit"))
            ranges.append(Range(str(entry.get("type", "")).upper(), events))
        versions = tuple(str(v) for v in affected.get("versions") or ())
        return cls(purl_type, tuple(ranges), versions)

    @property
    def says_anything(self) -> bool:
        return bool(self.ranges or self.versions)


@dataclass(frozen=True, slots=True)
class VersionVerdict:
    status: str   # AFFECTED, NOT_AFFECTED or UNKNOWN
    reason: str   # why, for the documents' notes


def judge(version: str | None, affected: AffectedVersions) -> VersionVerdict:
    """Whether ``version`` of the package is affected."""
    if not version:
        return VersionVerdict(UNKNOWN, "the package version is not known")
    if version in affected.versions:
        return VersionVerdict(AFFECTED, f"version {version} is listed as affected")
    comparable = [r for r in affected.ranges if r.kind in ("ECOSYSTEM", "SEMVER")]
    if not comparable:
        if affected.ranges:
            return VersionVerdict(UNKNOWN, f"the advisory gives only {', '.join(sorted({r.kind for r in affected.ranges}))} "
                                           f"ranges, which do not order package versions")
        if affected.versions:
            return VersionVerdict(NOT_AFFECTED, f"version {version} is not among the affected versions "
                                                f"{', '.join(affected.versions)}")
        return VersionVerdict(UNKNOWN, "the advisory names no affected versions")
    for entry in comparable:
        cls = uv.SemverVersion if entry.kind == "SEMVER" else _BY_PURL_TYPE.get(affected.purl_type)
        if cls is None:
            return VersionVerdict(UNKNOWN, f"no version ordering known for pkg:{affected.purl_type}")
        try:
            inside = _in_range(_parse(cls, version, entry.kind), entry.events, cls, entry.kind)
        except (ValueError, TypeError, uv.InvalidVersion) as exc:  # univers raises several kinds
            return VersionVerdict(UNKNOWN, f"version {version!r} or a range bound does not parse as a "
                                           f"{entry.kind} version of pkg:{affected.purl_type}: {exc}")
        if inside:
            return VersionVerdict(AFFECTED, f"version {version} is inside the affected range {_describe(entry)}")
    ranges = "; ".join(_describe(r) for r in comparable)
    return VersionVerdict(NOT_AFFECTED, f"version {version} is outside the affected ranges ({ranges})")


def _parse(cls: type[uv.Version], text: str, kind: str) -> uv.Version:
    # OSV SEMVER and Go versions are written without the "v" that Go purls carry.
    if kind == "SEMVER" or cls is uv.GolangVersion:
        text = text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else text
        if cls is uv.GolangVersion:
            text = "v" + text
    return cls(text)


def _in_range(version: uv.Version, events: Sequence[tuple[str, str]], cls: type[uv.Version], kind: str) -> bool:
    """OSV's evaluation: walk the events in version order; ``introduced`` opens (``0``: from
    the start), ``fixed`` and ``limit`` close at their version, ``last_affected`` after it."""
    keyed = []
    for name, value in events:
        bound = None if value == "0" else _parse(cls, value, kind)
        keyed.append((bound, name))
    # "0" sorts first; at equal versions an introduced comes before the event closing it.
    keyed.sort(key=lambda item: (item[0] is not None, item[0] if item[0] is not None else 0))
    inside = False
    for bound, name in keyed:
        if name == "introduced" and (bound is None or version >= bound):
            inside = True
        elif (name in ("fixed", "limit") and bound is not None and version >= bound) or (name == "last_affected" and bound is not None and version > bound):
            inside = False
    return inside


def _describe(entry: Range) -> str:
    return f"{entry.kind} " + ", ".join(f"{name} {value}" for name, value in entry.events)


# OSV ecosystem names -> purl types, for advisories read without a purl (probe plans).
_PURL_TYPE_OF_ECOSYSTEM = {"Go": "golang", "crates.io": "cargo", "Debian": "deb", "Ubuntu": "deb", "PyPI": "pypi",
                           "npm": "npm", "Maven": "maven", "Alpine": "apk", "RubyGems": "gem", "NuGet": "nuget",
                           "Packagist": "composer", "Red Hat": "rpm", "AlmaLinux": "rpm", "Rocky Linux": "rpm"}


def is_affected(version: str | None, affected: Mapping[str, Any], ecosystem: str) -> bool | None:
    """For probe plans (evidence/plan.py): True or False when the OSV entry decides for
    this version; None when it cannot be told (no version known, no ordering for the
    ecosystem, a version that does not parse). An entry that names no versions at all
    answers True: a plan watches what it cannot rule out (a verdict would say unknown)."""
    entry = AffectedVersions.from_osv(_PURL_TYPE_OF_ECOSYSTEM.get(ecosystem.split(":", 1)[0], ""), affected)
    if not entry.says_anything:
        return True
    status = judge(version, entry).status
    return True if status == AFFECTED else False if status == NOT_AFFECTED else None
