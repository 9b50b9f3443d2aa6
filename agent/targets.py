"""Find the files each target names, on the host and inside every process's root, resolve
its symbol patterns, and attach one uprobe per (file, function): at start, then again on
every rescan, so libraries loaded later and containers started later are probed too.

A uprobe is set on a file (an inode) and fires in every process that maps it, so a file
is attached once however many processes use it; a container's copy is reached through
/proc/<pid>/root/<path>. Files are keyed by the inode the kernel attaches to, under any
overlayfs (agent/fileid.py): containers started from one image share one uprobe. A rescan reads each
process's /proc/<pid>/maps (a substring test first, so most are never parsed) and costs
attach work only for files not seen before.

Problems are reported by setting name (``agent.targets[2].symbols[0]``) in the log and in
``missing``/``counters()``, for the statistics; the other targets keep working.

Targets may be added and removed while the agent runs (``add_targets``/``remove_targets``,
for probe plans: agent/plans.py). A target keeps its index for life, so a removed one
leaves a hole; its probes are detached for good once no other target uses them.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cachetools import LRUCache

from runtime_signals.agent.errors import ProbeError
from runtime_signals.agent.fileid import BackingFiles, FileKey
from runtime_signals.agent.identity import ContainerResolver, PodDirectory
from runtime_signals.agent.inlined import InlineReport, inlined_copies
from runtime_signals.agent.probes import AttachedProbe, ProbeSpec
from runtime_signals.agent.processes import ProcessInfo, process_names
from runtime_signals.agent.procmaps import parse_maps
from runtime_signals.agent.purl import PurlResolver
from runtime_signals.agent.selectors import ProcessSelector, SymbolIndex, TargetFilters, is_pattern
from runtime_signals.config.schema import TargetSettings

log = logging.getLogger(__name__)

Attach = Callable[[ProbeSpec], AttachedProbe]
Detach = Callable[[list[AttachedProbe]], None]
ProbeKey = tuple[FileKey, str]  # (file, symbol or symbol@offset): one uprobe
# Symbol indexes kept (one per file version): a file's index is needed while its targets
# are resolved, then only if another target names it; a large library's index is megabytes.
MAX_SYMBOL_INDEXES = 16
# Inlined-copy searches remembered, by (file, functions of one target): one per target file.
MAX_INLINE_REPORTS = 1024


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A target's file, and where it was found."""

    host_path: Path      # where the agent opens it: <host root>/<path> or /proc/<pid>/root/<path>
    root: Path           # the root it was found under
    path_in_root: str    # the path as processes under that root see it
    identity: FileKey      # (device, inode) of the file underneath overlays: what a uprobe is attached to


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
                 attach_lock: threading.Lock | None = None, host: str | None = None,
                 detach: Detach | None = None, prepare: Callable[[list[int]], None] | None = None) -> None:
        self.targets = list(targets)
        # Told the live targets whenever targets are added or removed at run time (the loader
        # holds watch their names: LoadWatch.watch).
        self.on_targets_changed: Callable[[list[TargetSettings]], None] | None = None
        # Given the running processes the first scan finds mapping a target, before any probe
        # is attached (Collector.prepare: their unwind tables, so first calls are walked whole).
        self._prepare = prepare
        self.names = list(names)  # how each target is named in messages: its setting path or flag
        self._attach = attach  # None: only resolve (signals agent --check)
        self._detach = detach  # how a removed target's probes are let go, together (CallTracer.retire_many)
        self._on_attached = on_attached
        # Held from attaching a probe until on_attached returns (Collector.attach_lock).
        self._attach_lock = attach_lock or threading.Lock()
        self.filters = filters or TargetFilters()
        self._proc_root = proc_root
        self._host_root = host_root
        self._max_symbols = max_symbols_per_pattern
        self._purls = purls
        self._selectors = [ProcessSelector.of(t) for t in targets]
        self._containers = ContainerResolver(proc_root, host=host)
        self._pods = pods or PodDirectory()
        self.backing = BackingFiles(host_root)
        self._symbols: LRUCache[tuple[int, int], SymbolIndex] = LRUCache(MAX_SYMBOL_INDEXES)
        self._probe_ids: dict[tuple[tuple[int, int], str], str] = {}  # (file, symbol) -> probe id
        self._done: set[tuple[tuple[int, int], int]] = set()          # (file, target) handled
        self._files: list[dict[tuple[int, int], str]] = [{} for _ in targets]
        self._removed: set[int] = set()                               # indices of removed targets
        self._target_probes: dict[int, set[ProbeKey]] = {}            # target -> its uprobes
        self._attached: dict[ProbeKey, AttachedProbe] = {}
        self._resolved: set[tuple[int, int]] = set()                  # (target, pattern) found
        self._found_symbols: dict[tuple[int, tuple[int, int]], set[str]] = {}  # (target, file) -> symbols
        self._broad: dict[tuple[int, int], str] = {}
        # (target, pattern) not found where no DWARF could show inlined copies: why not.
        self._no_dwarf: dict[tuple[int, int], str] = {}
        self._inline_reports: LRUCache[tuple[FileKey, frozenset[str]], InlineReport] = \
            LRUCache(MAX_INLINE_REPORTS)
        self.missing: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self._own_pid = os.getpid()
        self._forget_pending: list[str] = []  # files changed in place (forget_file)
        self._late = False  # set while a rescan (not a hold) is attaching
        # The rescan thread and the loader-hold thread (scan_pid) both attach.
        self._scan_lock = threading.RLock()

    # --- one pass -------------------------------------------------------------------
    def scan(self) -> int:
        """Look for target files everywhere and attach what is new; returns probes added."""
        with self._scan_lock:
            return self._scan()

    def _scan(self) -> int:
        before = self.counts["probes_attached"]
        self.counts["rescans"] += 1
        while self._forget_pending:
            self._forget(self._forget_pending.pop())
        processes = self._process_maps()
        if self._prepare is not None and self.counts["rescans"] == 1:
            self._prepare([pid for pid, text in processes if self._selected_targets(pid, text)])
        for index, target in self._live():
            if self._wants_host(index):
                for found in self._host_files(target):
                    self._consider(index, found)
        # A file first found by a rescan was mapped before it was attached: calls made in
        # between were not observed (the loader hook, agent/loadwatch.py, attaches without
        # that gap; a rescan finding something new means it did not).
        self._late = self.counts["rescans"] > 1
        try:
            for pid, text in processes:
                self._scan_process(pid, text)
        finally:
            self._late = False
        self._report()
        return self.counts["probes_attached"] - before

    def scan_pid(self, pid: int) -> int:
        """Attach what pid maps that targets name, now (the process is held for it: see
        agent/loadwatch.py); returns probes added."""
        try:
            text = (self._proc_root / str(pid) / "maps").read_text()
        except OSError:
            return 0
        with self._scan_lock:
            before = self.counts["probes_attached"]
            self._scan_process(pid, text)
            return self.counts["probes_attached"] - before

    def _selected_targets(self, pid: int, text: str) -> list[tuple[int, list[str]]]:
        """(target index, paths pid maps of it) for each target whose selector takes pid."""
        selected = []
        for index, target in self._live():
            paths = self._mapped_paths(target, text)
            if not paths:
                continue
            selector = self._selectors[index]
            if selector is not None and not selector.matches(self.describe(pid)):
                continue
            selected.append((index, paths))
        return selected

    def _scan_process(self, pid: int, text: str) -> None:
        for index, paths in self._selected_targets(pid, text):
            root = self._proc_root / str(pid) / "root"
            for path in paths:
                in_process = self._found(root, path)
                if in_process is not None:
                    self._consider(index, in_process)

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
        # A process's root is /proc/<pid>/root: its mounts are in /proc/<pid>/mountinfo.
        mountinfo = self.backing.host_mountinfo if root == self._host_root else root.parent / "mountinfo"
        identity = self.backing.identity(host_path, mountinfo, path)
        if identity is None:
            return None
        return FoundFile(host_path, root, path, identity)

    def _process_maps(self) -> list[tuple[int, str]]:
        needles = {t.binary if "/" in t.binary else (t.binary if t.binary.startswith("lib") else f"lib{t.binary}")
                   for _, t in self._live()}
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
        patterns: list[tuple[int, list[str], set[str]]] = []
        for pattern_index, pattern in enumerate(target.symbols):
            mangled = symbols.resolve(pattern)
            if len(mangled) > self._max_symbols:
                self._broad[(index, pattern_index)] = (
                    f"{pattern!r} matches {len(mangled)} functions in {found.host_path}, more than "
                    f"agent.max_symbols_per_pattern={self._max_symbols}: narrow the pattern")
                continue
            # A function inlined into its callers runs there, not at its symbol (which an -O2
            # build may not even keep): its inlined copies are probed too, where DWARF says.
            wanted = set(mangled) if mangled or is_pattern(pattern) else {pattern.strip()}
            patterns.append((pattern_index, mangled, wanted))
        # One walk of the file's DWARF for every function the target names (a plan of 1,000
        # functions of one file walked it 1,000 times).
        everything = frozenset(name for _, _, wanted in patterns for name in wanted)
        report = self._inlined(found, everything) if everything else InlineReport((), None)
        for pattern_index, mangled, wanted in patterns:
            copies = [copy for copy in report.copies if copy.function in wanted]
            if mangled or copies:
                self._resolved.add((index, pattern_index))
                self._found_symbols.setdefault((index, found.identity), set()).update(mangled)
            elif report.dwarf_source is None and wanted:
                self._no_dwarf[(index, pattern_index)] = report.reason
            for name in mangled:
                self._attach_one(index, found, name)
            for copy in copies:
                self._attach_one(index, found, copy.function, copy.file_offset)
        if self._purls is not None:
            # Resolved here, off the event pump, so the first call's lookup is a cache hit.
            self._purls.purl(found.root, found.path_in_root)

    def _inlined(self, found: FoundFile, names: frozenset[str]) -> InlineReport:
        key = (found.identity, names)
        report = self._inline_reports.get(key)
        if report is None:
            report = inlined_copies(found.host_path, names)
            self._inline_reports[key] = report
            if report.dwarf_source is None and report.reason and "more than" in report.reason:
                log.warning("inlined copies of %s not looked for: %s", ", ".join(sorted(names)), report.reason)
            if report.copies:
                log.info("%s: %d inlined cop%s of %s found in DWARF (%s)", found.host_path, len(report.copies),
                         "y" if len(report.copies) == 1 else "ies", ", ".join(sorted({c.function for c in report.copies})),
                         report.dwarf_source)
        return report

    def _attach_one(self, index: int, found: FoundFile, symbol: str, file_offset: int | None = None) -> None:
        # An inlined copy is its own uprobe, reporting under the function's name.
        key = (found.identity, symbol if file_offset is None else f"{symbol}@0x{file_offset:x}")
        selector = self._selectors[index]
        existing = self._probe_ids.get(key)
        self._target_probes.setdefault(index, set()).add(key)
        if existing is not None:
            # Same function of the same file through another target: one uprobe, both filters.
            self.filters.add(existing, selector)
            return
        spec = ProbeSpec(self.targets[index].binary, symbol)
        if file_offset is not None:
            self.counts["inlined_copies"] += 1
        if self._attach is None:
            self._probe_ids[key] = spec.probe_id
            self.counts["probes_attached"] += 1
            return
        # The selector is known before the probe fires: its first calls are filtered too.
        self.filters.add(spec.probe_id, selector)
        with self._attach_lock:
            try:
                attached = self._attach(ProbeSpec(str(found.host_path), symbol, file_offset))
            except ProbeError as exc:
                self.counts["attach_failures"] += 1
                self._set_missing(f"{self.names[index]}.symbols ({symbol})",
                                  f"attaching in {found.host_path}: {exc}")
                return
            # The tracer's own probe (its index is the BPF cookie every call carries), named as
            # the target names it ("c:malloc", not the /proc/<pid>/root/... path it was found at).
            # An inlined copy keeps its place: its records get its caller's frame (collector).
            probe = replace(attached, spec=replace(spec, file_offset=file_offset))
            if self._on_attached is not None:
                self._on_attached(probe)
        self._probe_ids[key] = spec.probe_id
        self._attached[key] = attached
        self.counts["probes_attached"] += 1
        log.info("attached %s in %s (+0x%x)", spec.probe_id, found.host_path, attached.file_offset)
        if self._late:
            self.counts["late_attaches"] += 1
            log.warning("%s in %s was attached by a rescan, after a process had mapped it: calls made "
                        "before now were not observed (late_attaches)", spec.probe_id, found.host_path)

    # --- targets added and removed at run time ----------------------------------------
    def _live(self) -> list[tuple[int, TargetSettings]]:
        return [(i, t) for i, t in enumerate(self.targets) if i not in self._removed]

    def add_targets(self, targets: list[TargetSettings], names: list[str]) -> list[int]:
        """Take these targets on (attached by the next scan, or now by calling scan()); returns
        their indices, for remove_targets and attached_for."""
        with self._scan_lock:
            first = len(self.targets)
            self.targets += targets
            self.names += names
            self._selectors += [ProcessSelector.of(t) for t in targets]
            self._files += [{} for _ in targets]
            indices = list(range(first, len(self.targets)))
        self._targets_changed()
        return indices

    def remove_targets(self, indices: list[int]) -> int:
        """Let these targets go: their uprobes that no remaining target uses are detached for
        good, their problems forgotten. Returns probes detached."""
        detached = 0
        with self._scan_lock:
            gone = set(indices) - self._removed
            self._removed |= gone
            still_used = {key for index, keys in self._target_probes.items() if index not in self._removed
                          for key in keys}
            letting_go = []
            for index in gone:
                for key in self._target_probes.pop(index, set()) - still_used:
                    probe = self._attached.pop(key, None)
                    self._probe_ids.pop(key, None)
                    if probe is not None and self._detach is not None:
                        letting_go.append(probe)
                        log.info("detaching %s in %s: its target %s was removed", probe.spec.probe_id, probe.path,
                                 self.names[index])
                prefix = f"{self.names[index]}."
                for name in [k for k in self.missing if k.startswith(prefix)]:
                    del self.missing[name]
            if letting_go and self._detach is not None:
                self._detach(letting_go)
                detached = len(letting_go)
            self.counts["probes_detached"] += detached
        self._targets_changed()
        return detached

    def _targets_changed(self) -> None:
        if self.on_targets_changed is not None:
            with self._scan_lock:
                live = [t for _, t in self._live()]
            self.on_targets_changed(live)

    def attached_for(self, index: int) -> list[tuple[str, str]]:
        """(file, symbol) of each uprobe in place for target ``index``, sorted."""
        with self._scan_lock:
            keys = self._target_probes.get(index, set())
            return sorted((self._attached[k].path, k[1]) for k in keys if k in self._attached)

    def problems_for(self, index: int) -> dict[str, str]:
        """What target ``index`` could not attach, by name (its binary, its symbols)."""
        prefix = f"{self.names[index]}."
        return {k: v for k, v in self.missing.items() if k.startswith(prefix)}

    # --- reporting -----------------------------------------------------------------
    def resolved(self) -> list[tuple[str, str, list[str]]]:
        """(target name, file as found, symbols resolved in it) per file of each target, for
        `signals agent --check`; a file where no symbol resolved lists none."""
        return [(self.names[index], path, sorted(self._found_symbols.get((index, identity), ())))
                for index, files in enumerate(self._files) if index not in self._removed
                for identity, path in sorted(files.items(), key=lambda item: item[1])]

    def _report(self) -> None:
        for index, target in self._live():
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
                elif (index, pattern_index) in self._no_dwarf:
                    self._set_missing(key, f"symbol {pattern!r} not found in {', '.join(sorted(files.values()))}: "
                                      "no out-of-line calls we can see (not in the symbol table), and without DWARF "
                                      "(build with -g, or install the debug file) copies inlined into its callers "
                                      f"cannot be found ({self._no_dwarf[(index, pattern_index)]})")
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
        return {"symbol_indexes": len(self._symbols), "target_files": len(self._done),
                "inline_reports": len(self._inline_reports)}

    def forget_file(self, host_path: str) -> None:
        """A probed file changed in place (agent/filewatch.py retired its probes): resolve its
        symbols and attach afresh on the next scan, as for a file never seen. Called from the
        file watcher's thread; the scan thread does the forgetting."""
        self._forget_pending.append(host_path)

    def _forget(self, host_path: str) -> None:
        try:
            st = os.stat(host_path)
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            inode = None
        stale = {identity for files in self._files for identity, path in files.items()
                 if path == host_path or identity == inode}
        self._done = {(identity, index) for identity, index in self._done if identity not in stale}
        self._probe_ids = {key: probe for key, probe in self._probe_ids.items() if key[0] not in stale}
        self._attached = {key: probe for key, probe in self._attached.items() if key[0] not in stale}
        for identity in stale:
            self._symbols.pop(identity, None)

    def counters(self) -> dict[str, int]:
        """For the statistics: targets whose binary or symbols are missing, probes in place."""
        return {
            "probes_attached": self.counts["probes_attached"],
            "attach_failures": self.counts["attach_failures"],
            "missing_binaries": sum(1 for k in self.missing if k.endswith(".binary")),
            "missing_symbols": sum(1 for k in self.missing if ".symbols" in k),
            "rescans": self.counts["rescans"],
            "overlay_files_unresolved": sum(self.backing.unresolved.values()),
            "late_attaches": self.counts["late_attaches"],
            "inlined_copies": self.counts["inlined_copies"],
            "probes_detached": self.counts["probes_detached"],
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
