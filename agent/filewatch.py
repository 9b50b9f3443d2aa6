"""Never leave a uprobe on a file that changed: detach the moment a probed file is written.

A uprobe is a breakpoint at (inode, file offset): the kernel writes int3 there in every
process that maps the file, now and later. A binary or library rewritten *in place* (same
inode: `cp new old`, an installer that truncates and writes, a careless deploy) keeps the
uprobe at the old offset, which in the new code may sit inside another instruction. The next
process that maps the file runs the int3 as part of that instruction and dies (SIGSEGV, a
wrong call target), or the kernel single-steps the *old* instruction it saved. An observer
must never do that to its target, so:

- before attaching, the file's identity (device, inode, size, mtime) is read, and read again
  once the uprobe is in place and the file is watched: a file that changed in between loses
  the probe at once;
- after, inotify reports the first write to the file (IN_MODIFY, raised by the write itself,
  before the writer has closed it): every probe on the file is retired (detached for good:
  the probe budget cannot re-arm it) on a thread that does nothing else;
- when the writer has closed the file, `on_changed` tells the target scanner to forget what
  it knew of the file, and its next rescan resolves the new symbols and attaches afresh.

Residual risk (docs/deploy.md): the few microseconds between the first write and the detach,
in which a process that maps the file *in that window* still gets the stale breakpoint; and a
process whose already-mapped pages change under it, which the rewrite itself breaks whether
a probe is there or not (that is why a running executable cannot be written: ETXTBSY).
Writes through another mount namespace's path are seen too: inotify watches the inode.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from runtime_signals.agent.errors import ProbeError
from runtime_signals.agent.probes import AttachedProbe, ProbeSpec

log = logging.getLogger(__name__)

# <sys/inotify.h>; inotify is two system calls: libc's wrappers through ctypes are simpler
# than a dependency.
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_DELETE_SELF = 0x400
_IN_IGNORED = 0x8000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
_WATCHED = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_DELETE_SELF


@dataclass(frozen=True)
class FileState:
    """What is checked before and after attaching: a change in any means other content."""

    device: int
    inode: int
    size_bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> FileState:
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatch:
    """Wraps a tracer's attach; retires every probe of a file written after it was probed."""

    def __init__(self, attach: Callable[[ProbeSpec], AttachedProbe], retire: Callable[[AttachedProbe], None],
                 on_changed: Callable[[str], None] | None = None) -> None:
        self._attach = attach
        self._retire = retire
        self.on_changed = on_changed
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._rm_watch = libc.inotify_rm_watch
        self._rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
        self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise ProbeError(f"inotify_init1: {os.strerror(ctypes.get_errno())}; probed files cannot be watched "
                             f"for changes (fs.inotify.max_user_instances?)")
        self._lock = threading.Lock()
        self._probes: dict[int, list[AttachedProbe]] = {}  # watch descriptor -> probes on that file
        self._paths: dict[int, str] = {}
        self._changed: set[int] = set()    # written to, writer not done yet
        self.counts: Counter[str] = Counter()

    def attach(self, spec: ProbeSpec) -> AttachedProbe:
        """The tracer's attach, with the file checked before and watched after."""
        try:
            before = FileState.of(spec.binary)
        except OSError as exc:
            raise ProbeError(f"probe {spec.probe_id}: {spec.binary}: {exc.strerror or exc}") from exc
        probe = self._attach(spec)
        with self._lock:
            wd = self._add_watch(self._fd, os.fsencode(probe.path), _WATCHED)
            if wd < 0:
                error = os.strerror(ctypes.get_errno())
                self._retire(probe)
                raise ProbeError(f"probe {spec.probe_id}: cannot watch {probe.path} for changes ({error}); not "
                                 f"attached: a file that might change unseen must not keep a breakpoint "
                                 f"(fs.inotify.max_user_watches?)")
            self._probes.setdefault(wd, []).append(probe)
            self._paths[wd] = probe.path
        try:
            after = FileState.of(probe.path)
        except OSError:
            after = None
        if after != before:
            # Written while the symbols were read or the uprobe placed: its offset is suspect.
            self._retire_file(wd, "changed while the probe was attached")
            raise ProbeError(f"probe {spec.probe_id}: {probe.path} changed while it was being attached; "
                             f"not attached (the next rescan tries the new file)")
        return probe

    def probes_watched(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._probes.values())

    def poll(self, timeout_s: float) -> int:
        """Wait up to timeout_s for file events and act on them; returns probes retired."""
        readable, _, _ = select.select([self._fd], [], [], timeout_s)
        if not readable:
            return 0
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return 0
        retired = 0
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            if mask & (_IN_MODIFY | _IN_DELETE_SELF):
                retired += self._retire_file(wd, "written in place" if mask & _IN_MODIFY else "deleted")
            if mask & (_IN_CLOSE_WRITE | _IN_IGNORED) and wd in self._changed:
                self._changed.discard(wd)
                path = self._paths.pop(wd, None)
                if path is not None and self.on_changed is not None:
                    self.on_changed(path)
        return retired

    def _retire_file(self, wd: int, why: str) -> int:
        with self._lock:
            probes = self._probes.pop(wd, [])
            if not probes:
                return 0
            self._changed.add(wd)
        for probe in probes:
            self._retire(probe)
        self.counts["probes_retired_file_changed"] += len(probes)
        log.warning("%s was %s: %d probe(s) on it detached (%s), so no process meets a breakpoint at an offset "
                    "that no longer starts the function", self._paths.get(wd, "?"), why, len(probes),
                    ", ".join(p.spec.probe_id for p in probes))
        if why == "deleted":
            self._changed.discard(wd)
        return len(probes)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Act on file events until stop is set, on a daemon thread of its own (a rescan or a
        slow Kafka send must not delay a detach)."""

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.poll(0.2)
                except Exception:  # never let the watcher die: it is what keeps targets safe
                    log.exception("file watch failed; continuing")

        thread = threading.Thread(target=loop, name="probe-file-watch", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        os.close(self._fd)
