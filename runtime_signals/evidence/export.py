"""Vulnerable functions in, findings out: what `signals export` turns into OpenVEX or CycloneDX.

Inputs (load_vulnerable_functions):
- OSV JSON (one vulnerability, a list, or an osv.dev response ``{"vulns": [...]}``): each
  ``affected[]`` entry's package gives the PURL (``package.purl``, else built from the
  ecosystem and name) and its ``ecosystem_specific`` gives the functions: Go's
  ``{"imports": [{"path": P, "symbols": ["F", "T.M"]}]}``, RustSec's
  ``{"affects": {"functions": ["crate::m::f"]}}``, or a generic ``"functions"`` /
  ``"affected_functions"`` list of names.
  Each entry's ``ranges`` (ECOSYSTEM, SEMVER; GIT ranges name commits and leave a version
  undecided) and ``versions`` say which versions are affected (evidence/versions.py).
- A text file, one function a line: ``PURL FUNCTION [VULNERABILITY-ID]`` (``#`` starts a
  comment; without an id the line takes the --vulnerability default). A PURL with a
  version says that version is affected; one without says every version is.

A finding is one vulnerable package of one vulnerability, asked about in one product (a
container, or every container when a product is named), with the reachability answer and
a verdict per observed path (PathVerdict): only a path whose frame is confirmed to be in
the package, at a version the advisory calls affected, makes the finding ``affected``. A
function matched by name in an unpackaged binary, a package of unknown version, or a
version outside the affected ranges never does (the notes say which it was).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from runtime_signals.consumer import query
from runtime_signals.consumer.models import Coverage, PathEvidence, Reachability, Summary, Target
from runtime_signals.evidence import versions

log = logging.getLogger(__name__)

# OSV ecosystem -> PURL type (and namespace rule), for entries without package.purl.
_PURL_TYPES = {"Go": "golang", "crates.io": "cargo", "PyPI": "pypi", "npm": "npm", "RubyGems": "gem",
               "Packagist": "composer", "NuGet": "nuget", "Pub": "pub", "Hex": "hex", "Maven": "maven",
               "Debian": "deb", "Alpine": "apk", "Ubuntu": "deb"}


class ExportError(Exception):
    """An input file or an export setting is unusable (names the file and the line or field)."""


@dataclass(frozen=True, slots=True)
class VulnerableFunction:
    """One vulnerable function: ``names`` are the spellings it may have in a binary's
    symbols (a Go method has two), the first being the canonical one."""

    vulnerability: str
    aliases: tuple[str, ...]
    purl: str | None                  # the package, without a version
    names: tuple[str, ...]
    # Which versions are affected; None: every version (a text list without a version).
    affected: versions.AffectedVersions | None = None


# Per-path verdicts, strongest claim first.
AFFECTED = "affected"                 # confirmed package, version inside the affected versions
VERSION_UNKNOWN = "version_unknown"   # confirmed package; its version, or the ranges, undecidable
NOT_AFFECTED = "not_affected_version"  # confirmed package, version outside the affected versions
UNCONFIRMED = "unconfirmed"           # matched by name only: no verdict on the package at all


@dataclass(frozen=True, slots=True)
class PathVerdict:
    evidence: PathEvidence
    status: str
    version: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Finding:
    vulnerability: str
    aliases: tuple[str, ...]
    purl: str | None
    functions: tuple[str, ...]        # canonical names of the vulnerable functions asked about
    container: str | None             # the container asked about; None with a product or no data
    product: str | None               # the --product given (a PURL or IRI), over every container
    answer: Reachability
    verdicts: tuple[PathVerdict, ...] = ()  # one per path of answer.paths, same order

    @property
    def scope(self) -> str:
        return self.product or self.container or "any container"

    @property
    def affected(self) -> bool:
        """Whether any path proves the vulnerable code of an affected version ran."""
        return any(v.status == AFFECTED for v in self.verdicts)

    def verdicts_with(self, status: str) -> list[PathVerdict]:
        return [v for v in self.verdicts if v.status == status]


def judge_path(evidence: PathEvidence, function: VulnerableFunction | None) -> PathVerdict:
    """The verdict one observed path supports about the vulnerable package."""
    if not evidence.purl_verified:
        where = evidence.module or "a module of unknown package"
        return PathVerdict(evidence, UNCONFIRMED, None,
                           f"package not confirmed: matched by name in {where}; no verdict on the package")
    version = _version_of(evidence.package_purl)
    if function is None or function.purl is None:
        return PathVerdict(evidence, VERSION_UNKNOWN, version, "the advisory names no package")
    if function.affected is None:
        return PathVerdict(evidence, AFFECTED, version,
                           f"the input lists every version of {function.purl} as affected")
    verdict = versions.judge(version, function.affected)
    status = {versions.AFFECTED: AFFECTED, versions.NOT_AFFECTED: NOT_AFFECTED}.get(verdict.status, VERSION_UNKNOWN)
    return PathVerdict(evidence, status, version, verdict.reason)


def _version_of(purl: str | None) -> str | None:
    if purl is None:
        return None
    try:
        return PackageURL.from_string(purl).version
    except ValueError:
        return None


def go_symbol_names(import_path: str, symbol: str) -> tuple[str, ...]:
    """Go's linker names: ``path.F`` for a function; ``path.(*T).M`` and ``path.T.M`` for a method."""
    if "." in symbol:
        receiver, method = symbol.split(".", 1)
        return (f"{import_path}.(*{receiver}).{method}", f"{import_path}.{receiver}.{method}")
    return (f"{import_path}.{symbol}",)


