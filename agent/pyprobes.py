"""Probes on Python functions: `--probe python:MODULE:QUALNAME` (globs allowed), served by
bpf/pyfunc.bpf.c from CPython's USDT markers function__entry / function__return.

What the markers give and how MODULE:QUALNAME maps to it. Each marker passes the code
object's co_filename, co_name (not co_qualname, even on 3.11+ where the code object has
one) and a line: at entry, the function's first line (its first decorator's line when it
is decorated, as co_firstlineno). So the kernel filters on co_name == the last part of
QUALNAME when that part has no glob; the agent then checks the whole name in user space:
the module is the source file's dotted path below the directory of sys.path that holds it
(site-packages, dist-packages, lib/pythonX.Y; elsewhere any dotted tail of the path, so
"handlers" and "app.handlers" both name /srv/app/handlers.py), and the qualified name is
the definition starting at the marker's line in that file (agent/pysource.py parses it).
A call the kernel passed and the full name rejects is counted as not selected.

Only interpreters built with the markers can be probed (configure --with-dtrace: Debian's
and Fedora's python3; pyenv builds have none): `interpreter_files` says which.
"""

from __future__ import annotations

import ctypes
import fnmatch
import logging
import mmap
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime_signals import bpf as bpf_sources
from runtime_signals.agent import bpfsys
from runtime_signals.agent.errors import BpfLoadError, ConfigError, ProbeError
from runtime_signals.agent.probes import ProbeLimits, import_bcc
from runtime_signals.agent.pywire import (
    COUNTER_NAMES,
    DEFAULT_MAX_FRAMES,
    FLAG_WALKED,
    GLOBAL_COUNTER_NAMES,
    SITE_ENTRY,
    SITE_FIRES_PROBES,
    SITE_RETURN,
    SITE_TRACKS_STACK,
    PyfuncProbe,
    PyfuncSite,
    UsdtArgC,
    py_call_event_type,
)
from runtime_signals.agent.tracefs import UprobeEvents
from runtime_signals.agent.usdt import UsdtMarker, read_markers
from runtime_signals.agent.wire import PythonProcess

log = logging.getLogger(__name__)

PREFIX = "python:"
_GLOB_CHARS = frozenset("*?[")
_MARKERS = {"function__entry": SITE_ENTRY, "function__return": SITE_RETURN}
MAX_PREEXISTING_PIDS = 65536
MAX_DESCRIBED_PIDS = 65536  # entries of the program's python_processes map


@dataclass(frozen=True, slots=True)
class PythonProbeSpec:
    """python:MODULE:QUALNAME, each part a glob."""

    module: str
    qualname: str

    @classmethod
    def parse(cls, text: str) -> PythonProbeSpec:
        if not text.startswith(PREFIX):
            raise ConfigError(f"--probe {text!r}: a Python probe starts with {PREFIX!r}")
        module, sep, qualname = text[len(PREFIX):].partition(":")
        if not sep or not module or not qualname:
            raise ConfigError(f"--probe {text!r}: expected python:MODULE:QUALNAME, "
                              "e.g. python:json.decoder:JSONDecoder.decode")
        return cls(module, qualname)

    @property
    def probe_id(self) -> str:
        return f"{PREFIX}{self.module}:{self.qualname}"

    @property
    def kernel_funcname(self) -> str:
        """The co_name the kernel can compare exactly: the qualname's last part, "" when it is a glob."""
        last = self.qualname.rsplit(".", 1)[-1]
        return "" if _GLOB_CHARS & set(last) else last

    def matches(self, module_candidates: tuple[str, ...], qualname: str) -> bool:
        return fnmatch.fnmatchcase(qualname, self.qualname) and any(
            fnmatch.fnmatchcase(module, self.module) for module in module_candidates)


def is_python_probe(text: str) -> bool:
    return text.startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class PythonFrame:
    filename_ptr: int
    funcname_ptr: int
    lineno: int


@dataclass(frozen=True, slots=True)
class PythonCall:
    """One call of a probed Python function, as the kernel reported it."""

    boot_ns: int
    cgroup_id: int
    pid: int
    tid: int
    probe_index: int
    flags: int
    funcname: str
    filename: str
    lineno: int
    frames: tuple[PythonFrame, ...]  # outermost first; the last is the called function


