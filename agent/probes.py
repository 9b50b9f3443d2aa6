"""Load the calltrace BPF program, attach it to probe targets, and read what it sends.

bcc compiles bpf/calltrace.bpf.c at start-up against the node's kernel headers; the
program is configured with -D cflags only (no C assembled in Python strings).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Callable

import bpf as bpf_sources

from .errors import BpfLoadError, ConfigError, ProbeError
from .wire import call_event_type

log = logging.getLogger(__name__)

# Order of enum calltrace_counter in bpf/calltrace.h.
COUNTER_NAMES: tuple[str, ...] = ("calls", "drop_ringbuf_full", "stack_error")
FLAG_STACK_TRUNCATED = 1 << 0
FLAG_STACK_ERROR = 1 << 1


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """What to probe: a binary (path, or library name such as "c") and a symbol in it."""

    binary: str
    symbol: str

    @classmethod
    def parse(cls, text: str) -> "ProbeSpec":
        """Parse "BINARY:SYMBOL"; the last ':' splits, so paths may contain ':'."""
        binary, sep, symbol = text.rpartition(":")
        if not sep or not binary or not symbol:
            raise ConfigError(f"--probe {text!r}: expected BINARY:SYMBOL, e.g. /usr/bin/app:handle_request")
        return cls(binary, symbol)

    @property
    def probe_id(self) -> str:
        return f"{self.binary}:{self.symbol}"


@dataclass(frozen=True, slots=True)
class AttachedProbe:
    """A probe that is in place: where bcc found the binary, and the symbol's file offset."""

    spec: ProbeSpec
    path: str
    file_offset: int


@dataclass(frozen=True, slots=True)
class RawCall:
    """One ring-buffer record, copied out of the kernel's memory."""

    boot_ns: int
    cgroup_id: int
    function_address: int
    pid: int
    tid: int
    flags: int
    frames: tuple[int, ...]  # innermost first, as the kernel walked them


def _import_bcc():  # type: ignore[no-untyped-def]
    try:
        import bcc  # Debian's python3-bpfcc; see scripts/bootstrap.sh
    except ImportError as exc:
        raise BpfLoadError(
            "the bcc Python module is not importable: install Debian's python3-bpfcc "
            "(scripts/bootstrap.sh does) and run with a Python that sees it"
        ) from exc
    return bcc


class CallTracer:
    """The loaded BPF program: attach probes, poll events, read counters."""

    def __init__(self, ringbuf_pages: int = 1024, max_frames: int = 64) -> None:
        if ringbuf_pages <= 0 or ringbuf_pages & (ringbuf_pages - 1):
            raise ConfigError(f"ringbuf_pages={ringbuf_pages}: must be a power of two")
        if not 2 <= max_frames <= 127:
            raise ConfigError(f"max_frames={max_frames}: must be between 2 and 127")
        bcc = _import_bcc()
        self._bcc = bcc
        cflags = [
            f"-I{bpf_sources.SOURCE_DIR}",
            f"-DRINGBUF_PAGES={ringbuf_pages}",
            f"-DCALLTRACE_MAX_FRAMES={max_frames}",
        ]
        try:
            self._bpf = bcc.BPF(src_file=str(bpf_sources.CALLTRACE_SOURCE).encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise BpfLoadError(f"loading {bpf_sources.CALLTRACE_SOURCE}: {exc}") from exc
        self.ringbuf_bytes = ringbuf_pages * 4096
        self.max_frames = max_frames
        self._events = self._bpf["events"]
        self._counters = self._bpf["counters"]
        self._callback: Callable[[RawCall], None] | None = None
        self.attached: list[AttachedProbe] = []

    def attach(self, spec: ProbeSpec) -> AttachedProbe:
        """Attach the handler at the entry of spec.symbol in spec.binary (all processes)."""
        try:
            path, file_offset = self._bcc.BPF._check_path_symbol(
                spec.binary.encode(), spec.symbol.encode(), None, -1
            )
        except Exception as exc:
            raise ProbeError(f"probe {spec.probe_id}: {self._explain(spec, exc)}") from exc
        try:
            self._bpf.attach_uprobe(name=path, sym=spec.symbol.encode(), fn_name=b"on_call")
        except Exception as exc:
            raise ProbeError(f"probe {spec.probe_id}: attaching the uprobe failed: {exc}") from exc
        attached = AttachedProbe(spec, path.decode(), file_offset)
        self.attached.append(attached)
        log.info("attached probe %s at %s+0x%x", spec.probe_id, attached.path, file_offset)
        return attached

    def _explain(self, spec: ProbeSpec, exc: Exception) -> str:
        found = self._bcc.BPF.find_library(spec.binary.encode()) if "/" not in spec.binary else spec.binary
        if "/" in spec.binary:
            import os

            if not os.path.exists(spec.binary):
                return f"binary {spec.binary} does not exist"
        elif not found:
            return f"library {spec.binary!r} not found in the linker cache"
        return f"symbol {spec.symbol!r} not found in {spec.binary} ({exc})"

    def on_event(self, callback: Callable[[RawCall], None]) -> None:
        """Route each ring-buffer record to callback(RawCall)."""
        self._callback = callback
        pointer_type = ctypes.POINTER(call_event_type(self.max_frames))

        def _handle(_ctx: object, data: ctypes.c_void_p, _size: int) -> int:
            raw = ctypes.cast(data, pointer_type).contents
            count = min(raw.frame_count, self.max_frames)
            callback(RawCall(
                boot_ns=raw.boot_ns,
                cgroup_id=raw.cgroup_id,
                function_address=raw.function_address,
                pid=raw.pid,
                tid=raw.tid,
                flags=raw.flags,
                frames=tuple(raw.frames[:count]),
            ))
            return 0

        self._events.open_ring_buffer(_handle)

    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for records and deliver them to the callback."""
        self._bpf.ring_buffer_poll(timeout_ms)

    def drain(self) -> None:
        """Deliver every record already in the ring buffer, without waiting."""
        self._bpf.ring_buffer_consume()

    def counters(self) -> dict[str, int]:
        """The kernel's counters summed over CPUs (see enum calltrace_counter)."""
        totals = {}
        for index, name in enumerate(COUNTER_NAMES):
            per_cpu = self._counters[ctypes.c_int(index)]
            totals[name] = int(sum(per_cpu))
        return totals

    def close(self) -> None:
        self._bpf.cleanup()