def purl_for(ecosystem: str, name: str) -> str | None:
    base = ecosystem.split(":", 1)[0]
    kind = _PURL_TYPES.get(base)
    if kind is None or not name:
        return None
    if kind == "maven" and ":" in name:
        group, artifact = name.split(":", 1)
        return f"pkg:maven/{group}/{artifact}"
    if kind == "deb":
        return f"pkg:deb/{base.lower()}/{name}"
    return f"pkg:{kind}/{name}"


def _without_version(purl: str) -> tuple[str, str | None]:
    """The package purl without its version, and the version."""
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError:
        return purl, None
    if not parsed.version:
        return purl, None
    unversioned = PackageURL(parsed.type, parsed.namespace, parsed.name, None, parsed.qualifiers, parsed.subpath)
    return str(unversioned.to_string()), parsed.version


def from_osv(document: dict[str, Any], where: str) -> list[VulnerableFunction]:
    vulnerability = document.get("id")
    if not isinstance(vulnerability, str):
        raise ExportError(f"{where}: an OSV entry without an \"id\"")
    aliases = tuple(a for a in document.get("aliases", []) if isinstance(a, str))
    found: list[VulnerableFunction] = []
    for affected in document.get("affected", []):
        package = affected.get("package") or {}
        purl = package.get("purl") or purl_for(package.get("ecosystem", ""), package.get("name", ""))
        ranges: versions.AffectedVersions | None = None
        if purl is not None:
            purl, _ = _without_version(purl)  # the affected versions are the ranges' business
            ranges = versions.AffectedVersions.from_osv(PackageURL.from_string(purl).type, affected)
            if not ranges.says_anything:
                ranges = versions.AffectedVersions(ranges.purl_type)  # "names no versions": undecided
        specific = affected.get("ecosystem_specific") or {}
        names: list[tuple[str, ...]] = []
        for imported in specific.get("imports", []):
            names += [go_symbol_names(imported["path"], s) for s in imported.get("symbols", [])]
        names += [(f,) for f in (specific.get("affects") or {}).get("functions", [])]
        names += [(f,) for f in specific.get("functions", []) + specific.get("affected_functions", [])]
        if not names:
            log.warning("%s: %s affects %s without naming functions; not exported", where, vulnerability, purl)
        found += [VulnerableFunction(vulnerability, aliases, purl, n, ranges) for n in names]
    return found


