"""User-space views of the structs in bpf/pyfunc.h (checked against the header by
tests/agent/test_pywire.py, which compiles it)."""

from __future__ import annotations

import ctypes
from functools import cache

DEFAULT_MAX_FRAMES = 64
NAME_BYTES = 64
FILE_BYTES = 256

# Order of enum pyfunc_counter and enum pyfunc_global_counter in bpf/pyfunc.h.
COUNTER_NAMES: tuple[str, ...] = ("calls", "sent", "drop_ringbuf_full", "drop_rate_limited", "drop_disabled")
GLOBAL_COUNTER_NAMES: tuple[str, ...] = ("entries", "returns", "unmatched_returns", "threads_untracked")
FLAG_TRUNCATED = 1 << 0
FLAG_UNSURE = 1 << 1
FLAG_WALKED = 1 << 2  # frames walked from the thread state, innermost first
SITE_ENTRY = 1
SITE_RETURN = 2
SITE_FIRES_PROBES = 1 << 0
SITE_TRACKS_STACK = 1 << 1


class UsdtArgC(ctypes.Structure):
    _fields_ = [("value", ctypes.c_int64), ("reg_offset", ctypes.c_uint32), ("kind", ctypes.c_uint8),
                ("size_bytes", ctypes.c_uint8), ("is_signed", ctypes.c_uint8), ("reserved", ctypes.c_uint8)]


class PyfuncSite(ctypes.Structure):
    _fields_ = [("args", UsdtArgC * 3), ("kind", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class PyfuncProbe(ctypes.Structure):
    _fields_ = [("funcname", ctypes.c_char * NAME_BYTES), ("file_suffix", ctypes.c_char * FILE_BYTES),
                ("rate_interval_ns", ctypes.c_uint64), ("rate_burst_ns", ctypes.c_uint64),
                ("funcname_len", ctypes.c_uint32), ("file_suffix_len", ctypes.c_uint32),
                ("enabled", ctypes.c_uint32), ("active", ctypes.c_uint32)]


class PyFrameC(ctypes.Structure):
    _fields_ = [("filename_ptr", ctypes.c_uint64), ("funcname_ptr", ctypes.c_uint64),
                ("lineno", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


@cache
def py_call_event_type(max_frames: int = DEFAULT_MAX_FRAMES) -> type[ctypes.Structure]:
    """struct py_call_event for a program built with -DPYFUNC_MAX_FRAMES=max_frames."""

    class PyCallEvent(ctypes.Structure):
        _fields_ = [("boot_ns", ctypes.c_uint64), ("cgroup_id", ctypes.c_uint64), ("pid", ctypes.c_uint32),
                    ("tid", ctypes.c_uint32), ("probe_index", ctypes.c_uint32), ("frame_count", ctypes.c_uint32),
                    ("flags", ctypes.c_uint32), ("lineno", ctypes.c_uint32),
                    ("funcname", ctypes.c_char * NAME_BYTES), ("filename", ctypes.c_char * FILE_BYTES),
                    ("frames", PyFrameC * max_frames)]

    PyCallEvent.__name__ = f"PyCallEvent{max_frames}"
    return PyCallEvent


@cache
def thread_stack_type(max_frames: int = DEFAULT_MAX_FRAMES) -> type[ctypes.Structure]:
    class ThreadStack(ctypes.Structure):
        _fields_ = [("depth", ctypes.c_uint32), ("valid_from", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                    ("initialized", ctypes.c_uint32), ("frames", PyFrameC * max_frames)]

    return ThreadStack
