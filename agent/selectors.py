"""What a target selects: the functions of a file its symbol patterns name, and the
processes whose calls it wants (containers, pods, pids, executables).

Process filtering happens in the agent, after the kernel has sent the call: correct, but
each filtered call has still paid for a uprobe hit and a ring-buffer record. The cheaper
place is the BPF handler, with a map of wanted cgroup ids (bpf_get_current_cgroup_id)
per probe, filled by the agent as containers appear (a cgroup's id is the inode number
of its cgroup v2 directory). That is a change to the BPF program, not made yet; the
agent-side filter would stay as the authority either way.
"""

from __future__ import annotations

import fnmatch
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from runtime_signals.agent.processes import ProcessInfo
from runtime_signals.config.schema import TargetSettings
from runtime_signals.schemas.demangle import demangle_all, without_generics, without_parameters

_GLOB_CHARS = frozenset("*?[")


def is_pattern(text: str) -> bool:
    """A glob (fnmatch) rather than a literal name."""
    return any(c in _GLOB_CHARS for c in text)


@dataclass(frozen=True, slots=True)
class ProcessSelector:
    """All the kinds given must match; within a kind, any entry."""

    containers: tuple[str, ...] = ()
    kubernetes_namespaces: tuple[str, ...] = ()
    kubernetes_pods: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    executables: tuple[str, ...] = ()

    @classmethod
    def of(cls, target: TargetSettings) -> ProcessSelector | None:
        """The target's selector, or None when it selects every process."""
        if not target.has_selectors:
            return None
        return cls(tuple(target.containers), tuple(target.kubernetes_namespaces),
                   tuple(target.kubernetes_pods), tuple(target.pids), tuple(target.executables))

    def matches(self, process: ProcessInfo) -> bool:
        if self.pids and process.pid not in self.pids:
            return False
        if self.executables:
            names = [n for n in (process.executable.rsplit("/", 1)[-1], process.comm) if n]
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names for pattern in self.executables):
                return False
        if self.containers and not any(self._container_matches(entry, process) for entry in self.containers):
            return False
        if self.kubernetes_namespaces and not (process.pod_namespace and any(
                fnmatch.fnmatchcase(process.pod_namespace, p) for p in self.kubernetes_namespaces)):
            return False
        if self.kubernetes_pods and not (process.pod_name and any(
                fnmatch.fnmatchcase(process.pod_name, p) for p in self.kubernetes_pods)):
            return False
        return True

    @staticmethod
    def _container_matches(entry: str, process: ProcessInfo) -> bool:
        if entry == "host":
            return process.container_id.startswith("host:")
        if entry.startswith("/"):
            prefix = entry.rstrip("/")
            return any(path == prefix or path.startswith(prefix + "/") for path in process.cgroup_paths)
        return process.container_id.startswith(entry)


class TargetFilters:
    """Which processes each attached probe reports: probe id -> selectors (any may match;
    None in the list means every process). Written by the target manager's thread, read by
    the event pump: entries are replaced whole, never mutated in place."""

    def __init__(self) -> None:
        self._by_probe: dict[str, tuple[ProcessSelector | None, ...]] = {}
        self._lock = threading.Lock()
        self.filtered_calls: Counter[str] = Counter()

    def add(self, probe_id: str, selector: ProcessSelector | None) -> None:
        with self._lock:
            current = self._by_probe.get(probe_id, ())
            if selector not in current:
                self._by_probe[probe_id] = (*current, selector)

    def accepts(self, probe_id: str, process: ProcessInfo) -> bool:
        """True when some target of the probe wants calls from process."""
        selectors = self._by_probe.get(probe_id)
        if not selectors or any(s is None or s.matches(process) for s in selectors):
            return True
        self.filtered_calls[probe_id] += 1
        return False

    def selects(self, probe_id: str) -> bool:
        """True when the probe reports only some processes."""
        selectors = self._by_probe.get(probe_id, ())
        return bool(selectors) and None not in selectors


def function_names(path: str | Path) -> set[str]:
    """Names of the functions defined in an ELF file (.symtab and .dynsym)."""
    names: set[str] = set()
    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        for section_name in (".symtab", ".dynsym"):
            section = elf.get_section_by_name(section_name)
            if not isinstance(section, SymbolTableSection):
                continue
            for symbol in section.iter_symbols():
                if (symbol["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC")
                        and symbol["st_shndx"] != "SHN_UNDEF" and symbol.name):
                    # Versioned dynamic names ("memcpy@@GLIBC_2.14") are probed by their base name.
                    names.add(symbol.name.split("@", 1)[0])
    return names


class SymbolIndex:
    """The function names of one file and, computed on first need, their demangled forms."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self._demangled: dict[str, list[str]] | None = None

    @classmethod
    def of_file(cls, path: str | Path) -> SymbolIndex:
        try:
            return cls(function_names(path))
        except (OSError, ELFError, ValueError):
            return cls(set())

    def _by_demangled(self) -> dict[str, list[str]]:
        if self._demangled is None:
            table: dict[str, list[str]] = {}
            for mangled, text in demangle_all(self.names).items():
                # Rust advisories name 'crate::Type::method' for 'crate::Type<A>::method'.
                for key in {text, without_parameters(text), without_generics(without_parameters(text))}:
                    table.setdefault(key, []).append(mangled)
            self._demangled = table
        return self._demangled

    def resolve(self, pattern: str) -> list[str]:
        """Mangled names that pattern names: the exact symbol; else a demangled name, with
        or without its parameter list; globs match both mangled and demangled names."""
        if is_pattern(pattern):
            found = {n for n in self.names if fnmatch.fnmatchcase(n, pattern)}
            for text, mangled in self._by_demangled().items():
                if fnmatch.fnmatchcase(text, pattern):
                    found.update(mangled)
            return sorted(found)
        if pattern in self.names:
            return [pattern]
        return sorted(set(self._by_demangled().get(pattern.strip(), [])))
