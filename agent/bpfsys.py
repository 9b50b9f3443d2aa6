"""The few kernel calls bcc does not offer: a perf-event link carrying a BPF cookie, the
kernel's BPF run-time statistics, and a program's figures from /proc/self/fdinfo.

The cookie is how one loaded program tells its probes apart (bpf_get_attach_cookie):
the agent gives each probe an index and the program keeps per-probe counters, rate
limits and config under it. Needs Linux 5.15+ (cookies on perf-event links).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime_signals.agent.errors import BpfLoadError, ProbeError

# Syscall numbers differ per architecture; these are the two the agent runs on.
_SYSCALLS = {
    "x86_64": {"perf_event_open": 298, "bpf": 321},
    "aarch64": {"perf_event_open": 241, "bpf": 280},
}
# enum bpf_cmd and friends (include/uapi/linux/bpf.h).
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_GET_NEXT_KEY = 4
_BPF_OBJ_PIN = 6
_BPF_OBJ_GET = 7
_BPF_LINK_CREATE = 28
_BPF_ENABLE_STATS = 32
_BPF_PERF_EVENT = 41  # enum bpf_attach_type
_BPF_STATS_RUN_TIME = 0
_PERF_EVENT_IOC_ENABLE = 0x2400  # _IO('$', 0)
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_PERF_ATTR_SIZE_VER5 = 112  # the kernel accepts any published size
_PERF_TYPE_TRACEPOINT = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _PerfEventAttr(ctypes.Structure):
    # struct perf_event_attr up to PERF_ATTR_SIZE_VER5; only the fields used here are named.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * (_PERF_ATTR_SIZE_VER5 - 72)),
    ]


class _LinkCreateAttr(ctypes.Structure):
    # union bpf_attr, the BPF_LINK_CREATE member with the perf_event variant.
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("bpf_cookie", ctypes.c_uint64),
        ("padding", ctypes.c_uint8 * 40),  # the kernel requires unused attr bytes to be zero
    ]


def _syscall_number(name: str) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise BpfLoadError(f"architecture {platform.machine()} is not supported (x86_64, aarch64 are)")
    return numbers[name]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    result = _libc.syscall(_syscall_number("bpf"), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(result)


@dataclass
class UprobeLink:
    """An attached probe: the perf event and the BPF link; close() detaches."""

    perf_fd: int
    link_fd: int

    def close(self) -> None:
        for fd in (self.link_fd, self.perf_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def attach_trace_event(prog_fd: int, event_id: int, cookie: int, what: str,
                       before_link: Callable[[], object] | None = None) -> UprobeLink:
    """Attach prog_fd to the tracefs event event_id (a uprobe event, agent/tracefs.py) in
    every process, with cookie as the program's bpf_get_attach_cookie(). before_link runs
    once the event traps (and counts its hits) but before the program runs on it: a
    take-over closes the old probe there, so every call is either the old program's or a
    hit of the new event, never neither and never both."""
    attr = _PerfEventAttr(type=_PERF_TYPE_TRACEPOINT, size=_PERF_ATTR_SIZE_VER5, config=event_id,
                          sample_period=1)
    # pid -1 with cpu 0: the program is attached to the event itself and runs on every
    # CPU and in every process; the CPU only places the (unused) perf buffer.
    perf_fd = _libc.syscall(_syscall_number("perf_event_open"), ctypes.byref(attr), -1, 0, -1,
                            _PERF_FLAG_FD_CLOEXEC)
    if perf_fd < 0:
        code = ctypes.get_errno()
        raise ProbeError(f"perf_event_open({what}) failed: {errno.errorcode.get(code, code)} {os.strerror(code)}")
    link = _LinkCreateAttr(prog_fd=prog_fd, target_fd=perf_fd, attach_type=_BPF_PERF_EVENT, bpf_cookie=cookie)
    try:
        if before_link is not None:
            fcntl.ioctl(perf_fd, _PERF_EVENT_IOC_ENABLE, 0)
            before_link()
        link_fd = _bpf(_BPF_LINK_CREATE, link)
        fcntl.ioctl(perf_fd, _PERF_EVENT_IOC_ENABLE, 0)
    except OSError as exc:
        os.close(perf_fd)
        hint = " (BPF cookies on uprobes need Linux 5.15+)" if exc.errno in (errno.EINVAL, errno.ENOTSUP) else ""
        raise ProbeError(f"linking the program to {what} failed: {exc}{hint}") from exc
    return UprobeLink(perf_fd, link_fd)


class _ObjAttr(ctypes.Structure):
    # union bpf_attr, the BPF_OBJ_PIN / BPF_OBJ_GET member.
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


def pin(fd: int, path: Path) -> None:
    """Pin a map or link in bpffs: it outlives this process until the file is removed."""
    name = ctypes.create_string_buffer(str(path).encode())
    attr = _ObjAttr(pathname=ctypes.cast(name, ctypes.c_void_p).value or 0, bpf_fd=fd)
    try:
        _bpf(_BPF_OBJ_PIN, attr)
    except OSError as exc:
        raise BpfLoadError(f"pinning at {path} failed: {exc.strerror} (is bpffs mounted at {path.parents[-2]}?)") \
            from exc


def pinned(path: Path) -> int:
    """A new fd on what is pinned at path (map or link)."""
    name = ctypes.create_string_buffer(str(path).encode())
    attr = _ObjAttr(pathname=ctypes.cast(name, ctypes.c_void_p).value or 0)
    try:
        return _bpf(_BPF_OBJ_GET, attr)
    except OSError as exc:
        raise BpfLoadError(f"opening the pinned object {path} failed: {exc.strerror}") from exc


class _MapElemAttr(ctypes.Structure):
    # union bpf_attr, the BPF_MAP_*_ELEM / BPF_MAP_GET_NEXT_KEY member.
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def map_u32_keys(fd: int, limit: int = 1 << 16) -> list[int]:
    """The keys of a hash map keyed by u32 (at most limit of them)."""
    key, next_key = ctypes.c_uint32(0), ctypes.c_uint32(0)
    attr = _MapElemAttr(map_fd=fd, key=0, value=ctypes.addressof(next_key))  # key 0 (NULL): the first
    keys: list[int] = []
    while len(keys) < limit:
        try:
            _bpf(_BPF_MAP_GET_NEXT_KEY, attr)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                break
            raise
        keys.append(next_key.value)
        key.value = next_key.value
        attr.key = ctypes.addressof(key)
    return keys


def map_u32_u64_value(fd: int, key: int) -> int | None:
    """The u64 value at a u32 key of a map; None when the key is not there."""
    key_value, value = ctypes.c_uint32(key), ctypes.c_uint64(0)
    attr = _MapElemAttr(map_fd=fd, key=ctypes.addressof(key_value), value=ctypes.addressof(value))
    try:
        _bpf(_BPF_MAP_LOOKUP_ELEM, attr)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return value.value


def bpffs_mounted(directory: Path = Path("/sys/fs/bpf")) -> bool:
    """Whether a BPF filesystem is mounted at directory (pins can only live there)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(len(f) > 2 and f[1] == str(directory) and f[2] == "bpf" for f in (line.split() for line in mounts))


