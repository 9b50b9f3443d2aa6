"""Load the calltrace BPF program, attach it to probe targets, and read what it sends.

bcc compiles bpf/calltrace.bpf.c at start-up against the node's kernel headers. Sizes
are -D cflags; behaviour (dedup, rate limits) is per probe in the probe_config map, so
it changes without recompiling. Probes are tracefs uprobe events (agent/tracefs.py, for
the kernel's exact hit counts) with the program linked through a BPF cookie
(agent/bpfsys.py): the cookie is the probe's index in the program's per-probe maps, and
detaching or re-arming one probe touches no other.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import platform
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_signals import bpf as bpf_sources
from runtime_signals.agent import bpfsys
from runtime_signals.agent.errors import BpfLoadError, ConfigError, ProbeError
from runtime_signals.agent.pinning import PINNED_MAPS, PinnedGeneration, remove_pins
from runtime_signals.agent.ringbuf import RingReader
from runtime_signals.agent.tracefs import UprobeEvents
from runtime_signals.agent.wire import (
    COUNTER_NAMES,
    FLAG_STACK_ERROR,
    FLAG_STACK_TRUNCATED,
    PY_MAX_FRAMES,
    DedupKey,
    ProbeConfig,
    call_event_type,
)

log = logging.getLogger(__name__)

__all__ = ["COUNTER_NAMES", "FLAG_STACK_ERROR", "FLAG_STACK_TRUNCATED", "AttachedProbe", "CallTracer",
           "ProbeLimits", "ProbeSpec", "RawCall", "TracerSettings", "split_points"]

_PAGE_BYTES = mmap.PAGESIZE
# struct call_event (agent/wire.py, call_event_type): boot_ns … end_reason, then the frames;
# after them py_frame_count, py_flags, py_entries, py_reserved, then the Python frames.
_CALL_HEAD = struct.Struct("<QQQQQQIIIIII")
_PY_HEAD = struct.Struct("<IIII")
_PY_FRAME_BYTES = 16
# The agent reads the ring buffer's memory itself (agent/ringbuf.py) where the CPU keeps loads
# in order with loads and stores with stores (x86-64), which is what the ring's protocol asks
# of a reader (an acquire on a record's header, a release of the consumer position) and what
# Python cannot ask for otherwise. Elsewhere (arm64) libbpf's reader, through bcc, does it.
READ_RING_DIRECTLY = platform.machine() in ("x86_64", "AMD64")
# Where a call record is read from: the ring's memory, a record libbpf hands over, a Structure.
_CallBuffer = mmap.mmap | ctypes.Array[ctypes.c_char] | ctypes.Structure
_DEDUP_READ_CHUNK = 1024
_MAP_NAMES = (b"events", b"counters", b"probe_config", b"rate_state", b"scratch", b"nesting",
              b"dedup_a", b"dedup_b", b"dedup_active", b"unwind_rows", b"unwind_tables", b"proc_mappings",
              b"announced", b"python_processes", b"py_codes", b"py_code_scratch")


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """What to probe: a binary (path, or library name such as "c") and a symbol in it; with
    file_offset, that place of the binary instead of the symbol's entry (an inlined copy of
    the function, agent/inlined.py)."""

    binary: str
    symbol: str
    file_offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> ProbeSpec:
        """Parse "BINARY:SYMBOL". BINARY is a path or a library name; SYMBOL may be a
        demangled C++ or Rust name ("imgproc::Parser::parse", "mycrate::a::b") or a Go
        name ("golang.org/x/net/html.Parse"). The split is at the first lone ':' (one that
        is not part of a "::"); a path that itself holds a lone ':' is split after it when
        the part before it names an existing file."""
        candidates = split_points(text)
        if not candidates:
            raise ConfigError(f"--probe {text!r}: expected BINARY:SYMBOL, e.g. /usr/bin/app:handle_request "
                              "or /app/server:imgproc::Parser::parse")
        index = candidates[0]
        if text.startswith("/") and len(candidates) > 1:
            # "/srv/a:b/server:f": prefer the split whose binary part exists here.
            index = next((i for i in candidates if os.path.isfile(text[:i])), index)
        binary, symbol = text[:index], text[index + 1:]
        if not binary or not symbol:
            raise ConfigError(f"--probe {text!r}: expected BINARY:SYMBOL with both parts non-empty")
        return cls(binary, symbol)

    @property
    def probe_id(self) -> str:
        return f"{self.binary}:{self.symbol}"


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """How much one probe may cost. rate_per_cpu_s: stack captures per second per CPU
    (0 = unlimited); calls above it are counted as drop_rate_limited. burst: captures
    allowed at once after a quiet spell. dedup: fold identical calls in the kernel."""

    dedup: bool = True
    rate_per_cpu_s: int = 0
    burst: int = 1000

    def config(self) -> ProbeConfig:
        if self.rate_per_cpu_s < 0 or self.burst < 1:
            raise ConfigError(f"rate limit {self.rate_per_cpu_s}/s burst {self.burst}: "
                              "the rate must be >= 0 and the burst >= 1")
        interval_ns = 1_000_000_000 // self.rate_per_cpu_s if self.rate_per_cpu_s else 0
        return ProbeConfig(rate_interval_ns=interval_ns, rate_burst_ns=interval_ns * self.burst,
                           dedup=int(self.dedup))


@dataclass(frozen=True, slots=True)
class TracerSettings:
    """Sizes compiled into the program (-D cflags)."""

    ringbuf_pages: int = 1024
    max_frames: int = 64
    max_probes: int = 1024
    dedup_entries: int = 16384
    # Unwinding (bpf/calltrace.h): rows shared by all binaries' rules (12 bytes each,
    # preallocated), binaries they can hold, processes with a mapping table, executable
    # mappings per process. Rows and mappings are powers of two (the searches mask).
    unwind_rows: int = 1 << 21
    unwind_tables: int = 4096
    max_processes: int = 4096
    max_mappings: int = 256
    # Not compiled in: how long a retired probe's slot rests, its uprobe gone, before another
    # probe may take it. Longer than any record of its calls waits in the agent (a dedup
    # flush, the collector's parked records: MAX_PARKED_NS), so none is named after the next.
    slot_reuse_after_s: float = 60.0

    def cflags(self) -> list[str]:
        if self.ringbuf_pages <= 0 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ConfigError(f"ringbuf_pages={self.ringbuf_pages}: must be a power of two")
        if not 2 <= self.max_frames <= 127:
            raise ConfigError(f"max_frames={self.max_frames}: must be between 2 and 127")
        if self.max_probes < 1 or self.dedup_entries < 1:
            raise ConfigError(f"max_probes={self.max_probes}, dedup_entries={self.dedup_entries}: must be >= 1")
        for name in ("unwind_rows", "max_mappings"):
            value = getattr(self, name)
            if value < 2 or value & (value - 1):
                raise ConfigError(f"{name}={value}: must be a power of two >= 2")
        if self.unwind_rows > 1 << 31 or self.unwind_tables < 2 or self.max_processes < 1:
            raise ConfigError(f"unwind_rows={self.unwind_rows}, unwind_tables={self.unwind_tables}, "
                              f"max_processes={self.max_processes}: rows <= 2^31, tables >= 2, processes >= 1")
        return [f"-I{bpf_sources.SOURCE_DIR}", f"-DRINGBUF_PAGES={self.ringbuf_pages}",
                f"-DCALLTRACE_MAX_FRAMES={self.max_frames}", f"-DCALLTRACE_MAX_PROBES={self.max_probes}",
                f"-DDEDUP_ENTRIES={self.dedup_entries}", f"-DCALLTRACE_UNWIND_ROWS={self.unwind_rows}",
                f"-DCALLTRACE_UNWIND_TABLES={self.unwind_tables}",
                f"-DCALLTRACE_MAX_PROCESSES={self.max_processes}",
                f"-DCALLTRACE_MAX_MAPPINGS={self.max_mappings}",
                # A search over n entries needs ceil(log2 n) + 1 steps (bit_length of n).
                f"-DMAPPING_SEARCH_STEPS={self.max_mappings.bit_length()}",
                f"-DROW_SEARCH_STEPS={self.unwind_rows.bit_length()}"]


@dataclass(frozen=True, slots=True)
class AttachedProbe:
    """A probe the program serves: where bcc found the binary, the symbol's file offset,
    and the probe's index (its BPF cookie)."""

    spec: ProbeSpec
    path: str
    file_offset: int
    index: int = 0