@dataclass(frozen=True, slots=True)
class AttachedPythonProbe:
    spec: PythonProbeSpec
    index: int


_VERSION = re.compile(r"python(\d)\.(\d+)")


def interpreter_version(path: str) -> tuple[int, int] | None:
    """(major, minor) from an interpreter file's name (python3.11, libpython3.11.so.1.0)."""
    match = _VERSION.search(path.rsplit("/", 1)[-1])
    return (int(match[1]), int(match[2])) if match else None


def site_flags(version: tuple[int, int] | None) -> dict[int, int]:
    """Which marker fires the probes, and whether the shadow stack is kept (bpf/pyfunc.h).
    Up to 3.10 every Python call enters the evaluation loop and passes function__entry.
    From 3.11 Python-to-Python calls are inlined and skip it (measured on Debian's 3.11:
    a few entries against thousands of returns), so probes fire at function__return,
    which every frame passes, and no stack is kept. Versions not checked here (3.12+) get
    the 3.11 treatment, which never shows a wrong path, only a short one."""
    if version is not None and version <= (3, 10):
        both = SITE_FIRES_PROBES | SITE_TRACKS_STACK
        return {SITE_ENTRY: both, SITE_RETURN: SITE_TRACKS_STACK}
    return {SITE_ENTRY: 0, SITE_RETURN: SITE_FIRES_PROBES}


def interpreter_markers(path: Path) -> dict[str, UsdtMarker]:
    """function__entry / function__return markers of an interpreter file (empty when none)."""
    found = {m.name: m for m in read_markers(path, "python") if m.name in _MARKERS}
    return found if len(found) == len(_MARKERS) else {}


def _c_arg(marker: UsdtMarker, index: int) -> UsdtArgC:
    if index >= len(marker.args):
        raise ProbeError(f"USDT marker python:{marker.name} has {len(marker.args)} arguments, expected 3")
    arg = marker.args[index]
    return UsdtArgC(value=arg.value, reg_offset=arg.reg_offset, kind=arg.kind, size_bytes=arg.size_bytes,
                    is_signed=int(arg.is_signed))


