"""Find the files each target names, on the host and inside every process's root, resolve
its symbol patterns, and attach one uprobe per (file, function): at start, then again on
every rescan, so libraries loaded later and containers started later are probed too.

A uprobe is set on a file (an inode) and fires in every process that maps it, so a file
is attached once however many processes use it; a container's copy is reached through
/proc/<pid>/root/<path>, which is the same inode the container sees. A rescan reads each
process's /proc/<pid>/maps (a substring test first, so most are never parsed) and costs
attach work only for files not seen before.

Problems are reported by setting name (``agent.targets[2].symbols[0]``) in the log and in
``missing``/``counters()``, for the statistics; the other targets keep working.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from cachetools import LRUCache

from runtime_signals.agent.config import TargetSettings
from runtime_signals.agent.errors import ProbeError
from runtime_signals.agent.identity import ContainerResolver, PodDirectory
from runtime_signals.agent.probes import AttachedProbe, ProbeSpec
from runtime_signals.agent.processes import ProcessInfo, process_names
from runtime_signals.agent.procmaps import parse_maps
from runtime_signals.agent.purl import PurlResolver
from runtime_signals.agent.selectors import ProcessSelector, SymbolIndex, TargetFilters

log = logging.getLogger(__name__)

Attach = Callable[[ProbeSpec], AttachedProbe]
# Symbol indexes kept (one per file version): a file's index is needed while its targets
# are resolved, then only if another target names it; a large library's index is megabytes.
MAX_SYMBOL_INDEXES = 16


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A target's file, and where it was found."""

    host_path: Path      # where the agent opens it: <host root>/<path> or /proc/<pid>/root/<path>
    root: Path           # the root it was found under
    path_in_root: str    # the path as processes under that root see it
    identity: tuple[int, int]  # (device, inode): what a uprobe is attached to


def library_matches(name: str, basename: str) -> bool:
    """Whether a file name is the library a target names: 'c' and 'libc' name libc.so.6,
    'libssl.so' names libssl.so.3, 'libssl.so.3' only itself."""
    if ".so" in name:
        return basename == name or basename.startswith(name + ".")
    stem = name if name.startswith("lib") else f"lib{name}"
    return basename.startswith(stem + ".so")


# How `ldconfig -p` tags libraries of the agent's own architecture.
_LDCONFIG_ARCH = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(os.uname().machine, "")