def load_vulnerable_functions(path: Path, default_vulnerability: str | None = None) -> list[VulnerableFunction]:
    """Read an OSV JSON file or a ``PURL FUNCTION [ID]`` text file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"{path}: cannot read the vulnerable functions: {exc}") from exc
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ExportError(f"{path}: not valid JSON: {exc}") from exc
        entries = data.get("vulns", [data]) if isinstance(data, dict) else data
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ExportError(f"{path}: not OSV: expected an object, a list of objects, or {{\"vulns\": [...]}}")
        found_osv: list[VulnerableFunction] = []
        for entry in entries:
            try:
                found_osv += from_osv(entry, str(path))
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                # A field of the wrong JSON type somewhere inside (a string for a list, a
                # list for an object): say which entry, not where in this code it broke.
                raise ExportError(f"{path}: OSV entry {entry.get('id')!r} has an unexpected shape "
                                  f"({type(exc).__name__}: {exc}); see the OSV schema "
                                  f"(affected[].package, affected[].ecosystem_specific)") from exc
        return found_osv
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise ExportError(f"{path}:{number}: expected `PURL FUNCTION [VULNERABILITY-ID]`, got {line.strip()!r}")
        vulnerability = fields[2] if len(fields) == 3 else default_vulnerability
        if not vulnerability:
            raise ExportError(f"{path}:{number}: no vulnerability id: add a third column or pass --vulnerability")
        parsed = query.parse_purl(fields[0])
        purl, version = _without_version(fields[0])
        affected = versions.AffectedVersions(parsed.type, versions=(version,)) if version else None
        found.append(VulnerableFunction(vulnerability, (), purl, (fields[1],), affected))
    return found


def ask(function: VulnerableFunction, summaries: Sequence[Summary]) -> Reachability:
    """One answer over every spelling of the function (a Go method has two)."""
    answers = [query.reachability(Target(function=name, purl=function.purl), summaries)
               for name in function.names]
    return merge(answers, Target(function=function.names[0], purl=function.purl))


def merge(answers: Sequence[Reachability], target: Target) -> Reachability:
    """The answers of several spellings of one target, over the same summaries."""
    paths = sorted({p for a in answers for p in a.paths}, key=lambda e: (-e.observation_count, e.symbols))
    coverage = answers[0].coverage if answers else Coverage()
    return Reachability(
        target=target, reached=bool(paths), observation_count=sum(p.observation_count for p in paths),
        first_observed_at_us=min((p.first_observed_at_us for p in paths), default=None),
        last_observed_at_us=max((p.last_observed_at_us for p in paths), default=None),
        paths=tuple(paths), coverage=coverage)


def findings(functions: Iterable[VulnerableFunction], summaries: Sequence[Summary],
             product: str | None = None) -> list[Finding]:
    """One finding per (vulnerability, package, container); with ``product``, one per
    (vulnerability, package) over every container, under that product's name."""
    groups: dict[tuple[str, str | None], list[VulnerableFunction]] = {}
    for function in functions:
        groups.setdefault((function.vulnerability, function.purl), []).append(function)
    if product is not None:
        scopes: list[tuple[str | None, Sequence[Summary]]] = [(None, summaries)]
    else:
        containers = sorted({s.container_id for s in summaries})
        scopes = [(c, [s for s in summaries if s.container_id == c]) for c in containers] or [(None, [])]
    result = []
    for (vulnerability, purl), members in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        for scope, scoped in scopes:
            asked = [(f, ask(f, scoped)) for f in members]
            merged = merge([answer for _, answer in asked], Target(function=members[0].names[0], purl=purl))
            # Each path is judged with the ranges of the function (advisory entry) it matched.
            by_path = {p: f for f, answer in asked for p in answer.paths}
            verdicts = tuple(judge_path(p, by_path.get(p)) for p in merged.paths)
            result.append(Finding(vulnerability, members[0].aliases, purl,
                                  tuple(dict.fromkeys(f.names[0] for f in members)), scope, product, merged,
                                  verdicts))
    return result