def enable_run_time_stats() -> int | None:
    """Turn on the kernel's BPF run-time accounting for as long as the returned fd is
    open (BPF_ENABLE_STATS; unlike the kernel.bpf_stats_enabled sysctl, it reverts by
    itself when the agent exits). None when the kernel refuses (older than 5.8)."""

    class _StatsAttr(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32), ("padding", ctypes.c_uint8 * 60)]

    try:
        return _bpf(_BPF_ENABLE_STATS, _StatsAttr(type=_BPF_STATS_RUN_TIME))
    except OSError:
        return None


@dataclass(frozen=True)
class ProgramStats:
    """A loaded program's kernel figures: run_time_ns and run_count need BPF stats on;
    recursion_misses counts calls the kernel skipped because a BPF program was already
    running on that CPU (those calls never reached the program, so it cannot count them)."""

    run_time_ns: int = 0
    run_count: int = 0
    recursion_misses: int = 0


def program_stats(prog_fd: int) -> ProgramStats:
    fields = _fdinfo(prog_fd)
    return ProgramStats(run_time_ns=fields.get("run_time_ns", 0), run_count=fields.get("run_cnt", 0),
                        recursion_misses=fields.get("recursion_misses", 0))


def map_memlock_bytes(map_fd: int) -> int:
    """Kernel memory charged to a BPF map (its fdinfo memlock line)."""
    return _fdinfo(map_fd).get("memlock", 0)


def _fdinfo(fd: int) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, value = line.partition(":")
        try:
            values[name.strip()] = int(value.strip())
        except ValueError:
            continue
    return values
