"""User-space view of `struct call_event` (bpf/calltrace.h), the ring-buffer record.

bcc cannot derive a ctypes class from kernel typedefs such as __u64, so this is a
hand-written copy; tests/agent/test_wire.py compiles the C header and checks every
field's offset and the struct's size against it, so the two cannot drift silently.
"""

from __future__ import annotations

import ctypes
from functools import cache

DEFAULT_MAX_FRAMES = 64


@cache
def call_event_type(max_frames: int = DEFAULT_MAX_FRAMES) -> type[ctypes.Structure]:
    """The ctypes struct for a program built with -DCALLTRACE_MAX_FRAMES=max_frames."""

    class CallEvent(ctypes.Structure):
        _fields_ = [
            ("boot_ns", ctypes.c_uint64),
            ("cgroup_id", ctypes.c_uint64),
            ("function_address", ctypes.c_uint64),
            ("pid", ctypes.c_uint32),
            ("tid", ctypes.c_uint32),
            ("frame_count", ctypes.c_uint32),
            ("flags", ctypes.c_uint32),
            ("frames", ctypes.c_uint64 * max_frames),
        ]

    CallEvent.__name__ = f"CallEvent{max_frames}"
    return CallEvent
