"""What the agent knows about each process that made a probed call: its container (and
pod), executable, runtime and executable mappings, learned once per process and forgotten
when it exits.

Every binary seen in a stack is reported through `on_new_binary` once per (process,
mapping) (the symbol-table publisher keeps only the first report of each digest); the
process's module map is reported through `on_module_map` when first seen and whenever
its mappings change.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cachetools import LRUCache

from runtime_signals.agent.identity import CgroupDirectory, ContainerResolver, PodDirectory, host_id
from runtime_signals.agent.perfmap import (
    _JDK_PACKAGES,
    JitModule,
    PerfMaps,
    jit_digest,
    jvm_class_name,
    node_source_path,
)
from runtime_signals.agent.procmaps import DigestCache, Mapping, ProcessMaps, ResolvedAddress, parse_maps
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


@dataclass(frozen=True, slots=True)
class ExecutableIdentity:
    """What RuntimeCallEvent says of the calling process's executable."""

    path: str | None     # as the process sees it
    binary_digest: str | None
    purl: str | None
    comm: str
    # The executable is being hashed in the background (background_hashing): ask again later.
    pending: bool = False


@dataclass
class NodeFiles:
    """Caches about the node's files that the event pump, the module-map worker and the
    target scanner share, so each file is hashed and each package database read once."""

    digests: DigestCache = field(default_factory=DigestCache)
    purls: PurlResolver = field(default_factory=PurlResolver)
    pods: PodDirectory = field(default_factory=PodDirectory)
    cgroups: CgroupDirectory = field(default_factory=CgroupDirectory)
    # The container id of the node's own processes (identity.host_id: the machine id).
    host: str = field(default_factory=host_id)


