"""Advisories in, a probe plan out: what `signals plan` publishes for every agent to watch.

An OSV entry names an affected package (``affected[].package``), the versions affected
(``ranges``/``versions``) and, often, the vulnerable functions (Go's
``ecosystem_specific.imports[].symbols``, RustSec's ``affects.functions``, a generic
``functions`` list). The inventory (consumer/inventory.py, from the module maps) says which
files of which package run where. A plan joins the two: for each affected package present
in an affected version, the files that hold it and the symbol names of its functions there.
What cannot be joined is kept in the plan's ``not_watched``, with the reason:

- ``no_functions_named``: the advisory names no function (package-level only);
- ``language_not_supported``: an ecosystem whose functions are not native symbols (PyPI, npm, Maven);
- ``package_not_present``: no mapped file of the package in the inventory;
- ``version_not_affected``: only versions outside the affected ranges are mapped.

Go libraries are compiled into the program that imports them, and module maps name a Go
binary by its main module only: every Go binary in the inventory is a candidate, and each
agent's symbol lookup decides (a symbol not in the binary is reported in its PlanStatus).
Crates are compiled in the same way, but Rust binaries carry no PURL in the module maps at
all: a Rust advisory is watched only through an explicit ``--binary``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_signals.consumer.inventory import InventoryEntry, package_of
from runtime_signals.consumer.models import iso
from runtime_signals.evidence.export import ExportError, go_symbol_names, purl_for
from runtime_signals.evidence.versions import is_affected

FORMAT_VERSION = 1
PLAN_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Ecosystems whose vulnerable functions are native symbols, and how they are spelt.
_LANGUAGES = {"Go": "go", "crates.io": "rust", "Debian": "c", "Ubuntu": "c", "Alpine": "c", "Linux": "c",
              "OSS-Fuzz": "c", "GIT": "c"}


class PlanError(ExportError):
    """An advisory or a plan setting is unusable (names the file, entry or flag)."""


@dataclass(frozen=True, slots=True)
class AffectedPackage:
    """One ``affected[]`` entry of one advisory: a package, its affected versions, its functions."""

    vulnerability: str
    ecosystem: str
    purl: str | None                                   # without version
    affected: Mapping[str, Any]                        # the OSV entry, for its ranges and versions
    functions: tuple[tuple[str, tuple[str, ...]], ...]  # (as the advisory names it, symbol names)

    @property
    def language(self) -> str | None:
        return _LANGUAGES.get(self.ecosystem.split(":", 1)[0])


def _functions(specific: Mapping[str, Any], language: str | None) -> list[tuple[str, tuple[str, ...]]]:
    found: list[tuple[str, tuple[str, ...]]] = []
    for imported in specific.get("imports") or []:
        found += [(f"{imported['path']}.{s}", go_symbol_names(imported["path"], s))
                  for s in imported.get("symbols") or []]
    named = list((specific.get("affects") or {}).get("functions") or [])
    named += list(specific.get("functions") or []) + list(specific.get("affected_functions") or [])
    # A Rust path is resolved by the agent's demangled-name lookup (agent/selectors.py), as written.
    found += [(str(f), (str(f),)) for f in named]
    return found


def advisories_of(document: Mapping[str, Any], where: str) -> list[AffectedPackage]:
    vulnerability = document.get("id")
    if not isinstance(vulnerability, str):
        raise PlanError(f"{where}: an OSV entry without an \"id\"")
    found = []
    try:
        for affected in document.get("affected") or []:
            package = affected.get("package") or {}
            ecosystem = str(package.get("ecosystem", ""))
            purl = package.get("purl") or purl_for(ecosystem, package.get("name", ""))
            if purl:
                purl = package_of(purl)[0]
            language = _LANGUAGES.get(ecosystem.split(":", 1)[0])
            functions = _functions(affected.get("ecosystem_specific") or {}, language)
            found.append(AffectedPackage(vulnerability, ecosystem, purl, affected, tuple(functions)))
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise PlanError(f"{where}: OSV entry {vulnerability!r} has an unexpected shape ({type(exc).__name__}: "
                        f"{exc}); see the OSV schema (affected[].package, affected[].ecosystem_specific)") from exc
    return found


def load_advisories(paths: Sequence[Path]) -> list[AffectedPackage]:
    """Every OSV entry of these files, and of the ``*.json`` files under these directories."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
        elif path.exists():
            files.append(path)
        else:
            raise PlanError(f"{path}: no such advisory file or directory")
    found: list[AffectedPackage] = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PlanError(f"{file}: not a readable OSV JSON file: {exc}") from exc
        entries = data.get("vulns", [data]) if isinstance(data, dict) else data
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise PlanError(f"{file}: not OSV: expected an object, a list of objects, or {{\"vulns\": [...]}}")
        for entry in entries:
            found += advisories_of(entry, str(file))
    return found


def _gap(package: AffectedPackage, function: str | None, reason: str, detail: str = "") -> dict[str, Any]:
    return {"vulnerability": package.vulnerability, "purl": package.purl, "function": function,
            "reason": reason, "detail": detail}


def _candidates(package: AffectedPackage, inventory: Sequence[InventoryEntry]) -> list[InventoryEntry]:
    if package.language == "go":
        # The library is inside whichever Go program imported it (module docstring).
        return [e for e in inventory if e.purl.startswith("pkg:golang/") or e.runtime_type == "GO"]
    return [e for e in inventory if package.purl is not None and e.package == package.purl]