@functools.cache
def _ldconfig_listing(cache: Path, identity: tuple[int, int, int]) -> str:
    try:
        return subprocess.run(["ldconfig", "-p", "-C", str(cache)], capture_output=True, text=True,
                              timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def host_library_paths(host_root: Path, name: str) -> list[str]:
    """Paths of the library in the node's linker cache (ldconfig -p over <root>/etc/ld.so.cache)."""
    cache = host_root / "etc/ld.so.cache"
    try:
        st = os.stat(cache)
    except OSError:
        return []
    listing = _ldconfig_listing(cache, (st.st_dev, st.st_ino, st.st_mtime_ns))
    found = []
    for line in listing.splitlines():
        soname, arrow, path = line.strip().partition(" => ")
        if arrow and _LDCONFIG_ARCH in soname and library_matches(name, soname.split(" ", 1)[0]):
            found.append(path.strip())
    return sorted(set(found))


class TargetManager:
    """Attaches targets as their files appear; reports what it could not find, by name."""

    def __init__(self, targets: list[TargetSettings], names: list[str], attach: Attach | None,
                 on_attached: Callable[[AttachedProbe], None] | None = None,
                 filters: TargetFilters | None = None, *, proc_root: Path = Path("/proc"),
                 host_root: Path = Path("/"), max_symbols_per_pattern: int = 100,
                 purls: PurlResolver | None = None, pods: PodDirectory | None = None,
                 attach_lock: threading.Lock | None = None) -> None:
        self.targets = targets
        self.names = names  # how each target is named in messages: its setting path or flag
        self._attach = attach  # None: only resolve (signals agent --check)
        self._on_attached = on_attached
        # Held from attaching a probe until on_attached returns (Collector.attach_lock).
        self._attach_lock = attach_lock or threading.Lock()
        self.filters = filters or TargetFilters()
        self._proc_root = proc_root
        self._host_root = host_root
        self._max_symbols = max_symbols_per_pattern
        self._purls = purls
        self._selectors = [ProcessSelector.of(t) for t in targets]
        self._containers = ContainerResolver(proc_root)
        self._pods = pods or PodDirectory()
        self._symbols: LRUCache[tuple[int, int], SymbolIndex] = LRUCache(MAX_SYMBOL_INDEXES)
        self._probe_ids: dict[tuple[tuple[int, int], str], str] = {}  # (file, symbol) -> probe id
        self._done: set[tuple[tuple[int, int], int]] = set()          # (file, target) handled
        self._files: list[dict[tuple[int, int], str]] = [{} for _ in targets]
        self._resolved: set[tuple[int, int]] = set()                  # (target, pattern) found
        self._broad: dict[tuple[int, int], str] = {}
        self.missing: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self._own_pid = os.getpid()

    # --- one pass -------------------------------------------------------------------
    def scan(self) -> int:
        """Look for target files everywhere and attach what is new; returns probes added."""
        before = self.counts["probes_attached"]
        self.counts["rescans"] += 1
        for index, target in enumerate(self.targets):
            if self._wants_host(index):
                for found in self._host_files(target):
                    self._consider(index, found)
        for pid, text in self._process_maps():
            for index, target in enumerate(self.targets):
                paths = self._mapped_paths(target, text)
                if not paths:
                    continue
                selector = self._selectors[index]
                if selector is not None and not selector.matches(self.describe(pid)):
                    continue
                root = self._proc_root / str(pid) / "root"
                for path in paths:
                    in_process = self._found(root, path)
                    if in_process is not None:
                        self._consider(index, in_process)
        self._report()
        return self.counts["probes_attached"] - before

    def _wants_host(self, index: int) -> bool:
        target = self.targets[index]
        if target.containers:
            return "host" in target.containers
        return not (target.kubernetes_namespaces or target.kubernetes_pods)

    def _host_files(self, target: TargetSettings) -> list[FoundFile]:
        if "/" in target.binary:
            paths = [target.binary]
        else:
            paths = host_library_paths(self._host_root, target.binary)
        return [f for f in (self._found(self._host_root, p) for p in paths) if f is not None]

    def _found(self, root: Path, path: str) -> FoundFile | None:
        host_path = root / path.lstrip("/")
        try:
            st = os.stat(host_path)
        except OSError:
            return None
        return FoundFile(host_path, root, path, (st.st_dev, st.st_ino))

    def _process_maps(self) -> list[tuple[int, str]]:
        needles = {t.binary if "/" in t.binary else (t.binary if t.binary.startswith("lib") else f"lib{t.binary}")
                   for t in self.targets}
        found: list[tuple[int, str]] = []
        try:
            entries = [e.name for e in os.scandir(self._proc_root) if e.name.isdigit()]
        except OSError:
            return found
        for name in entries:
            if int(name) == self._own_pid:
                continue
            try:
                text = (self._proc_root / name / "maps").read_text()
            except OSError:
                continue  # gone, or a kernel thread
            if any(needle in text for needle in needles):
                found.append((int(name), text))
        return found

    @staticmethod
    def _mapped_paths(target: TargetSettings, maps_text: str) -> list[str]:
        paths = {m.path for m in parse_maps(maps_text)}
        if "/" in target.binary:
            return [target.binary] if target.binary in paths else []
        return sorted(p for p in paths if library_matches(target.binary, p.rsplit("/", 1)[-1]))

    def describe(self, pid: int) -> ProcessInfo:
        """What the selectors look at, read for a process seen in a scan."""
        proc = self._proc_root / str(pid)
        identity = self._containers.identity(pid)
        pod = self._pods.lookup(identity.pod_uid) if identity.pod_uid else None
        executable, comm = process_names(proc)
        return ProcessInfo(pid, identity.container_id, "UNKNOWN", proc / "root", executable, comm,
                           identity.cgroup_paths, identity.pod_uid, pod.namespace if pod else None,
                           pod.name if pod else None)

    # --- one file of one target ------------------------------------------------------
    def _consider(self, index: int, found: FoundFile) -> None:
        if (found.identity, index) in self._done:
            return
        self._done.add((found.identity, index))
        self._files[index][found.identity] = str(found.host_path)
        symbols = self._symbols.get(found.identity)
        if symbols is None:
            symbols = self._symbols[found.identity] = SymbolIndex.of_file(found.host_path)
        target = self.targets[index]
        for pattern_index, pattern in enumerate(target.symbols):
            mangled = symbols.resolve(pattern)
            if len(mangled) > self._max_symbols:
                self._broad[(index, pattern_index)] = (
                    f"{pattern!r} matches {len(mangled)} functions in {found.host_path}, more than "
                    f"agent.max_symbols_per_pattern={self._max_symbols}: narrow the pattern")
                continue
            if mangled:
                self._resolved.add((index, pattern_index))
            for name in mangled:
                self._attach_one(index, found, name)
        if self._purls is not None:
            # Resolved here, off the event pump, so the first call's lookup is a cache hit.
            self._purls.purl(found.root, found.path_in_root)

    def _attach_one(self, index: int, found: FoundFile, symbol: str) -> None:
        key = (found.identity, symbol)
        selector = self._selectors[index]
        existing = self._probe_ids.get(key)
        if existing is not None:
            # Same function of the same file through another target: one uprobe, both filters.
            self.filters.add(existing, selector)
            return
        spec = ProbeSpec(self.targets[index].binary, symbol)
        if self._attach is None:
            self._probe_ids[key] = spec.probe_id
            self.counts["probes_attached"] += 1
            return
        # The selector is known before the probe fires: its first calls are filtered too.
        self.filters.add(spec.probe_id, selector)
        with self._attach_lock:
            try:
                attached = self._attach(ProbeSpec(str(found.host_path), symbol))
            except ProbeError as exc:
                self.counts["attach_failures"] += 1
                self._set_missing(f"{self.names[index]}.symbols ({symbol})",
                                  f"attaching in {found.host_path}: {exc}")
                return
            # The tracer's own probe (its index is the BPF cookie every call carries), named as
            # the target names it ("c:malloc", not the /proc/<pid>/root/... path it was found at).
            probe = replace(attached, spec=spec)
            if self._on_attached is not None:
                self._on_attached(probe)
        self._probe_ids[key] = spec.probe_id
        self.counts["probes_attached"] += 1
        log.info("attached %s in %s (+0x%x)", spec.probe_id, found.host_path, attached.file_offset)

    # --- reporting -----------------------------------------------------------------
    def _report(self) -> None:
        for index, target in enumerate(self.targets):
            name = self.names[index]
            files = self._files[index]
            if not files:
                where = "on the host nor " if self._wants_host(index) else ""
                self._set_missing(f"{name}.binary", f"{target.binary} not found {where}in any selected running "
                                  "process; it is attached when a process maps it")
                continue
            self._clear_missing(f"{name}.binary")
            for pattern_index, pattern in enumerate(target.symbols):
                key = f"{name}.symbols[{pattern_index}]"
                if (index, pattern_index) in self._resolved:
                    self._clear_missing(key)
                elif (index, pattern_index) in self._broad:
                    self._set_missing(key, self._broad[(index, pattern_index)])
                else:
                    self._set_missing(key, f"symbol {pattern!r} not found in {', '.join(sorted(files.values()))}")

    def _set_missing(self, key: str, reason: str) -> None:
        if self.missing.get(key) != reason:
            log.error("%s: %s", key, reason)
        self.missing[key] = reason

    def _clear_missing(self, key: str) -> None:
        if self.missing.pop(key, None) is not None:
            log.info("%s: found now", key)

    def sizes(self) -> dict[str, int]:
        """Entries held, for /metrics."""
        return {"symbol_indexes": len(self._symbols), "target_files": len(self._done)}

    def counters(self) -> dict[str, int]:
        """For the statistics: targets whose binary or symbols are missing, probes in place."""
        return {
            "probes_attached": self.counts["probes_attached"],
            "attach_failures": self.counts["attach_failures"],
            "missing_binaries": sum(1 for k in self.missing if k.endswith(".binary")),
            "missing_symbols": sum(1 for k in self.missing if ".symbols" in k),
            "rescans": self.counts["rescans"],
        }

    # --- background rescans --------------------------------------------------------
    def start(self, stop: threading.Event, interval_ms: int) -> threading.Thread:
        """Rescan every interval_ms until stop is set, on a daemon thread."""

        def loop() -> None:
            while not stop.wait(interval_ms / 1000):
                try:
                    self.scan()
                except Exception:  # a surprise in /proc must not end rescans for good
                    log.exception("target rescan failed")

        thread = threading.Thread(target=loop, name="target-rescan", daemon=True)
        thread.start()
        return thread
