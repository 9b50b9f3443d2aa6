"""What the agent knows about each process that made a probed call: its container (and
pod), executable, runtime and executable mappings, learned once per process and forgotten
when it exits.

Every binary seen in a stack is reported through `on_new_binary` once per (process,
mapping) (the symbol-table publisher keeps only the first report of each digest); the
process's module map is reported through `on_module_map` when first seen and whenever
its mappings change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from runtime_signals.agent.identity import CgroupDirectory, ContainerResolver, PodDirectory
from runtime_signals.agent.procmaps import DigestCache, Mapping, ProcessMaps, ResolvedAddress
from runtime_signals.agent.purl import PurlResolver
from runtime_signals.agent.runtime import RuntimeResolver

NewBinaryCallback = Callable[[str, Path, Path], None]  # (digest, host-visible path, process root)


def process_names(proc: Path) -> tuple[str, str]:
    """(executable path, comm) of the process at /proc/<pid>; empty strings once it exited."""
    try:
        executable = str((proc / "exe").readlink())
    except OSError:
        executable = ""
    try:
        comm = (proc / "comm").read_text().strip()
    except OSError:
        comm = ""
    return executable, comm


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    container_id: str
    runtime_type: str  # RuntimeType symbol
    root: Path  # the process's root directory, seen from the agent (/proc/<pid>/root)
    executable: str = ""  # as the process sees it; "" when unreadable
    comm: str = ""
    cgroup_paths: tuple[str, ...] = ()
    pod_uid: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    start_ticks: int = 0  # /proc/<pid>/stat field 22: with the pid, names the process uniquely


@dataclass
class NodeFiles:
    """Caches about the node's files that the event pump, the module-map worker and the
    target scanner share, so each file is hashed and each package database read once."""

    digests: DigestCache = field(default_factory=DigestCache)
    purls: PurlResolver = field(default_factory=PurlResolver)
    pods: PodDirectory = field(default_factory=PodDirectory)
    cgroups: CgroupDirectory = field(default_factory=CgroupDirectory)


ModuleMapCallback = Callable[[ProcessInfo, list[Mapping], int], None]  # (process, mappings, version)


def read_start_ticks(proc: Path) -> int:
    """Field 22 of /proc/<pid>/stat (after the parenthesised comm, which may hold spaces)."""
    try:
        text = (proc / "stat").read_text()
    except OSError:
        return 0
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else 0


class ProcessTable:
    def __init__(self, on_new_binary: NewBinaryCallback | None = None, proc_root: Path = Path("/proc"),
                 on_module_map: ModuleMapCallback | None = None, node: NodeFiles | None = None,
                 background_hashing: bool = False) -> None:
        self._proc_root = proc_root
        node = node or NodeFiles()
        self.digests = node.digests
        self.maps = ProcessMaps(self.digests, proc_root, on_new_file=self._new_file,
                                background_hashing=background_hashing)
        self.purls = node.purls
        self._containers = ContainerResolver(proc_root, cgroups=node.cgroups)
        self._runtimes = RuntimeResolver(proc_root)
        self._pods = node.pods
        self._cgroups = node.cgroups
        self._on_new_binary = on_new_binary
        self._on_module_map = on_module_map
        self._info: dict[int, ProcessInfo] = {}
        self._reported_versions: dict[int, int] = {}
        # Purl of the probed function's file, per process: (maps version, {path: purl}).
        self._purls: dict[int, tuple[int, dict[str, str | None]]] = {}

    def describe(self, pid: int, cgroup_id: int = 0) -> ProcessInfo:
        """What is known of pid; cgroup_id (the call record's) still names the container of a
        process that exited before its calls were read."""
        cached = self._info.get(pid)
        if cached is not None:
            return cached
        proc = self._proc_root / str(pid)
        identity = self._containers.identity(pid, cgroup_id)
        pod = self._pods.lookup(identity.pod_uid) if identity.pod_uid else None
        executable, comm = process_names(proc)
        info = ProcessInfo(
            pid=pid,
            container_id=identity.container_id,
            runtime_type=self._runtimes.runtime(pid, lambda: [m.path for m in self.maps.mappings(pid)]).name,
            root=proc / "root",
            executable=executable,
            comm=comm,
            cgroup_paths=identity.cgroup_paths,
            pod_uid=identity.pod_uid,
            pod_namespace=pod.namespace if pod else None,
            pod_name=pod.name if pod else None,
            start_ticks=read_start_ticks(proc),
        )
        if executable:  # a process already gone is not cached: its pid may be reused
            self._info[pid] = info
        return info

    def resolve_frames(self, pid: int, addresses: tuple[int, ...]) -> list[ResolvedAddress]:
        """Each address as (file, digest, offset), innermost first like the input; the first
        (the probed function's) also carries the purl of its file."""
        frames = self.maps.resolve(pid, addresses)
        version = self.maps.version(pid)
        top = frames[0] if frames else None
        if top is not None and top.path is not None and not top.pending:
            frames[0] = ResolvedAddress(top.address, top.path, top.binary_digest, top.binary_offset,
                                        self._purl(pid, version, top.path))
        if self._on_module_map is not None and version and self._reported_versions.get(pid) != version:
            self._reported_versions[pid] = version
            self._on_module_map(self.describe(pid), self.maps.mappings(pid), version)
        return frames

    def _new_file(self, pid: int, mapping: Mapping, digest: str) -> None:
        """A file first met in pid's mappings (ProcessMaps calls once per mapping)."""
        if self._on_new_binary is not None:
            root = self._proc_root / str(pid) / "root"
            self._on_new_binary(digest, root / mapping.path.lstrip("/"), root)

    def _purl(self, pid: int, version: int, path: str) -> str | None:
        cached = self._purls.get(pid)
        if cached is None or cached[0] != version:
            cached = (version, {})
            self._purls[pid] = cached
        by_path = cached[1]
        if path not in by_path:
            by_path[path] = self.purls.purl(self._proc_root / str(pid) / "root", path)
        return by_path[path]

    def sizes(self) -> dict[str, int]:
        """Entries held here and in the caches shared with the node, for /metrics."""
        sizes = {"processes": len(self._info), "runtimes": self._runtimes.size(), "process_purls": len(self._purls),
                 "digests": len(self.digests), "digests_queued": self.digests.queued(), "containers": self._containers.size(),
                 "cgroups": len(self._cgroups), "pods": len(self._pods)}
        sizes.update(self.maps.sizes())
        sizes.update(self.purls.sizes())
        return sizes

    def forget_exited(self) -> int:
        """Drop what is known of processes that have exited; returns how many."""
        # Every table keyed by pid: a process whose calls were all filtered out was described
        # (its container, for the selector) without its maps ever being read.
        known = set(self.maps.known_pids()) | set(self._info) | set(self._purls) | set(self._containers.known_pids())
        known |= set(self._runtimes.known_pids()) | set(self._reported_versions)
        gone = [pid for pid in known if not (self._proc_root / str(pid)).exists()]
        for pid in gone:
            self.maps.forget(pid)
            self._containers.forget(pid)
            self._runtimes.forget(pid)
            self._info.pop(pid, None)
            self._reported_versions.pop(pid, None)
            self._purls.pop(pid, None)
        return len(gone)