def build_plan(plan_id: str, advisories: Iterable[AffectedPackage], inventory: Sequence[InventoryEntry],
               created_at_us: int, binaries: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The ProbePlan record (schemas/ProbePlan.avsc) for these advisories over this inventory.
    ``binaries`` adds files by PURL for packages the inventory cannot place (a Rust crate
    compiled into /app/server: ``{"pkg:cargo/smallvec": ["/app/server"]}``). Pure: the
    same input gives the same record."""
    if not PLAN_ID.fullmatch(plan_id):
        raise PlanError(f"--plan-id {plan_id!r}: use 1 to 200 of A-Z a-z 0-9 . _ -")
    advisories = list(advisories)
    targets: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    gaps: list[dict[str, Any]] = []
    for package in advisories:
        if not package.functions:
            gaps.append(_gap(package, None, "no_functions_named", "the advisory names the package only"))
            continue
        if package.language is None:
            gaps += [_gap(package, name, "language_not_supported",
                          f"{package.ecosystem or 'no ecosystem'} functions are not native symbols")
                     for name, _ in package.functions]
            continue
        places: list[tuple[str, str | None]] = []   # (binary, container or None for everywhere)
        candidates = _candidates(package, inventory)
        fixed_paths: set[str] = set()
        if package.language != "go":
            affected_here = [(e, is_affected(e.version, package.affected, package.ecosystem)) for e in candidates]
            kept = [e for e, verdict in affected_here if verdict is not False]
            if candidates and not kept:
                versions = ", ".join(sorted({e.version or "?" for e in candidates}))
                gaps += [_gap(package, name, "version_not_affected", f"mapped versions: {versions}")
                         for name, _ in package.functions]
                continue
            fixed_paths = {e.path for e, verdict in affected_here if verdict is False}
            candidates = kept
        for entry in candidates:
            # Restricted to the containers seen only where the same path holds a fixed version
            # elsewhere: otherwise a container started after the plan is watched too.
            seen_in = "host" if entry.container_id.startswith("host:") else entry.container_id
            places.append((entry.path, seen_in if entry.path in fixed_paths else None))
        given_places, given_gaps = _given_binaries(package, binaries or {})
        places += given_places
        gaps += given_gaps
        if not places and given_gaps:
            continue
        if not places:
            gaps += [_gap(package, name, "package_not_present", "no mapped file of the package in the inventory")
                     for name, _ in package.functions]
            continue
        symbols = sorted({s for _, names in package.functions for s in names})
        for binary, where in places:
            key = (binary, package.vulnerability, package.purl or "", package.language or "")
            target = targets.setdefault(key, {
                "vulnerability": package.vulnerability, "purl": package.purl, "language": package.language,
                "binary": binary, "symbols": symbols, "containers": set(), "everywhere": False})
            if where is None:
                target["everywhere"] = True
            else:
                target["containers"].add(where)
    records = []
    for key in sorted(targets):
        target = targets.pop(key)
        everywhere = target.pop("everywhere")
        target["containers"] = [] if everywhere else sorted(target["containers"])
        records.append(target)
    gaps.sort(key=lambda g: (g["vulnerability"], g["purl"] or "", g["function"] or "", g["reason"]))
    return {"format_version": FORMAT_VERSION, "plan_id": plan_id, "created_at_us": created_at_us,
            "advisories": sorted({p.vulnerability for p in advisories}), "targets": records,
            "not_watched": gaps}


def _given_binaries(package: AffectedPackage, binaries: Mapping[str, Sequence[str]]) \
        -> tuple[list[tuple[str, str | None]], list[dict[str, Any]]]:
    """The files given for this package with --binary PURL=PATH; a PURL with a version is
    taken only where that version is affected (a Rust binary's crate versions are in its
    Cargo.lock, not in any module map, so the user says them)."""
    places: list[tuple[str, str | None]] = []
    gaps: list[dict[str, Any]] = []
    for given, paths in sorted(binaries.items()):
        name, _, version = given.partition("@")
        if name != (package.purl or "").partition("@")[0]:
            continue
        if version and is_affected(version, package.affected, package.ecosystem) is False:
            gaps += [_gap(package, function, "version_not_affected", f"--binary {given}: {version} is not affected")
                     for function, _ in package.functions]
            continue
        places += [(path, None) for path in paths]
    return places, gaps


def watched_notes(statuses: Iterable[Mapping[str, Any]], functions: Sequence[str]) -> str:
    """What a plan's PlanStatus records say about these functions, for a VEX statement: which
    nodes watched them, in which files, from when to the last status; which nodes could not."""
    wanted = set(functions)
    watched: list[str] = []
    absent: list[str] = []
    plan_ids = set()
    for status in sorted(statuses, key=lambda s: (s["host"], s["plan_id"])):
        plan_ids.add(status["plan_id"])
        probes = [p for p in status["attached"] if p["symbol"] in wanted]
        if probes and status["state"] == "ACTIVE":
            files = ", ".join(sorted({p["file"] for p in probes}))
            names = ", ".join(sorted({p["symbol"] for p in probes}))
            watched.append(f"{status['host']} ({names} in {files}, from {iso(status['active_since_us'])} "
                           f"to at least {iso(status['observed_at_us'])})")
        elif status["state"] == "ACTIVE":
            absent.append(status["host"])
    if not plan_ids:
        return "No plan status: no agent reported watching these functions through a plan."
    text = f"Plan {', '.join(sorted(plan_ids))}: "
    text += f"watched on {len(watched)} node(s): {'; '.join(watched)}." if watched else "watched on no node."
    if absent:
        text += f" Not present (nothing to attach) on: {', '.join(absent)}."
    return text