@dataclass(frozen=True, slots=True)
class RawCall:
    """One record from the kernel: a single call (count 1) or identical calls folded."""

    boot_ns: int  # first call
    cgroup_id: int
    function_address: int
    pid: int
    tid: int
    flags: int
    frames: tuple[int, ...]  # innermost first, as the kernel walked them
    count: int = 1
    last_boot_ns: int = 0
    probe_index: int = 0
    end_reason: int = 0  # enum stack_end (wire.STACK_END_*)
    # The thread's Python frames, innermost first: (code object, name object) addresses.
    py_frames: tuple[tuple[int, int], ...] = ()
    py_flags: int = 0  # wire.PY_FLAG_*
    py_entries: int = 0  # bit i: py_frames[i] is the outermost of its evaluation loop call


def split_points(text: str) -> list[int]:
    """Indexes of the ':' in text that can separate BINARY from SYMBOL: each lone ':' and,
    in a run of an odd number of colons ("f:::g"), its first one; the pairs of a run are
    a symbol's "::"."""
    points = []
    index = 0
    while index < len(text):
        if text[index] != ":":
            index += 1
            continue
        end = index
        while end < len(text) and text[end] == ":":
            end += 1
        if (end - index) % 2 == 1:
            points.append(index)
        index = end
    return points