# (process, mappings, version, named JIT code met in its stacks)
ModuleMapCallback = Callable[[ProcessInfo, list[Mapping], int, Sequence[JitModule]], None]
JitCodeCallback = Callable[[JitModule], None]  # a JIT code blob first met: publish its one-name table
# Jars of one JVM indexed for class -> jar (its open .jar files); more are not read.
MAX_JARS_PER_PROCESS = 256
MAX_JIT_DIGESTS = 1 << 16


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
                 perf_maps: PerfMaps | None = None, on_jit_code: JitCodeCallback | None = None,
                 background_hashing: bool = False) -> None:
        self._proc_root = proc_root
        node = node or NodeFiles()
        self.digests = node.digests
        self.maps = ProcessMaps(self.digests, proc_root, on_new_file=self._new_file,
                                background_hashing=background_hashing)
        self._background = background_hashing
        self.purls = node.purls
        self._containers = ContainerResolver(proc_root, host=node.host, cgroups=node.cgroups)
        self._runtimes = RuntimeResolver(proc_root)
        self._pods = node.pods
        self._cgroups = node.cgroups
        self._on_new_binary = on_new_binary
        self._on_module_map = on_module_map
        self._info: dict[int, ProcessInfo] = {}
        self._reported_versions: dict[int, int] = {}
        # Purl of the probed function's file (and the executable's), per process:
        # (maps version, {path: purl}).
        self._purls: dict[int, tuple[int, dict[str, str | None]]] = {}
        self._perf_maps = perf_maps
        self._on_jit_code = on_jit_code
        self._jit_modules: dict[int, dict[tuple[int, str], JitModule]] = {}  # pid -> (start, name) -> module
        # Code units whose one-name table was offered (bounded: a unit forgotten here is
        # offered again, and published again only if the symbol publisher forgot it too).
        self._jit_digests: LRUCache[str, bool] = LRUCache(MAX_JIT_DIGESTS)
        self._jars: dict[int, dict[str, str]] = {}  # pid -> class -> jar path (as the process sees it)
        # The event pump describes and resolves; the loader-hold thread captures.
        self._lock = threading.RLock()
        # Exited processes are forgotten one sweep after they were first seen gone: calls
        # they made may still be in the kernel's dedup map, flushed at the next watermark.
        self._gone: set[int] = set()
        # Executable identity per process: (maps version, identity). Dropped with the process.
        self._executables: dict[int, tuple[int, ExecutableIdentity]] = {}

    def describe(self, pid: int, cgroup_id: int = 0) -> ProcessInfo:
        """What is known of pid; cgroup_id (the call record's) still names the container of a
        process that exited before its calls were read."""
        with self._lock:
            return self._describe(pid, cgroup_id)

    def _describe(self, pid: int, cgroup_id: int = 0) -> ProcessInfo:
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

    @property
    def proc_root(self) -> Path:
        return self._proc_root

    def resolve_frames(self, pid: int, addresses: tuple[int, ...]) -> list[ResolvedAddress]:
        """Each address as (file, digest, offset), innermost first like the input; the first
        (the probed function's) also carries the purl of its file. The other frames' packages
        reach the processor through the module maps, looked up off the event pump: a first
        package lookup costs up to a second (building a root's package index), which the pump
        must not spend on every new library of a stack."""
        with self._lock:
            return self._resolve_frames(pid, addresses)

    def current_maps_version(self, pid: int) -> int:
        """The version of pid's mappings, read afresh."""
        with self._lock:
            self.maps.mappings(pid, refresh=True)
            return self.maps.version(pid)

    def capture(self, pid: int) -> tuple[ProcessInfo, list[Mapping], int]:
        """Learn now, while pid is alive (held), all that its calls need later: identity,
        runtime, mappings with their digests, the packages of its files. Returns (process,
        mappings, maps version) for its module map, which the caller builds now too."""
        # Hash its files first, outside the table's lock (DigestCache has its own, per file):
        # the pump resolves other processes' frames meanwhile instead of waiting behind a
        # large new binary; prime() below then finds every digest cached.
        root = self._proc_root / str(pid) / "root"
        try:
            for mapping in parse_maps((self._proc_root / str(pid) / "maps").read_text()):
                self.digests.digest(root / mapping.path.lstrip("/"))
        except OSError:
            pass  # gone already: prime() finds nothing either
        with self._lock:
            info = self._describe(pid)
            mappings = self.maps.prime(pid)
            version = self.maps.version(pid)
            root = self._proc_root / str(pid) / "root"
            self._purls[pid] = (version, {m.path: self.purls.purl(root, m.path) for m in mappings})
            self._reported_versions[pid] = version  # the caller publishes this version's map
            return info, mappings, version

    def _resolve_frames(self, pid: int, addresses: tuple[int, ...]) -> list[ResolvedAddress]:
        frames = self.maps.resolve(pid, addresses)
        if self._perf_maps is not None and any(f.path is None for f in frames):
            frames = self._name_jit_frames(pid, frames)
        maps_version = self.maps.version(pid)
        top = frames[0] if frames else None
        if top is not None and top.path is not None and not top.pending:
            frames[0] = ResolvedAddress(top.address, top.path, top.binary_digest, top.binary_offset,
                                        self._purl(pid, maps_version, top.path))
        self._report_module_map(pid)
        return frames

    def add_code_unit(self, pid: int, unit: JitModule) -> None:
        """A unit of code met in pid's stacks that no file mapping holds (a Python function,
        agent/pyframes.py): listed in its module map (start = end = 0) with its package, and
        its one-name symbol table published once."""
        with self._lock:
            units = self._jit_modules.setdefault(pid, {})
            key = (unit.start, unit.binary_digest)
            if key in units:
                return
            units[key] = unit
            if unit.binary_digest not in self._jit_digests:
                self._jit_digests[unit.binary_digest] = True
                if self._on_jit_code is not None:
                    self._on_jit_code(unit)
            self.maps.mappings(pid)  # the map lists the process's mappings too
            self._report_module_map(pid)

    def _report_module_map(self, pid: int) -> None:
        # Published version: the mappings' version plus the code units met, both only grow.
        maps_version = self.maps.version(pid)
        version = maps_version + len(self._jit_modules.get(pid, ())) if maps_version else 0
        if self._on_module_map is not None and version and self._reported_versions.get(pid) != version:
            self._reported_versions[pid] = version
            self._on_module_map(self._describe(pid), self.maps.mappings(pid), version,
                                tuple(self._jit_modules.get(pid, {}).values()))

    def _name_jit_frames(self, pid: int, frames: list[ResolvedAddress]) -> list[ResolvedAddress]:
        """Frames in anonymous memory that the process's perf map names: located in their
        code blob (agent/perfmap.py). The rest stay as they are."""
        assert self._perf_maps is not None
        runtime = self.describe(pid).runtime_type
        named = []
        for frame in frames:
            found = self._perf_maps.lookup(pid, frame.address, runtime) if frame.path is None else None
            if found is None:
                named.append(frame)
                continue
            symbol, map_path = found
            digest = jit_digest(symbol.name)
            modules = self._jit_modules.setdefault(pid, {})
            if (symbol.start, symbol.name) not in modules:
                module = JitModule(symbol.start, symbol.size, symbol.name, map_path, digest,
                                   self._jit_purl(pid, runtime, symbol.name))
                modules[(symbol.start, symbol.name)] = module
                if digest not in self._jit_digests:
                    self._jit_digests[digest] = True
                    if self._on_jit_code is not None:
                        self._on_jit_code(module)
            named.append(ResolvedAddress(frame.address, map_path, digest, frame.address - symbol.start))
        return named

    def _jit_purl(self, pid: int, runtime: str, name: str) -> str | None:
        """The package of a JIT blob: a JVM method's class in an open jar (Maven coordinates),
        a JDK class the JVM's own package; a V8 function's script by its path (npm)."""
        root = self._proc_root / str(pid) / "root"
        if runtime == "NODE":
            script = node_source_path(name)
            return self.purls.purl(root, script) if script else None
        if runtime != "JVM":
            return None
        cls = jvm_class_name(name)
        if cls is None:
            return None
        if cls.startswith(_JDK_PACKAGES):
            jvm = next((m.path for m in self.maps.mappings(pid) if m.path.endswith("/libjvm.so")), None)
            return self.purls.purl(root, jvm) if jvm else None
        jar = self._jar_index(pid).get(cls.split("$", 1)[0])
        return self.purls.purl(root, jar) if jar else None

    def _jar_index(self, pid: int) -> dict[str, str]:
        if pid not in self._jars:
            index: dict[str, str] = {}
            fd_dir = self._proc_root / str(pid) / "fd"
            try:
                links = sorted({os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)})
            except OSError:
                links = []
            root = self._proc_root / str(pid) / "root"
            for jar in [link for link in links if link.endswith(".jar")][:MAX_JARS_PER_PROCESS]:
                try:
                    with zipfile.ZipFile(root / jar.lstrip("/")) as archive:
                        for entry in archive.namelist():
                            if entry.endswith(".class"):
                                index.setdefault(entry[:-len(".class")].replace("/", "."), jar)
                except (OSError, zipfile.BadZipFile):
                    continue
            self._jars[pid] = index
        return self._jars[pid]

    def executable(self, pid: int, frames: Sequence[ResolvedAddress] = ()) -> ExecutableIdentity:
        """The process's executable: its path as the process sees it, digest and package.
        The digest comes from a frame in the executable when there is one (a short-lived
        process may be gone by the time its calls are read, /proc/<pid>/exe with it).
        Cached per process (a process's executable does not change without exec, which
        makes a new mappings version: the cache follows that)."""
        version = self.maps.version(pid)
        cached = self._executables.get(pid)
        if cached is not None and cached[0] == version and cached[1].binary_digest is not None:
            return cached[1]
        info = self.describe(pid)
        digest = purl = None
        pending = False
        if info.executable:
            digest = next((f.binary_digest for f in frames if f.path == info.executable and f.binary_digest), None)
            if digest is None:
                exe = self._proc_root / str(pid) / "exe"
                if self._background:  # the pump never hashes: the background hasher does
                    settled, digest = self.digests.lookup(exe)
                    pending = not settled
                else:
                    digest = self.digests.digest(exe)
            purl = self._purl(pid, version, info.executable)
        identity = ExecutableIdentity(info.executable or None, digest, purl, info.comm, pending)
        if info.executable:
            self._executables[pid] = (version, identity)
        return identity

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
                 "digests": len(self.digests), "digests_queued": self.digests.queued(),
                 "containers": self._containers.size(),
                 "cgroups": len(self._cgroups), "pods": len(self._pods), "jit_processes": len(self._jit_modules),
                 "jar_indexes": len(self._jars), "executables": len(self._executables),
                 "gone_pending": len(self._gone)}
        sizes.update(self.maps.sizes())
        sizes.update(self.purls.sizes())
        return sizes

    def forget_exited(self) -> int:
        """Drop what is known of processes seen gone at the previous sweep too; returns how many.
        One sweep late: calls read just after an exit still resolve (loader holds, the ring
        buffer's backlog)."""
        with self._lock:
            # Every table keyed by pid: a process whose calls were all filtered out was described
            # (its container, for the selector) without its maps ever being read.
            known = set(self.maps.known_pids()) | set(self._info) | set(self._purls)
            known |= set(self._containers.known_pids()) | set(self._runtimes.known_pids())
            known |= set(self._reported_versions) | set(self._jit_modules) | set(self._jars) | set(self._executables)
            gone_now = {pid for pid in known if not (self._proc_root / str(pid)).exists()}
            forget = gone_now & self._gone
            self._gone = gone_now - forget
            for pid in forget:
                self.maps.forget(pid)
                self._containers.forget(pid)
                self._runtimes.forget(pid)
                self._info.pop(pid, None)
                self._reported_versions.pop(pid, None)
                self._purls.pop(pid, None)
                self._jit_modules.pop(pid, None)
                self._jars.pop(pid, None)
                self._executables.pop(pid, None)
                if self._perf_maps is not None:
                    self._perf_maps.forget(pid)
            return len(forget)
