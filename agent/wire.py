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
# The process had no mapping table yet: frame pointers, return addresses unchecked (the
# agent checks them against /proc/<pid>/maps).
FLAG_UNCHECKED = 1 << 2
# Some frame was walked by frame pointers (its binary had no rules loaded).
FLAG_FRAME_POINTERS = 1 << 3

# enum stack_end, by value: why a walk stopped; None for a complete walk. The names are
# what RuntimeCallEvent.truncation_reason carries.
STACK_END_COMPLETE = 0
STACK_END_DEPTH_LIMIT = 1
STACK_END_NO_UNWIND_INFO = 2
STACK_END_NOT_EXECUTABLE = 3
STACK_END_READ_FAULT = 4
STACK_END_NAMES: tuple[str | None, ...] = (None, "depth_limit", "no_unwind_info", "not_executable", "read_fault")

# enum unwind_cfa and enum unwind_rbp.
UNWIND_CFA_NONE, UNWIND_CFA_RSP, UNWIND_CFA_RBP, UNWIND_CFA_UNSUPPORTED, UNWIND_CFA_END = range(5)
UNWIND_RBP_SAME, UNWIND_RBP_AT_CFA, UNWIND_RBP_UNKNOWN = range(3)
DEFAULT_MAX_MAPPINGS = 256


# Python frames (calltrace.h, "Python frames").
PY_MAX_FRAMES = 32
PY_NAME_BYTES = 128
PY_FILE_BYTES = 256
PY_FRAME_WINDOW = 128
PY_FLAG_WALKED = 1 << 0
PY_FLAG_TRUNCATED = 1 << 1
PY_FLAG_NO_THREAD = 1 << 2
PY_FLAG_READ_FAULT = 1 << 3
PY_ENTRY_EVERY_FRAME, PY_ENTRY_IS_ENTRY, PY_ENTRY_SHIM = range(3)
PY_CODE_NAME_UNREAD = 1 << 0
PY_CODE_FILE_UNREAD = 1 << 1
PY_CODE_NOT_CODE = 1 << 2


class PyFrameRef(ctypes.Structure):
    """struct py_frame_ref."""

    _fields_ = [
        ("code", ctypes.c_uint64),
        ("name", ctypes.c_uint64),
    ]


class PythonProcess(ctypes.Structure):
    """struct python_process."""

    _fields_ = [
        ("runtime", ctypes.c_uint64),
        ("code_type", ctypes.c_uint64),
        ("interpreters_head", ctypes.c_uint32),
        ("threads_head", ctypes.c_uint32),
        ("thread_next", ctypes.c_uint32),
        ("thread_tid", ctypes.c_uint32),
        ("pthread_tid", ctypes.c_int32),
        ("thread_frame", ctypes.c_uint32),
        ("cframe_frame", ctypes.c_int32),
        ("frame_previous", ctypes.c_uint32),
        ("frame_code", ctypes.c_uint32),
        ("frame_owner", ctypes.c_int32),
        ("frame_is_entry", ctypes.c_int32),
        ("entry_rule", ctypes.c_uint32),
        ("code_filename", ctypes.c_uint32),
        ("code_name", ctypes.c_uint32),
        ("code_firstlineno", ctypes.c_uint32),
        ("string_data", ctypes.c_uint32),
        ("string_state", ctypes.c_uint32),
        ("frame_window", ctypes.c_uint32),
    ]


class PyCodeKey(ctypes.Structure):
    """struct py_code_key."""

    _fields_ = [
        ("code", ctypes.c_uint64),
        ("name", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class PyCode(ctypes.Structure):
    """struct py_code."""

    _fields_ = [
        ("firstlineno", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("name", ctypes.c_char * PY_NAME_BYTES),
        ("filename", ctypes.c_char * PY_FILE_BYTES),
    ]


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
            ("end_reason", ctypes.c_uint32),
            ("frames", ctypes.c_uint64 * max_frames),
            ("py_frame_count", ctypes.c_uint32),
            ("py_flags", ctypes.c_uint32),
            ("py_entries", ctypes.c_uint32),
            ("py_reserved", ctypes.c_uint32),
            ("py_frames", PyFrameRef * PY_MAX_FRAMES),
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
        ("retired", ctypes.c_uint32),
    ]


class RateState(ctypes.Structure):
    """struct rate_state."""

    _fields_ = [
        ("credit_ns", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
    ]


class UnwindRow(ctypes.Structure):
    """struct unwind_row."""

    _fields_ = [
        ("address", ctypes.c_uint32),
        ("cfa_offset", ctypes.c_int32),
        ("rbp_offset", ctypes.c_int16),
        ("cfa_register", ctypes.c_uint8),
        ("rbp_rule", ctypes.c_uint8),
    ]


class UnwindTable(ctypes.Structure):
    """struct unwind_table."""

    _fields_ = [
        ("first_row", ctypes.c_uint32),
        ("row_count", ctypes.c_uint32),
        ("index_shift", ctypes.c_uint32),
        ("index_count", ctypes.c_uint32),
    ]


class ExecMapping(ctypes.Structure):
    """struct exec_mapping."""

    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("bias", ctypes.c_uint64),
        ("table_id", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


@cache
def process_mappings_type(max_mappings: int = DEFAULT_MAX_MAPPINGS) -> type[ctypes.Structure]:
    """struct process_mappings for a program built with -DCALLTRACE_MAX_MAPPINGS=max_mappings."""

    class ProcessMappings(ctypes.Structure):
        _fields_ = [
            ("count", ctypes.c_uint32),
            ("reserved", ctypes.c_uint32),
            ("mappings", ExecMapping * max_mappings),
        ]

    ProcessMappings.__name__ = f"ProcessMappings{max_mappings}"
    return ProcessMappings