def import_bcc() -> Any:
    """Debian's bcc module (python3-bpfcc), or a BpfLoadError that says how to get it."""
    try:
        import bcc  # Debian's python3-bpfcc; see scripts/bootstrap.sh
    except ImportError as exc:
        raise BpfLoadError(
            "the bcc Python module is not importable: install Debian's python3-bpfcc "
            "(scripts/bootstrap.sh does) and run with a Python that sees it"
        ) from exc
    return bcc


class CallTracer:
    """The loaded BPF program: attach/detach probes, collect calls, read counters."""

    def __init__(self, settings: TracerSettings | None = None, *, ringbuf_pages: int | None = None,
                 max_frames: int | None = None) -> None:
        settings = settings or TracerSettings()
        if ringbuf_pages is not None or max_frames is not None:  # the skeleton's keyword form
            settings = TracerSettings(ringbuf_pages=ringbuf_pages or settings.ringbuf_pages,
                                      max_frames=max_frames or settings.max_frames,
                                      max_probes=settings.max_probes, dedup_entries=settings.dedup_entries)
        cflags = settings.cflags()
        bcc = import_bcc()
        self._bcc = bcc
        self._lib = bcc.libbcc.lib
        try:
            self._bpf = bcc.BPF(src_file=str(bpf_sources.CALLTRACE_SOURCE).encode(), cflags=cflags)
            self._prog_fd: int = self._bpf.load_func(b"on_call", bcc.BPF.KPROBE).fd
            # The Python walk, tail-called by on_call for processes with an interpreter described.
            self._python_walker_fd: int = self._bpf.load_func(b"walk_python_frames", bcc.BPF.KPROBE).fd
            self._bpf[b"python_walker"][ctypes.c_int(0)] = ctypes.c_int(self._python_walker_fd)
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise BpfLoadError(f"loading {bpf_sources.CALLTRACE_SOURCE}: {exc}") from exc
        self.settings = settings
        self.ringbuf_bytes = settings.ringbuf_pages * _PAGE_BYTES
        self.max_frames = settings.max_frames
        self._event_type = call_event_type(settings.max_frames)
        self._events = self._bpf["events"]
        self._counters = self._bpf["counters"]
        self._config_fd = self._bpf["probe_config"].get_fd()
        self._dedup_fds = (self._bpf["dedup_a"].get_fd(), self._bpf["dedup_b"].get_fd())
        self._active = 0
        self._set_active_dedup(0)
        self._ringbuf_positions = self._map_ringbuf_positions()
        self._reader: RingReader | None = None  # made by on_event()
        # struct call_event as laid out by ctypes (agent/wire.py): read with struct, not ctypes.
        event_type = self._event_type
        if _CALL_HEAD.size != event_type.frames.offset:
            raise BpfLoadError(f"struct call_event: frames at {event_type.frames.offset}, "
                               f"expected {_CALL_HEAD.size}")
        self._py_head_at: int = event_type.py_frame_count.offset
        self._py_frames_at: int = event_type.py_frames.offset
        self._frame_runs = [struct.Struct(f"<{n}Q") for n in range(max(settings.max_frames, 2 * PY_MAX_FRAMES) + 1)]
        self._stats_fd = bpfsys.enable_run_time_stats()
        self._uprobes = UprobeEvents()
        self._event_ids: dict[int, int] = {}
        self._callback: Callable[[RawCall], None] | None = None
        self.default_limits = ProbeLimits()  # for attach() without limits
        self._lock = threading.RLock()  # the target scanner attaches while the pump detaches
        self.attached: list[AttachedProbe] = []
        self._links: dict[int, bpfsys.UprobeLink | None] = {}
        self._retired: set[int] = set()
        self._closing: deque[tuple[int, bpfsys.UprobeLink]] = deque()  # (index, link) retired, not yet closed
        self._closer: threading.Thread | None = None
        self._closing_now: int | None = None  # the probe whose uprobe the closer is closing
        # Slots of retired probes, their uprobes and tracefs events gone: (slot, free from
        # monotonic ns, free from this many collects). attach() takes the oldest ready one.
        self._free: deque[tuple[int, int, int]] = deque()
        self._collects = 0
        self._final_hits: dict[int, int] = {}  # a retired probe's hits, read before its event went
        # A reused slot's kernel counters go on from its earlier probes' figures: theirs at the
        # moment it was taken (subtracted, so each probe's figures are its own) and their sum
        # over every slot (added to the totals, which therefore never go back).
        self._offsets: dict[int, dict[str, int]] = {}
        self._vacated: dict[str, int] = dict.fromkeys((*COUNTER_NAMES, "hits"), 0)
        self._closed = threading.Condition(self._lock)
        self._pin_dir: Path | None = None
        # An earlier agent's pinned probes (agent/pinning.py), by (file, offset): each is
        # closed just before this tracer links the same function, so no call runs both.
        self._adopted: PinnedGeneration | None = None
        self._adopted_by_site: dict[tuple[str, int], int] = {}
        self._hits_before: dict[int, int] = {}  # per probe: hits counted while an old probe still ran

    # --- pinning ------------------------------------------------------------------

    def pin(self, directory: Path) -> None:
        """Pin the maps an agent restarted after a crash needs, and every probe's link from
        now on, in directory (on bpffs): the kernel keeps counting while no agent runs."""
        (directory / "links").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._pin_dir = directory  # first: unpin() then removes whatever was pinned
            for name in PINNED_MAPS:
                bpfsys.pin(self._bpf[name].get_fd(), directory / name)
            for index, link in self._links.items():
                if link is not None:
                    bpfsys.pin(link.link_fd, directory / "links" / str(index))

    @property
    def pin_dir(self) -> Path | None:
        return self._pin_dir

    def adopt(self, generation: PinnedGeneration, sites: dict[int, tuple[str, int]]) -> None:
        """Take over an earlier agent's pinned probes: sites names each old probe's (file,
        offset); attach() closes the old link of the same site right before linking."""
        with self._lock:
            self._adopted = generation
            self._adopted_by_site = {site: index for index, site in sites.items()}

    def unpin(self) -> None:
        """Remove every pin (a clean stop): the probes detach when this process lets go."""
        with self._lock:
            directory, self._pin_dir = self._pin_dir, None
        if directory is not None:
            remove_pins(directory)

    # --- probes -------------------------------------------------------------------

    def attach(self, spec: ProbeSpec, limits: ProbeLimits | None = None) -> AttachedProbe:
        """Attach the handler at the entry of spec.symbol in spec.binary (all processes)."""
        if spec.file_offset is not None:
            path, file_offset = spec.binary.encode(), spec.file_offset
        else:
            try:
                path, file_offset = self._bcc.BPF._check_path_symbol(spec.binary.encode(), spec.symbol.encode(),
                                                                     None, -1)
            except Exception as exc:
                raise ProbeError(f"probe {spec.probe_id}: {self._explain(spec, exc)}") from exc
        with self._lock:
            index = self._take_free_slot()
            if index is None:
                index = len(self.attached)
                if index >= self.settings.max_probes:
                    raise ProbeError(f"probe {spec.probe_id}: {self.settings.max_probes} probes are attached "
                                     f"already ({len(self._retired)} retired, {len(self._free)} of them with a "
                                     f"slot resting); raise max_probes")
            probe = AttachedProbe(spec, path.decode(), file_offset, index)
            self.set_limits(probe, limits or self.default_limits)
            self._event_ids[index] = self._uprobes.create(index, probe.path, file_offset)
            old = self._adopted_by_site.pop((probe.path, file_offset), None)
            generation = self._adopted
            if old is not None and generation is not None:
                # The old probe is closed once the new event counts hits: a call in between
                # is a hit without a program run, counted as probe_transition. The hits the
                # new event counted while the old program still ran are the old program's
                # calls: read just before closing it and left out, so that only the few in
                # flight between that read and the close can be counted twice (as a
                # transition), and none is missed.
                def hand_over(index: int = index, old: int = old, generation: PinnedGeneration = generation) -> None:
                    self._hits_before[index] = self._uprobes.hits().get(index, 0)
                    generation.close_link(old)
                self._links[index] = self._link(probe, before_link=hand_over)
            else:
                self._links[index] = self._link(probe)
            if index < len(self.attached):
                self.attached[index] = probe
            else:
                self.attached.append(probe)
        log.info("attached probe %s at %s+0x%x (index %d)", spec.probe_id, probe.path, file_offset, index)
        return probe

    def set_limits(self, probe: AttachedProbe, limits: ProbeLimits) -> None:
        config = limits.config()
        key = ctypes.c_uint32(probe.index)
        if probe.index in self._retired:
            return  # stays retired
        if self._lib.bpf_update_elem(self._config_fd, ctypes.byref(key), ctypes.byref(config), 0) != 0:
            raise ProbeError(f"probe {probe.spec.probe_id}: writing its config failed: "
                             f"{os.strerror(ctypes.get_errno())}")

    def is_attached(self, probe: AttachedProbe) -> bool:
        return self._holds(probe) and self._links.get(probe.index) is not None

    def is_retired(self, probe: AttachedProbe) -> bool:
        """Let go for good (retire, retire_many), or its slot serves another probe since."""
        with self._lock:
            return not self._holds(probe) or probe.index in self._retired

    def _holds(self, probe: AttachedProbe) -> bool:
        """Whether probe is its slot's probe (not one retired whose slot another probe took)."""
        return probe.index < len(self.attached) and \
            (self.attached[probe.index].path, self.attached[probe.index].file_offset) == (probe.path, probe.file_offset)

    def detach(self, probe: AttachedProbe) -> None:
        """Remove the uprobe; calls stop costing anything and stop being observed."""
        with self._lock:
            if not self._holds(probe):
                return
            link = self._links.get(probe.index)
            if link is not None:
                if self._pin_dir is not None:  # the pin holds the link too
                    (self._pin_dir / "links" / str(probe.index)).unlink(missing_ok=True)
                link.close()
                self._links[probe.index] = None

    def _take_free_slot(self) -> int | None:
        """The oldest rested slot of a retired probe, its earlier probes' figures set aside
        (call holding the lock); None when none is ready."""
        if not self._free:
            return None
        index, ready_ns, ready_collects = self._free[0]
        if time.monotonic_ns() < ready_ns or self._collects < ready_collects:
            return None
        self._free.popleft()
        final = self.probe_counters(self.attached[index])
        for name, value in final.items():
            self._vacated[name] += value
        self._offsets[index] = self._raw_counters(index)
        self._final_hits.pop(index, None)
        self._hits_before.pop(index, None)
        self._retired.discard(index)
        log.info("probe slot %d of the retired %s taken again", index, self.attached[index].spec.probe_id)
        return index

    def retire(self, probe: AttachedProbe) -> None:
        """Detach for good, now: its file changed (agent/filewatch.py), so the offset may no
        longer start the function, and the uprobe must be gone before the next process runs
        the new code; nothing (the probe budget) may re-arm it."""
        with self._lock:
            if not self._holds(probe):
                return
            self._retired.add(probe.index)
            self.detach(probe)
            # Let go by retire_many and still waiting for the closer: closed now all the same.
            waiting = [link for index, link in self._closing if index == probe.index]
            for link in waiting:
                self._closing.remove((probe.index, link))
                link.close()
            while self._closing_now == probe.index:
                self._closed.wait()

    def retire_many(self, probes: Iterable[AttachedProbe]) -> None:
        """Detach for good, their files unchanged (their target was removed). Their calls
        stop being taken at once (the probe's config says retired); their uprobes are
        unregistered by a background thread, because each close waits for a kernel grace
        period, one uprobe after another (about 0.1 s each here: letting a plan of 1,000
        functions go took 100 s, holding up everything behind it)."""
        retired = ProbeConfig(retired=1)
        with self._lock:
            for probe in probes:
                if not self._holds(probe) or probe.index in self._retired:
                    continue
                self._retired.add(probe.index)
                key = ctypes.c_uint32(probe.index)
                if self._lib.bpf_update_elem(self._config_fd, ctypes.byref(key), ctypes.byref(retired), 0) != 0:
                    log.warning("probe %s: marking it retired failed (%s); its calls are taken until its "
                                "uprobe is gone", probe.spec.probe_id, os.strerror(ctypes.get_errno()))
                link = self._links.get(probe.index)
                if link is not None:
                    if self._pin_dir is not None:
                        (self._pin_dir / "links" / str(probe.index)).unlink(missing_ok=True)
                    self._links[probe.index] = None
                    self._closing.append((probe.index, link))
            if self._closing and self._closer is None:
                self._closer = threading.Thread(target=self._close_retired, name="uprobe-closer", daemon=True)
                self._closer.start()

    def _close_retired(self) -> None:
        while True:
            with self._lock:
                if not self._closing:
                    self._closer = None
                    return
                index, link = self._closing.popleft()
                self._closing_now = index
            link.close()
            # The uprobe is gone: its hit count is final. With the tracefs event removed the
            # slot can serve another probe (an event busy for longer keeps its slot).
            hits = self._uprobes.hits().get(index)
            removed = self._uprobes.remove(index, timeout_s=5.0)
            with self._lock:
                self._closing_now = None
                self._closed.notify_all()
                if removed:
                    self._final_hits[index] = hits if hits is not None else 0
                    self._free.append((index, time.monotonic_ns() + int(self.settings.slot_reuse_after_s * 1e9),
                                       self._collects + 2))

    def uprobes_closing(self) -> int:
        """Retired probes' uprobes not yet unregistered (at most max_probes)."""
        with self._lock:
            return len(self._closing) + (self._closing_now is not None)

    def rearm(self, probe: AttachedProbe) -> None:
        """Attach a detached probe again, with its index and config unchanged."""
        with self._lock:
            if self._links.get(probe.index) is None and probe.index not in self._retired and self._holds(probe):
                self._links[probe.index] = self._link(probe)

    def _link(self, probe: AttachedProbe, before_link: Callable[[], object] | None = None) -> bpfsys.UprobeLink:
        link = bpfsys.attach_trace_event(self._prog_fd, self._event_ids[probe.index], probe.index,
                                         f"uprobe {probe.path}+0x{probe.file_offset:x}",
                                         before_link)
        if self._pin_dir is not None:
            bpfsys.pin(link.link_fd, self._pin_dir / "links" / str(probe.index))
        return link

    def detach_all(self) -> None:
        with self._lock:
            for probe in self.attached:
                self.detach(probe)

    def _explain(self, spec: ProbeSpec, exc: Exception) -> str:
        if "/" in spec.binary:
            if not os.path.exists(spec.binary):
                return f"binary {spec.binary} does not exist"
        elif not self._bcc.BPF.find_library(spec.binary.encode()):
            return f"library {spec.binary!r} not found in the linker cache"
        return f"symbol {spec.symbol!r} not found in {spec.binary} ({exc})"

    # --- calls --------------------------------------------------------------------

    def on_event(self, callback: Callable[[RawCall], None]) -> None:
        """Route each record (ring buffer and dedup flushes) to callback(RawCall)."""
        first = self._callback is None
        self._callback = callback
        if not first:
            return
        if READ_RING_DIRECTLY:
            self._reader = RingReader(self._events.get_fd(), self.ringbuf_bytes)
        else:
            def _handle(_ctx: object, data: int, size: int) -> int:
                self._on_record((ctypes.c_char * size).from_address(data), 0, size)
                return 0

            self._events.open_ring_buffer(_handle)

    def _on_record(self, buffer: _CallBuffer, at: int, length: int) -> None:
        try:
            call = self._raw_call_at(buffer, at, length)
        except ValueError as exc:  # the kernel writes whole records: never seen
            log.error("ring buffer record at %d: %s", at, exc)
            return
        if self._callback is not None:
            try:
                self._callback(call)
            except Exception:  # one record's failure must not stop the ones behind it
                log.exception("handling the call record of pid %d failed", call.pid)

    def _raw_call_at(self, buffer: _CallBuffer, at: int, length: int) -> RawCall:
        """struct call_event at buffer[at:at + length], read in one pass."""
        if length < self._py_frames_at:
            raise ValueError(f"{length} bytes, shorter than a call record ({self._py_frames_at} at least)")
        (boot_ns, last_boot_ns, count, _stack_hash, cgroup_id, function_address, pid, tid, frame_count, flags,
         probe_index, end_reason) = _CALL_HEAD.unpack_from(buffer, at)
        frames = self._frame_runs[min(frame_count, self.max_frames)].unpack_from(buffer, at + _CALL_HEAD.size)
        py_count, py_flags, py_entries, _reserved = _PY_HEAD.unpack_from(buffer, at + self._py_head_at)
        py_count = min(py_count, PY_MAX_FRAMES, (length - self._py_frames_at) // _PY_FRAME_BYTES)
        py_frames: tuple[tuple[int, int], ...] = ()
        if py_count:
            words = self._frame_runs[2 * py_count].unpack_from(buffer, at + self._py_frames_at)
            py_frames = tuple(zip(words[0::2], words[1::2], strict=True))
        return RawCall(boot_ns=boot_ns, cgroup_id=cgroup_id, function_address=function_address, pid=pid, tid=tid,
                       flags=flags, frames=frames, count=count, last_boot_ns=last_boot_ns, probe_index=probe_index,
                       end_reason=end_reason, py_frames=py_frames, py_flags=py_flags, py_entries=py_entries)

    @property
    def event_type(self) -> type[ctypes.Structure]:
        return self._event_type

    def remove_stale_events(self) -> None:
        """Delete tracefs events dead agents left (those of adopted probes once closed)."""
        self._uprobes.remove_stale(timeout_s=1.0)

    def to_raw_call(self, raw: ctypes.Structure) -> RawCall:
        """A struct call_event read from a ctypes Structure (dedup maps, a pinned ring)."""
        return self._raw_call_at(raw, 0, ctypes.sizeof(raw))

    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for ring-buffer records and deliver them to the callback."""
        if self._reader is not None:
            self._reader.poll(self._on_record, timeout_ms)
        elif self._callback is not None:
            self._bpf.ring_buffer_poll(timeout_ms)
        else:
            time.sleep(timeout_ms / 1000)  # nobody to deliver to: on_event() not called yet

    def drain(self) -> None:
        """Deliver every record already in the ring buffer, without waiting."""
        if self._reader is not None:
            self._reader.consume(self._on_record)
        elif self._callback is not None:
            self._bpf.ring_buffer_consume()

    def collect(self) -> int:
        """Deliver every call made before this method was entered: swap the dedup maps
        (returns after an RCU grace period, so no program still writes the old one),
        drain the ring buffer, then read and empty the old dedup map. Returns the number
        of folded records delivered."""
        old = self._active
        self._set_active_dedup(1 - old)
        self.drain()
        delivered = self._flush_dedup(self._dedup_fds[old])
        self._collects += 1
        return delivered

    def set_flush_clock(self, interval_ns: int, boot_to_wall_ns: int) -> None:
        """Tell the program the flush interval and the boot-to-wall offset the agent converts
        times with, so it never folds calls of two wall-clock intervals into one record
        (flush_clock in calltrace.bpf.c)."""
        table = self._bpf["flush_clock"]
        table[ctypes.c_int(0)] = ctypes.c_uint64(interval_ns)
        table[ctypes.c_int(1)] = ctypes.c_uint64(boot_to_wall_ns % (1 << 64))

    def _set_active_dedup(self, which: int) -> None:
        # bcc's MapInMapArray takes the inner map's fd as the value.
        self._bpf["dedup_active"][ctypes.c_int(0)] = ctypes.c_int(self._dedup_fds[which])
        self._active = which

    def _flush_dedup(self, map_fd: int) -> int:
        keys = (DedupKey * _DEDUP_READ_CHUNK)()
        values = (self._event_type * _DEDUP_READ_CHUNK)()
        batch = ctypes.c_uint32(0)
        delivered = 0
        first = True
        while True:
            count = ctypes.c_uint32(_DEDUP_READ_CHUNK)
            result = self._lib.bpf_lookup_and_delete_batch(
                map_fd, None if first else ctypes.byref(batch), ctypes.byref(batch),
                ctypes.byref(keys), ctypes.byref(values), ctypes.byref(count))
            error = ctypes.get_errno() if result != 0 else 0
            first = False
            for i in range(count.value):
                delivered += 1
                if self._callback is not None:
                    self._callback(self.to_raw_call(values[i]))
            if result != 0:
                if error == 2:  # ENOENT: the whole map has been read
                    return delivered
                raise BpfLoadError(f"reading the dedup map failed: {os.strerror(error)}")

    # --- figures ------------------------------------------------------------------

    def probe_counters(self, probe: AttachedProbe, hits: dict[int, int] | None = None) -> dict[str, int]:
        """This probe's kernel counters summed over CPUs (see enum calltrace_counter), and
        "hits": traps into its uprobe by the kernel's count, which also holds the calls
        made while the probe was being attached or detached, when the program did not run."""
        # Hits first: a call is a hit before its program counts it, so the hits read here
        # can only fall short of the calls read after them (never count a call as lost
        # that is merely in flight). Exact once the probe is detached.
        hits = self._uprobes.hits() if hits is None else hits
        counters = self._raw_counters(probe.index)
        offset = self._offsets.get(probe.index)
        if offset is not None:
            counters = {name: value - offset[name] for name, value in counters.items()}
        event_hits = self._final_hits.get(probe.index, hits.get(probe.index))
        own_hits = (counters["calls"] if event_hits is None else event_hits) - self._hits_before.get(probe.index, 0)
        counters["hits"] = max(own_hits, counters["calls"])
        return counters

    def _raw_counters(self, index: int) -> dict[str, int]:
        base = index * len(COUNTER_NAMES)
        return {name: int(sum(self._counters[ctypes.c_int(base + i)])) for i, name in enumerate(COUNTER_NAMES)}

    def slot_counters(self) -> dict[int, dict[str, int]]:
        """Each slot's kernel counters since the program was loaded, over every probe that
        held it (what a pinned generation's maps show a restarted agent: agent/state.py)."""
        with self._lock:
            slots = len(self.attached)
        return {index: self._raw_counters(index) for index in range(slots)}

    def all_probe_counters(self) -> dict[int, dict[str, int]]:
        """probe_counters of every probe, by index (tracefs read once)."""
        with self._lock:
            probes = list(self.attached)
        hits = self._uprobes.hits()
        return {probe.index: self.probe_counters(probe, hits) for probe in probes}

    def counters(self, per_probe: dict[int, dict[str, int]] | None = None) -> dict[str, int]:
        """The kernel's counters summed over CPUs and probes, "hits" included."""
        totals = dict(self._vacated)  # probes whose slot another probe took since
        for counters in (self.all_probe_counters() if per_probe is None else per_probe).values():
            for name, value in counters.items():
                totals[name] += value
        return totals

    def _map_ringbuf_positions(self) -> tuple[mmap.mmap, mmap.mmap] | None:
        # A BPF ring buffer's first page holds the consumer position, the second the
        # producer's; both may be mapped read-only by anyone holding the map's fd.
        fd = self._events.get_fd()
        try:
            return (mmap.mmap(fd, _PAGE_BYTES, mmap.MAP_SHARED, mmap.PROT_READ, offset=0),
                    mmap.mmap(fd, _PAGE_BYTES, mmap.MAP_SHARED, mmap.PROT_READ, offset=_PAGE_BYTES))
        except OSError as exc:
            log.warning("ring buffer positions are not readable (%s): utilisation reported as 0", exc)
            return None

    def ringbuf_used_bytes(self) -> int:
        """Bytes written to the ring buffer and not yet consumed (BPF_RB_AVAIL_DATA)."""
        if self._ringbuf_positions is None:
            return 0
        consumer, producer = (int(struct.unpack_from("<Q", page, 0)[0]) for page in self._ringbuf_positions)
        return max(0, producer - consumer)

    def program_stats(self) -> bpfsys.ProgramStats:
        return bpfsys.program_stats(self._prog_fd)

    def unwind_map_fds(self) -> tuple[int, int, int, int]:
        """File descriptors of (unwind_rows, unwind_tables, proc_mappings, announced), for
        agent/unwind.py."""
        return (self._bpf["unwind_rows"].get_fd(), self._bpf["unwind_tables"].get_fd(),
                self._bpf["proc_mappings"].get_fd(), self._bpf["announced"].get_fd())

    def python_map_fds(self) -> tuple[int, int]:
        """File descriptors of (python_processes, py_codes), for agent/pyframes.py."""
        return self._bpf["python_processes"].get_fd(), self._bpf["py_codes"].get_fd()

    def map_memory_bytes(self, name: str) -> int:
        """Kernel memory held by one of the program's maps."""
        return bpfsys.map_memlock_bytes(self._bpf[name].get_fd())

    def memory_bytes(self) -> int:
        """Kernel memory held by the program's maps."""
        return sum(bpfsys.map_memlock_bytes(self._bpf[name].get_fd()) for name in _MAP_NAMES)

    def close(self) -> None:
        self.detach_all()
        with self._lock:
            closing, closer = list(self._closing), self._closer
            self._closing.clear()
        for _, link in closing:
            link.close()
        if closer is not None:
            closer.join()
        self.unpin()
        self._uprobes.remove_all()
        if self._ringbuf_positions is not None:
            for page in self._ringbuf_positions:
                page.close()
            self._ringbuf_positions = None
        if self._reader is not None:
            self._reader.close()
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None
        self._bpf.cleanup()