class PythonTracer:
    """The loaded bpf/pyfunc.bpf.c: interpreter files attached, probes set, calls read."""

    def __init__(self, *, max_frames: int = DEFAULT_MAX_FRAMES, ringbuf_pages: int = 1024, max_probes: int = 8,
                 max_sites: int = 64) -> None:
        if ringbuf_pages <= 0 or ringbuf_pages & (ringbuf_pages - 1):
            raise ConfigError(f"ringbuf_pages={ringbuf_pages}: must be a power of two")
        cflags = [f"-I{bpf_sources.SOURCE_DIR}", f"-DPYFUNC_MAX_FRAMES={max_frames}",
                  f"-DPYFUNC_MAX_PROBES={max_probes}", f"-DPYFUNC_MAX_SITES={max_sites}",
                  f"-DRINGBUF_PAGES={ringbuf_pages}"]
        bcc = import_bcc()
        self._lib = bcc.libbcc.lib
        source = bpf_sources.PYFUNC_SOURCE
        try:
            self._bpf = bcc.BPF(src_file=str(source).encode(), cflags=cflags)
            self._prog_fd: int = self._bpf.load_func(b"on_marker", bcc.BPF.KPROBE).fd
            # Return sites of described processes: the probes fire with the walked Python path.
            walker = self._bpf.load_func(b"on_return_walked", bcc.BPF.KPROBE).fd
            self._bpf[b"return_walker"][ctypes.c_int(0)] = ctypes.c_int(walker)
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise BpfLoadError(f"loading {source}: {exc}") from exc
        self.max_frames = max_frames
        self.max_probes = max_probes
        self.max_sites = max_sites
        self.ringbuf_bytes = ringbuf_pages * mmap.PAGESIZE
        self._event_type = py_call_event_type(max_frames)
        self._uprobes = UprobeEvents(name_prefix="py")
        self._lock = threading.RLock()
        self._sites: list[tuple[str, str]] = []  # (path, marker name) by site index
        self._files: dict[tuple[int, int], str] = {}  # (dev, inode) -> path attached
        self._links: list[bpfsys.UprobeLink] = []
        self._site_events: list[tuple[int, str]] = []  # (tracefs event id, description) by site index
        self.markers_attached = True  # False while the budget has every probe off (detach_markers)
        self.probes: list[AttachedPythonProbe] = []
        self._preexisting: set[int] = set()
        self.preexisting_overflow = 0
        self._described: set[int] = set()  # pids in python_processes
        self.described_overflow = 0
        self._callback: Callable[[PythonCall], None] | None = None

    # --- interpreters and probes --------------------------------------------------

    def attach_interpreter(self, path: Path, path_in_process: str | None = None) -> bool:
        """Attach the markers of one interpreter file (an executable or libpython), once per
        inode; False when it has no markers (a build without --with-dtrace)."""
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ProbeError(f"interpreter {path}: {exc.strerror}") from exc
        identity = (st.st_dev, st.st_ino)
        with self._lock:
            if identity in self._files:
                return True
            markers = interpreter_markers(path)
            if not markers:
                return False
            if len(self._sites) + len(markers) > self.max_sites:
                raise ProbeError(f"interpreter {path}: {self.max_sites} marker sites are attached already")
            flags = site_flags(interpreter_version(path_in_process or str(path)))
            for name, kind in _MARKERS.items():
                marker = markers[name]
                if not flags[kind]:
                    continue  # a marker that does nothing is not attached: its calls cost nothing
                index = len(self._sites)
                site = PyfuncSite(args=(UsdtArgC * 3)(*(_c_arg(marker, i) for i in range(3))), kind=kind,
                                  flags=flags[kind])
                self._update("sites", index, site, f"marker {name} of {path}")
                event_id = self._uprobes.create(index, str(path), marker.file_offset, marker.semaphore_file_offset)
                what = f"USDT python:{name} in {path}+0x{marker.file_offset:x}"
                self._site_events.append((event_id, what))
                if self.markers_attached:
                    self._links.append(bpfsys.attach_trace_event(self._prog_fd, event_id, index, what))
                self._sites.append((str(path), name))
            self._files[identity] = path_in_process or str(path)
        log.info("attached the Python function markers of %s", path)
        return True

    def add_probe(self, spec: PythonProbeSpec, limits: ProbeLimits | None = None) -> AttachedPythonProbe:
        with self._lock:
            index = len(self.probes)
            if index >= self.max_probes:
                raise ProbeError(f"probe {spec.probe_id}: {self.max_probes} Python probes are set already")
            probe = AttachedPythonProbe(spec, index)
            self._write_probe(probe, limits or ProbeLimits(), enabled=True)
            self.probes.append(probe)
        return probe

    def _write_probe(self, probe: AttachedPythonProbe, limits: ProbeLimits, enabled: bool) -> None:
        config = limits.config()
        name = probe.spec.kernel_funcname.encode()
        if len(name) >= 64:
            name = b""  # longer than the kernel compares: the agent filters alone
        value = PyfuncProbe(funcname=name, file_suffix=b"", rate_interval_ns=config.rate_interval_ns,
                            rate_burst_ns=config.rate_burst_ns, funcname_len=len(name), file_suffix_len=0,
                            enabled=int(enabled), active=1)
        self._update("probes", probe.index, value, f"probe {probe.spec.probe_id}")

    def set_enabled(self, probe: AttachedPythonProbe, enabled: bool, limits: ProbeLimits | None = None) -> None:
        """Switch recording of one probe on or off (the markers keep running for the others)."""
        self._write_probe(probe, limits or ProbeLimits(), enabled)

    def mark_preexisting(self, pids: list[int]) -> None:
        """Processes that ran Python before the markers were attached: their records are
        marked truncated (their threads' outer frames were entered unseen)."""
        table = self._bpf["preexisting_pids"]
        for pid in pids:
            if pid in self._preexisting:
                continue
            if len(self._preexisting) >= MAX_PREEXISTING_PIDS:
                self.preexisting_overflow += 1
                continue
            table[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
            self._preexisting.add(pid)

    def describe_process(self, pid: int, description: PythonProcess) -> bool:
        """Give pid's return-site records their Python path, walked from its thread state
        (agent/pyframes.py describes the interpreter); False when it could not be written."""
        if pid in self._described:
            return True
        if len(self._described) >= MAX_DESCRIBED_PIDS:
            self.described_overflow += 1
            return False
        key = ctypes.c_uint32(pid)
        fd = self._bpf["python_processes"].get_fd()
        if self._lib.bpf_update_elem(fd, ctypes.byref(key), ctypes.byref(description), 0) != 0:
            log.warning("python probes: describing pid %d failed: %s", pid, os.strerror(ctypes.get_errno()))
            return False
        self._described.add(pid)
        return True

    def described_pids(self) -> set[int]:
        return set(self._described)

    def forget_pid(self, pid: int) -> None:
        if pid in self._described:
            self._described.discard(pid)
            key = ctypes.c_uint32(pid)
            self._lib.bpf_delete_elem(self._bpf["python_processes"].get_fd(), ctypes.byref(key))
        if pid in self._preexisting:
            self._preexisting.discard(pid)
            try:
                del self._bpf["preexisting_pids"][ctypes.c_uint32(pid)]
            except KeyError:
                pass

    def _update(self, map_name: str, index: int, value: ctypes.Structure, what: str) -> None:
        key = ctypes.c_uint32(index)
        fd = self._bpf[map_name].get_fd()
        if self._lib.bpf_update_elem(fd, ctypes.byref(key), ctypes.byref(value), 0) != 0:
            raise ProbeError(f"{what}: writing map {map_name} failed: {os.strerror(ctypes.get_errno())}")

    # --- calls --------------------------------------------------------------------

    def on_event(self, callback: Callable[[PythonCall], None]) -> None:
        self._callback = callback
        pointer_type = ctypes.POINTER(self._event_type)

        def _handle(_ctx: object, data: ctypes.c_void_p, _size: int) -> int:
            callback(self._to_call(ctypes.cast(data, pointer_type).contents))
            return 0

        self._bpf["events"].open_ring_buffer(_handle)

    def _to_call(self, raw: ctypes.Structure) -> PythonCall:
        count = min(raw.frame_count, self.max_frames)
        frames = tuple(PythonFrame(f.filename_ptr, f.funcname_ptr, f.lineno) for f in raw.frames[:count])
        if raw.flags & FLAG_WALKED:  # walked from the thread state: innermost first
            frames = frames[::-1]
        return PythonCall(boot_ns=raw.boot_ns, cgroup_id=raw.cgroup_id, pid=raw.pid, tid=raw.tid,
                          probe_index=raw.probe_index, flags=raw.flags,
                          funcname=raw.funcname.decode(errors="replace"),
                          filename=raw.filename.decode(errors="surrogateescape"),
                          lineno=raw.lineno, frames=frames)

    def poll(self, timeout_ms: int) -> None:
        self._bpf.ring_buffer_poll(timeout_ms)

    def drain(self) -> None:
        self._bpf.ring_buffer_consume()

    # --- figures ------------------------------------------------------------------

    def probe_counters(self, probe: AttachedPythonProbe) -> dict[str, int]:
        counters = self._bpf["counters"]
        base = probe.index * len(COUNTER_NAMES)
        return {name: int(sum(counters[ctypes.c_int(base + i)])) for i, name in enumerate(COUNTER_NAMES)}

    def global_counters(self) -> dict[str, int]:
        counters = self._bpf["global_counters"]
        return {name: int(sum(counters[ctypes.c_int(i)])) for i, name in enumerate(GLOBAL_COUNTER_NAMES)}

    def program_stats(self) -> bpfsys.ProgramStats:
        return bpfsys.program_stats(self._prog_fd)

    @property
    def interpreter_paths(self) -> list[str]:
        return sorted(set(self._files.values()))

    def detach_markers(self) -> None:
        """Unlink the program from every marker: the uprobes are unregistered, which lowers
        the semaphores, and Python calls stop costing anything."""
        with self._lock:
            for link in self._links:
                link.close()
            self._links.clear()
            self.markers_attached = False

    def reattach_markers(self) -> None:
        """Link the program to every marker again (after detach_markers)."""
        with self._lock:
            if self.markers_attached:
                return
            self._links = [bpfsys.attach_trace_event(self._prog_fd, event_id, index, what)
                           for index, (event_id, what) in enumerate(self._site_events)]
            self.markers_attached = True

    def close(self) -> None:
        self.detach_markers()
        self._uprobes.remove_all()
        self._bpf.cleanup()
