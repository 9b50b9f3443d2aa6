"""User-space views of the structs in bpf/calltrace.h: the ring-buffer record (which is
also the dedup map's value), the dedup key, and the per-probe config.

bcc cannot derive a ctypes class from kernel typedefs such as __u64, so these are
hand-written copies; tests/agent/test_wire.py compiles the C header and checks every
field's offset and each struct's size against them, so they cannot drift silently.
"""

from __future__ import annotations

import ctypes
from functools import cache

DEFAULT_MAX_FRAMES = 64

# Order of enum calltrace_counter in bpf/calltrace.h.
COUNTER_NAMES: tuple[str, ...] = (
    "calls", "folded", "sent", "drop_ringbuf_full", "drop_rate_limited", "drop_nested", "dedup_full",
    "stack_error",
)
FLAG_STACK_TRUNCATED = 1 << 0
FLAG_STACK_ERROR = 1 << 1
# The kernel's walk held the caller already (newer kernels at a `push %rbp` entry); the
# BPF program dropped the copy, so the frames need nothing more: for statistics and tests.
FLAG_KERNEL_ADDED_CALLER = 1 << 2


@cache
def call_event_type(max_frames: int = DEFAULT_MAX_FRAMES) -> type[ctypes.Structure]:
    """struct call_event for a program built with -DCALLTRACE_MAX_FRAMES=max_frames."""

    class CallEvent(ctypes.Structure):
        _fields_ = [
            ("boot_ns", ctypes.c_uint64),
            ("last_boot_ns", ctypes.c_uint64),
            ("count", ctypes.c_uint64),
            ("stack_hash", ctypes.c_uint64),
            ("cgroup_id", ctypes.c_uint64),
            ("function_address", ctypes.c_uint64),
            ("pid", ctypes.c_uint32),
            ("tid", ctypes.c_uint32),
            ("frame_count", ctypes.c_uint32),
            ("flags", ctypes.c_uint32),
            ("probe_index", ctypes.c_uint32),
            ("reserved", ctypes.c_uint32),
            ("frames", ctypes.c_uint64 * max_frames),
        ]

    CallEvent.__name__ = f"CallEvent{max_frames}"
    return CallEvent


class DedupKey(ctypes.Structure):
    """struct dedup_key."""

    _fields_ = [
        ("stack_hash", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("probe_index", ctypes.c_uint32),
    ]


class ProbeConfig(ctypes.Structure):
    """struct probe_config."""

    _fields_ = [
        ("rate_interval_ns", ctypes.c_uint64),
        ("rate_burst_ns", ctypes.c_uint64),
        ("dedup", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class RateState(ctypes.Structure):
    """struct rate_state."""

    _fields_ = [
        ("credit_ns", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
    ]
