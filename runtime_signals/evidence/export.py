"""Vulnerable functions in, findings out: what `signals export` turns into OpenVEX or CycloneDX.

Inputs (load_vulnerable_functions):
- OSV JSON (one vulnerability, a list, or an osv.dev response ``{"vulns": [...]}``): each
  ``affected[]`` entry's package gives the PURL (``package.purl``, else built from the
  ecosystem and name) and its ``ecosystem_specific`` gives the functions: Go's
  ``{"imports": [{"path": P, "symbols": ["F", "T.M"]}]}``, RustSec's
  ``{"affects": {"functions": ["crate::m::f"]}}``, or a generic ``"functions"`` /
  ``"affected_functions"`` list of names.
- A text file, one function a line: ``PURL FUNCTION [VULNERABILITY-ID]`` (``#`` starts a
  comment; without an id the line takes the --vulnerability default).

A finding is one vulnerable package of one vulnerability, asked about in one product (a
container, or every container when a product is named), with the reachability answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_signals.consumer import query
from runtime_signals.consumer.models import Coverage, Reachability, Summary, Target

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
    purl: str | None
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    vulnerability: str
    aliases: tuple[str, ...]
    purl: str | None
    functions: tuple[str, ...]        # canonical names of the vulnerable functions asked about
    container: str | None             # the container asked about; None with a product or no data
    product: str | None               # the --product given (a PURL or IRI), over every container
    answer: Reachability

    @property
    def scope(self) -> str:
        return self.product or self.container or "any container"


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


def from_osv(document: dict[str, Any], where: str) -> list[VulnerableFunction]:
    vulnerability = document.get("id")
    if not isinstance(vulnerability, str):
        raise ExportError(f"{where}: an OSV entry without an \"id\"")
    aliases = tuple(a for a in document.get("aliases", []) if isinstance(a, str))
    found: list[VulnerableFunction] = []
    for affected in document.get("affected", []):
        package = affected.get("package") or {}
        purl = package.get("purl") or purl_for(package.get("ecosystem", ""), package.get("name", ""))
        specific = affected.get("ecosystem_specific") or {}
        names: list[tuple[str, ...]] = []
        for imported in specific.get("imports", []):
            names += [go_symbol_names(imported["path"], s) for s in imported.get("symbols", [])]
        names += [(f,) for f in (specific.get("affects") or {}).get("functions", [])]
        names += [(f,) for f in specific.get("functions", []) + specific.get("affected_functions", [])]
        if not names:
            log.warning("%s: %s affects %s without naming functions; not exported", where, vulnerability, purl)
        found += [VulnerableFunction(vulnerability, aliases, purl, n) for n in names]
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
        query.parse_purl(fields[0])
        found.append(VulnerableFunction(vulnerability, (), fields[0], (fields[1],)))
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
            answers = [ask(f, scoped) for f in members]
            merged = merge(answers, Target(function=members[0].names[0], purl=purl))
            result.append(Finding(vulnerability, members[0].aliases, purl,
                                  tuple(dict.fromkeys(f.names[0] for f in members)), scope, product, merged))
    return result
