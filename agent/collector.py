"""The agent's event pump: kernel records -> RuntimeCallEvent -> Kafka, with watermarks,
the adaptive probe budget and periodic SignalStatistics.

Each tick (the watermark interval) collects every call made before it: the tracer
swaps the kernel's dedup maps, drains the ring buffer and reads the old map (see
CallTracer.collect), so each distinct (probe, process, stack) reaches the raw topic
within one tick, as one record carrying the count of calls it stands for.

Flushes are aligned to the wall clock: the pump collects just after each multiple of the
watermark interval since the Unix epoch, and the BPF program keys its dedup maps by that
interval too (flush_clock in calltrace.bpf.c), so a folded record never holds calls of two
intervals and lands whole in the event-time window of every one of its calls when the
window length is a multiple of the interval (the processor reports records that do not).

Ordering promise to the processor: before each AgentWatermark(T) is produced, every call
made before T has been collected and produced, so every RuntimeCallEvent produced after
it has observed_at_us >= T. The processor closes event-time windows on it. A folded
record's observed_at_us is its first call's time, which is after the previous tick.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cachetools import LRUCache

from runtime_signals.agent.budget import Action, Budget, BudgetSettings
from runtime_signals.agent.clock import BootClock
from runtime_signals.agent.errors import ProbeError
from runtime_signals.agent.event_ids import EventIds
from runtime_signals.agent.modules import ModuleMapBuilder, ModuleMapPublisher
from runtime_signals.agent.perfmap import JitModule, PerfMaps
from runtime_signals.agent.pinning import PinnedGeneration
from runtime_signals.agent.probes import AttachedProbe, CallTracer, ProbeSpec, RawCall
from runtime_signals.agent.processes import ExecutableIdentity, NodeFiles, ProcessInfo, ProcessTable
from runtime_signals.agent.procmaps import ResolvedAddress, signed64
from runtime_signals.agent.publisher import Publisher
from runtime_signals.agent.pyframes import PythonStacks
from runtime_signals.agent.pysource import PythonSources
from runtime_signals.agent.selectors import TargetFilters
from runtime_signals.agent.state import AgentState, ProbeSite
from runtime_signals.agent.stats import (
    BaseFigures,
    DeliveryFigures,
    KernelFigures,
    ProbeFigures,
    Snapshot,
    StatsTracker,
    account,
)
from runtime_signals.agent.symbols_publisher import MAX_CHUNK_BYTES, SymbolTablePublisher
from runtime_signals.agent.unwind import RulesCache, UnwindLoader, checked_frames
from runtime_signals.agent.wire import (
    STACK_END_NO_UNWIND_INFO,
    STACK_END_NOT_EXECUTABLE,
    DedupKey,
    PythonProcess,
)
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames

log = logging.getLogger(__name__)

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
STATISTICS = "io.runtimesignals.SignalStatistics"
# Calls stamped just before a collection started may still be in flight to the ring
# buffer; the watermark stays this far behind the collection's start.
WATERMARK_SAFETY_NS = 5_000_000
# Collections run this long after an interval boundary, so that a swapped-out map holds the
# interval that just ended whole, plus only the first moments of the next (not correctness:
# records never span epochs anyway).
_FLUSH_AFTER_BOUNDARY_S = 0.002
# The pump is healthy while its loop has turned within this long.
HEALTHY_WITHIN_NS = 30_000_000_000
# Call-path keys remembered to tell a new path from a known one (the adaptive budget's
# signal and unique_call_paths). About 150 bytes each; past the bound the least recently
# seen is forgotten, and seen again it counts as new once more.
MAX_PATH_KEYS = 1 << 17
# Encoded stacks kept (the record fields a process's stack determines, encoded once and
# reused for its later calls): about 2 KB each with their key.
MAX_ENCODED_STACKS = 4096
# The RuntimeCallEvent fields that differ from one call of a stack to the next.
_PER_CALL_FIELDS = frozenset({"event_id", "tid", "timestamp_ns", "received_at_us", "observed_at_us",
                              "observation_count", "last_timestamp_ns"})
# A call whose stack runs through a file not hashed yet waits (parked) while the background
# hasher reads it, instead of the pump reading it: at most this many records, this long.
# Past either bound it is published with those frames' digests unknown (counted).
MAX_PARKED_RECORDS = 10_000
MAX_PARKED_NS = 10_000_000_000
# A walk that ended outside the known code may mean the process mapped new code since its
# mapping table was written (dlopen): its maps are read again, at most this often.
UNWIND_REFRESH_NS = 1_000_000_000
# The processes found by the agent's first target scan have their binaries' unwind rules built
# before their probes are attached, for at most this long (a large library met for the first
# time takes seconds; the rules cache makes it once per node); past it, their first calls may
# be walked by frame pointers (flagged) until the rules are in.
RULES_WAIT_S = 5.0


def hold_rules_wait_s(hold_heartbeat_ms: int) -> float:
    """How long a held process waits for its rules: less than RULES_WAIT_S, as while one hold
    is answered for over half the loader holds' heartbeat no other process is held (0.8 s
    with the default hold_heartbeat_ms of 2 s)."""
    return min(RULES_WAIT_S, 0.4 * hold_heartbeat_ms / 1000)


class BuiltCall(Protocol):
    @property
    def record(self) -> dict[str, Any]: ...  # a RuntimeCallEvent

    @property
    def calls(self) -> int: ...


def inlined_site_frames(frames: list[ResolvedAddress]) -> list[ResolvedAddress]:
    """The frames of a call of an inlined copy (agent/inlined.py), innermost first: the copy
    runs inside its caller's own frame, so the probed function (frames[0], named by the
    record) is followed by that caller's physical frame at the same place. It is written as
    a return address is, one byte past the place (consumers look callers up at offset - 1),
    so the caller is named even when the copy starts at its very first byte."""
    top = frames[0]
    caller = ResolvedAddress(top.address + 1, top.path, top.binary_digest,
                             None if top.binary_offset is None else top.binary_offset + 1, None, top.pending)
    return [top, caller, *frames[1:]]


class CallSource(Protocol):
    """Another program's calls, already built into records (agent/pytargets.py)."""

    dropped_calls: Counter[str]

    def collect(self) -> Sequence[BuiltCall]: ...

    def poll(self) -> None: ...  # read what the kernel has, without waiting (between collections)

    def kernel_totals(self) -> dict[str, int]: ...

    def apply_budget(self, now_ns: int) -> None: ...  # the adaptive budget's tick for its probes

    def probe_figures(self, now_ns: int) -> list[ProbeFigures]: ...  # per probe, for SignalStatistics

    def stop(self) -> None: ...  # no more calls: the last collection then holds every one


@dataclass
class CollectorSettings:
    topics: TopicNames = field(default_factory=TopicNames)
    agent_id: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}")
    host: str = field(default_factory=socket.gethostname)
    watermark_interval_ms: int = 500
    poll_timeout_ms: int = 100
    process_sweep_interval_ms: int = 10_000
    shutdown_flush_timeout_s: float = 30.0
    symbol_chunk_max_bytes: int = MAX_CHUNK_BYTES
    statistics_interval_ms: int = 10_000
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    max_path_keys: int = MAX_PATH_KEYS
    jit_perf_maps: bool = True   # name JIT frames from perf maps (agent/perfmap.py)
    jvm_jcmd: str = "jcmd"       # "" never asks a JVM to write its map
    unwind_cache_dir: str | None = None  # built unwind rules kept here across runs (agent/unwind.RulesCache)
    unwind_cache_max_bytes: int = 256 << 20


class Collector:
    """Reads calls from a CallTracer and publishes them; counts everything it handles."""

    def __init__(self, settings: CollectorSettings, tracer: CallTracer, publisher: Publisher,
                 registry: codec.SchemaRegistry | None = None, node: NodeFiles | None = None,
                 filters: TargetFilters | None = None, sources: Sequence[CallSource] = (),
                 state: AgentState | None = None, state_dir: Path | None = None) -> None:
        # state (agent/state.py): an identity and figures that survive restarts, saved in
        # state_dir at every watermark tick; settings.agent_id is then the state's.
        if state is not None:
            settings = replace(settings, agent_id=state.agent_id)
        self.settings = settings
        self._tracer = tracer
        self._publisher = publisher
        self._registry = registry or codec.SchemaRegistry.default()
        self._clock = BootClock()
        self._lock = threading.Lock()  # probes are registered from the target scanner's thread
        # Held by the target scanner from attaching a probe until it is registered (see _handle).
        self.attach_lock = threading.Lock()
        self._probes: dict[int, AttachedProbe] = {}  # by the tracer's index
        self._watermark_sequence = 0
        self.events_published = 0  # records
        self.calls_published = 0
        self.agent_dropped_calls: Counter[str] = Counter()
        self._paths: LRUCache[bytes, bool] = LRUCache(settings.max_path_keys)
        # A stack's fields are encoded once: fastavro spends most of a record's encoding on
        # choosing the branches of the nullable fields, nearly all of them the stack's.
        self._call_template = codec.template(
            CALL_EVENT, [f["name"] for f in self._registry.current_schema(CALL_EVENT)["fields"]
                         if f["name"] not in _PER_CALL_FIELDS], self._registry)
        self._event_ids = EventIds()
        self._encoded_stacks: LRUCache[tuple[Any, ...], tuple[tuple[bytes, ...] | None, bytes]] = LRUCache(
            MAX_ENCODED_STACKS)  # with the stack's path key; None until seen twice
        self.new_paths_total = 0  # distinct since start, exactly while under max_path_keys
        self._new_paths: Counter[int] = Counter()  # per probe index, since the last budget tick
        self._budget = Budget(settings.budget)
        self._stats = StatsTracker()
        self.latest: Snapshot | None = None
        self._ringbuf_peak_bytes = 0
        self.heartbeat_ns = time.monotonic_ns()
        self._symbol_tables = SymbolTablePublisher(publisher, settings.topics.symbols, self._registry,
                                                   settings.symbol_chunk_max_bytes)
        node = node or NodeFiles()
        self.node_files = node
        self._module_maps = ModuleMapPublisher(publisher, settings.topics.modules, self._registry,
                                               ModuleMapBuilder(node, settings.host, settings.agent_id))
        perf_maps = PerfMaps(jcmd=settings.jvm_jcmd or None) if settings.jit_perf_maps else None
        self._processes = ProcessTable(on_new_binary=self._symbol_tables.offer,
                                       on_module_map=self._module_maps.offer, node=node,
                                       perf_maps=perf_maps, on_jit_code=self._symbol_tables.offer_jit,
                                       background_hashing=True)
        self._parked: deque[tuple[int, RawCall]] = deque()  # (parked at, monotonic ns), oldest first
        self._parked_calls = 0
        self._hashes_seen = 0  # DigestCache.completed when the parked calls were last tried
        self.records_without_digest = 0  # published with a frame's file not hashed in time
        self._filters = filters or TargetFilters()
        self._sources = list(sources)
        self._more_sizes: list[Callable[[], dict[str, int]]] = []  # add_cache_sizes
        self._state = state
        self._state_dir = state_dir
        self._base = BaseFigures()
        self._watermark_sequence = state.watermark_sequence if state is not None else 0
        self._spool_calls_at_start = publisher.pending_calls  # what an earlier run left in the spool
        self._retired: dict[int, AttachedProbe] = {}  # an earlier run's probes not attached now
        self.unwatched_ns: Counter[str] = Counter()  # per probe id: agent down, hand-over gaps
        self.taken_over: dict[str, int] = {}  # what take_over() found, for the log and tests
        tracer_settings = tracer.settings
        self._unwind = UnwindLoader(tracer.unwind_map_fds(), unwind_rows=tracer_settings.unwind_rows,
                                    unwind_tables=tracer_settings.unwind_tables,
                                    max_processes=tracer_settings.max_processes,
                                    max_mappings=tracer_settings.max_mappings, digests=node.digests,
                                    cache=RulesCache(Path(settings.unwind_cache_dir), settings.unwind_cache_max_bytes)
                                    if settings.unwind_cache_dir else None)
        self._python = PythonStacks(tracer.python_map_fds(), PythonSources(node.purls), node.digests,
                                    proc_root=self._processes.proc_root, on_code_unit=self._processes.add_code_unit)
        self._unwind_versions: dict[int, tuple[int, int]] = {}  # pid -> (maps version, refreshed at ns)
        self._unwind_lock = threading.Lock()  # the pump, the loader-hold and the scanner threads load tables
        tracer.on_event(self._handle)
        self._flush_interval_ns = settings.watermark_interval_ms * 1_000_000
        tracer.set_flush_clock(self._flush_interval_ns, self._clock.offset_ns())

    def add_cache_sizes(self, sizes: Callable[[], dict[str, int]]) -> None:
        """Report another part's bounded caches with the agent's (the target manager's)."""
        self._more_sizes.append(sizes)

    def add_source(self, source: CallSource) -> None:
        """Publish another program's calls at each collection, under the same watermarks."""
        self._sources.append(source)

    def describe_process(self, pid: int, cgroup_id: int = 0) -> ProcessInfo:
        return self._processes.describe(pid, cgroup_id)

    def python_marker_description(self, pid: int) -> PythonProcess | None:
        """pid's interpreter as the Python-function probes' program walks it (agent/pyframes.py)."""
        return self._python.marker_description(pid)

    def note_code_unit(self, pid: int, unit: JitModule) -> None:
        """A Python function in a record of pid: into its module map, its name published
        (call on the pump's thread)."""
        self._processes.add_code_unit(pid, unit)

    @property
    def unwind(self) -> UnwindLoader:
        return self._unwind

    def register_probe(self, probe: AttachedProbe) -> None:
        """Learn a probe the tracer attached (its index is the tracer's), to name the calls
        it reports and to budget it. Called from the target scanner's thread."""
        with self._lock:
            self._probes[probe.index] = probe  # a slot taken again: the retired probe's place
            self._new_paths.pop(probe.index, None)
            self._budget.track(probe.index, time.monotonic_ns())

    def capture(self, pid: int, wait_s: float) -> None:
        """Learn all a held process's calls need (agent/loadwatch.py) before it is resumed:
        its module map is published, so attribution survives its exit, and its unwind table
        is loaded, its binaries' rules built first (for up to wait_s), so its first calls are
        walked as its later ones."""
        process, mappings, version = self._processes.capture(pid)
        if version and mappings:
            self._module_maps.offer_now(process, mappings, version)
            self._unwind.load_process(pid, mappings, wait_s=wait_s)
            self._python.load_process(pid, mappings)
            with self._unwind_lock:
                self._unwind_versions[pid] = (version, time.monotonic_ns())

    def prepare(self, pids: Sequence[int]) -> None:
        """capture() the running processes the agent's first target scan found mapping a
        target, before their probes are attached; then wait (up to RULES_WAIT_S in all) for
        their binaries' rules, so their first calls are walked whole."""
        for pid in pids:
            try:
                self.capture(pid, wait_s=0)
            except Exception:  # one process's surprise must not stop the rest
                log.exception("preparing pid %d for its probes failed", pid)
        self._unwind.wait_built(RULES_WAIT_S)

    # --- records ------------------------------------------------------------------

    def _handle(self, call: RawCall) -> None:
        if call.probe_index not in self._probes:
            # A probe fires as soon as the tracer links it, before the scanner thread has
            # registered it: wait out an attach in progress, so the call gets its name and
            # its target's filter. Only such calls wait; the lock is free otherwise.
            with self.attach_lock:
                pass
        self._try_publish(call, None)

    def _try_publish(self, call: RawCall, parked_at_ns: int | None, force: bool = False) -> None:
        try:
            self._publish_call(call, parked_at_ns, force)
        except Exception:  # a bad record is counted and logged; it never stops the pump
            self.agent_dropped_calls["agent_error"] += call.count
            log.exception("building the record of %d call(s) of pid %d failed", call.count, call.pid)

    def _park(self, call: RawCall, parked_at_ns: int) -> None:
        if len(self._parked) >= MAX_PARKED_RECORDS:
            oldest_at, oldest = self._parked.popleft()
            self._parked_calls -= oldest.count
            self._try_publish(oldest, oldest_at, force=True)
        self._parked.append((parked_at_ns, call))
        self._parked_calls += call.count

    def retry_parked(self, force: bool = False) -> None:
        """Publish the parked calls whose files have been hashed since (all of them when
        forced, or once they waited MAX_PARKED_NS), in the order they came."""
        if not self._parked:
            return
        completed = self._processes.digests.completed
        now_ns = time.monotonic_ns()
        if not force and completed == self._hashes_seen and now_ns - self._parked[0][0] < MAX_PARKED_NS:
            return
        self._hashes_seen = completed
        waiting, self._parked = self._parked, deque()
        self._parked_calls = 0
        for parked_at_ns, call in waiting:
            self._try_publish(call, parked_at_ns, force or now_ns - parked_at_ns >= MAX_PARKED_NS)

    def _publish_call(self, call: RawCall, parked_at_ns: int | None = None, force: bool = False) -> None:
        process = self._processes.describe(call.pid, call.cgroup_id)
        probe = self._probes.get(call.probe_index) or self._retired.get(call.probe_index)
        if probe is not None and not self._filters.accepts(probe.spec.probe_id, process):
            # A process the probe's targets do not select: not a loss, but the calls must
            # appear somewhere for the totals to add up. Filtered before its frames are
            # resolved, so it costs no digests, module maps or symbol tables.
            self.agent_dropped_calls["not_selected"] += call.count
            return
        frames = self._processes.resolve_frames(call.pid, call.frames)
        self._load_unwind(call.pid, call.end_reason)
        executable = self._processes.executable(call.pid, frames)
        if any(f.pending for f in frames) or executable.pending:
            if not force:
                # Its binary is being hashed off the pump: the record waits, the pump does not.
                self._park(call, time.monotonic_ns() if parked_at_ns is None else parked_at_ns)
                return
            self.records_without_digest += 1
        frames, truncation_reason = checked_frames(frames, call.flags, call.end_reason)
        frames = self._python.splice_call(call.pid, frames, call.py_frames, call.py_flags, call.py_entries,
                                          native_complete=truncation_reason is None)
        if probe is not None and probe.spec.file_offset is not None and frames:
            frames = inlined_site_frames(frames)
        container_id = process.container_id
        # Everything the record's fields but the per-call ones are made of.
        stack_key = (call.pid, call.cgroup_id, call.probe_index, call.function_address, container_id,
                     process.runtime_type, probe.spec.probe_id if probe else None, probe.spec.symbol if probe else None,
                     executable.path, executable.binary_digest, executable.purl, executable.comm, truncation_reason,
                     tuple((f.address, f.path, f.binary_digest, f.binary_offset, f.purl) for f in frames))
        known = self._encoded_stacks.get(stack_key)
        if known is None:
            path_key = hashlib.blake2b(repr((call.probe_index, [(f.binary_digest, f.binary_offset)
                                                                if f.binary_digest else f.address for f in frames])
                                            ).encode(), digest_size=16).digest()
        else:
            path_key = known[1]
        if self._paths.get(path_key) is None:  # get() refreshes a known key's recency
            self._paths[path_key] = True
            self.new_paths_total += 1
            self._new_paths[call.probe_index] += 1
        per_call = {
            "event_id": self._event_ids.next(),
            "tid": call.tid,
            "timestamp_ns": call.boot_ns,
            "received_at_us": time.time_ns() // 1000,
            "observed_at_us": self._clock.wall_us(call.boot_ns),
            "observation_count": call.count,
            "last_timestamp_ns": call.last_boot_ns if call.count > 1 else None,
        }
        if known is not None and known[0] is not None:
            value = self._call_template.encode(per_call, known[0])
        else:
            record = self._call_record(call, per_call, probe, process.runtime_type, container_id, frames,
                                       truncation_reason, executable)
            if known is None:  # seen once: encoded whole, as cheap for a stack that never recurs
                value = codec.encode(record, CALL_EVENT, self._registry)
                self._encoded_stacks[stack_key] = (None, path_key)
            else:  # seen again: its fields are encoded once for all its later calls
                parts = self._call_template.fixed_parts(record)
                self._encoded_stacks[stack_key] = (parts, path_key)
                value = self._call_template.encode(per_call, parts)
        self._publisher.produce(self.settings.topics.raw, container_id.encode(), value, calls=call.count)
        self.events_published += 1
        self.calls_published += call.count

    def _call_record(self, call: RawCall, per_call: dict[str, Any], probe: AttachedProbe | None, runtime_type: str,
                     container_id: str, frames: list[ResolvedAddress], truncation_reason: str | None,
                     executable: ExecutableIdentity) -> dict[str, Any]:
        """The RuntimeCallEvent of a call, its per-call fields given."""
        top = frames[0]
        bottom_to_top = list(reversed(frames))
        return {
            **per_call,
            "container_id": container_id,
            "pid": call.pid,
            "symbol": probe.spec.symbol if probe else None,
            "function_address": signed64(call.function_address),
            "stack_trace": [signed64(f.address) for f in bottom_to_top],
            "runtime_type": runtime_type,
            "library": top.path,
            "purl": top.purl,
            "function_signature": None,
            "binary_digest": top.binary_digest,
            "binary_offset": top.binary_offset,
            "node_hash": None,
            "callstack_hash": None,
            "host": self.settings.host,
            "agent_id": self.settings.agent_id,
            "cgroup_id": call.cgroup_id,
            "probe_id": probe.spec.probe_id if probe else "",
            "stack_frames": [
                {"address": signed64(f.address), "binary_digest": f.binary_digest,
                 "binary_offset": f.binary_offset, "library": f.path, "purl": f.purl}
                for f in bottom_to_top
            ],
            "stack_truncated": truncation_reason is not None,
            "truncation_reason": truncation_reason,
            "executable": executable.path,
            "executable_digest": executable.binary_digest,
            "executable_purl": executable.purl,
            "comm": executable.comm,
        }

    def _load_unwind(self, pid: int, end_reason: int) -> None:
        """Give pid's walks its mapping table (first call, changed mappings), so its later
        calls are unwound by its binaries' rules and checked against its code."""
        maps = self._processes.maps
        now_ns = time.monotonic_ns()
        with self._unwind_lock:
            loaded = self._unwind_versions.get(pid)
        # A walk that left the known code: new libraries, or JIT code grown into memory the
        # table does not list yet (its file mappings unchanged): the table is written again.
        refresh = (loaded is not None and end_reason in (STACK_END_NO_UNWIND_INFO, STACK_END_NOT_EXECUTABLE)
                   and now_ns - loaded[1] >= UNWIND_REFRESH_NS)
        if refresh:
            maps.mappings(pid, refresh=True)
        if loaded is None:
            # The first table: read the mappings afresh. Those cached at a hold (exec time,
            # agent/loadwatch.py) hold only the executable and the loader, not the libraries
            # the process has mapped since, whose frames the walk would then cut.
            maps.mappings(pid, refresh=True)
        version = maps.version(pid)
        if version and (loaded is None or loaded[0] != version or refresh):
            mappings = maps.mappings(pid)
            # The pump never hashes: load_process() digests every mapped file, so it waits
            # until the background hasher knows them all (asked again at pid's next call).
            root = self._processes.proc_root / str(pid) / "root"
            if not all(self._processes.digests.lookup(root / m.path.lstrip("/"))[0] for m in mappings):
                return
            self._unwind.load_process(pid, mappings)
            self._python.load_process(pid, mappings)
            with self._unwind_lock:
                self._unwind_versions[pid] = (version, now_ns)

    def publish_watermark(self) -> None:
        """Collect every call made so far, then promise the processor no earlier call will follow."""
        try:
            self._publish_watermark()
        finally:
            self.save_state()  # every tick, also while no watermark can go out (no metadata)

    def _publish_watermark(self) -> None:
        collect_started_boot_ns = BootClock.now_boot_ns()
        self._sample_ringbuf()
        # The offset follows NTP slews; the program's epochs follow the same offset as the
        # records' times.
        self._tracer.set_flush_clock(self._flush_interval_ns, self._clock.offset_ns())
        self._tracer.collect()
        self.retry_parked()
        self._collect_sources()
        topic = self.settings.topics.raw
        partitions = self._publisher.known_partition_count(topic)
        if partitions is None:
            return  # no metadata yet (broker away since start): the next watermark covers this one
        watermark_us = self._clock.wall_us(collect_started_boot_ns - WATERMARK_SAFETY_NS)
        if self._parked:
            # A parked call is produced later: the promise must not pass it. It was
            # collected after the previous watermark, so this one still never goes back.
            watermark_us = min(watermark_us, min(self._clock.wall_us(c.boot_ns) for _, c in self._parked))
        self._watermark_sequence += 1
        value = codec.encode({
            "agent_id": self.settings.agent_id,
            "host": self.settings.host,
            "watermark_us": watermark_us,
            "sequence": self._watermark_sequence,
        }, WATERMARK, self._registry)
        for partition in range(partitions):
            self._publisher.produce(topic, self.settings.agent_id.encode(), value, partition=partition)

    def _collect_sources(self) -> None:
        for source in self._sources:
            for built in source.collect():
                value = codec.encode(built.record, CALL_EVENT, self._registry)
                self._publisher.produce(self.settings.topics.raw, built.record["container_id"].encode(), value,
                                        calls=built.calls)
                self.events_published += 1
                self.calls_published += built.calls

    def _until_next_flush_s(self, interval_s: float) -> float:
        """Seconds to just after the next multiple of the interval on the wall clock: the
        kernel's epochs change there (a little after, so the swap follows the change)."""
        wall_ns = time.time_ns()
        next_ns = (wall_ns // self._flush_interval_ns + 1) * self._flush_interval_ns
        return min(interval_s, (next_ns - wall_ns) / 1e9) + _FLUSH_AFTER_BOUNDARY_S

    def _sample_ringbuf(self) -> None:
        self._ringbuf_peak_bytes = max(self._ringbuf_peak_bytes, self._tracer.ringbuf_used_bytes())

    # --- budget -------------------------------------------------------------------

    def apply_budget(self) -> None:
        """Detach probes whose calls are well known, re-arm those whose back-off is over."""
        now_ns = time.monotonic_ns()
        with self._lock:
            probes = list(self._probes.values())
        counters = self._tracer.all_probe_counters()
        for probe in probes:
            calls = counters.get(probe.index, {}).get("calls", 0)
            action = self._budget.observe(probe.index, now_ns, calls, self._new_paths.pop(probe.index, 0))
            if action is Action.DETACH:
                self._tracer.detach(probe)
                log.info("budget: detached %s (no new call path for %.0fs at >= %.0f calls/s); re-arming in %.0fs",
                         probe.spec.probe_id, self.settings.budget.quiet_ns / 1e9, self.settings.budget.min_rate_per_s,
                         (self._budget.state(probe.index).rearm_at_ns - now_ns) / 1e9)  # type: ignore[union-attr]
            elif action is Action.REARM:
                try:
                    self._tracer.rearm(probe)
                    log.info("budget: re-armed %s", probe.spec.probe_id)
                except ProbeError as exc:
                    self._budget.rearm_failed(probe.index, now_ns)
                    log.error("budget: re-arming %s failed, retrying later: %s", probe.spec.probe_id, exc)
        for source in self._sources:
            source.apply_budget(now_ns)

    # --- statistics ---------------------------------------------------------------

    def take_snapshot(self) -> Snapshot:
        self._sample_ringbuf()
        now_ns, wall_us = time.monotonic_ns(), time.time_ns() // 1000
        with self._lock:
            probes = list(self._probes.values())
        counters = self._tracer.all_probe_counters()
        figures = []
        for probe in probes:
            if self._tracer.is_retired(probe):
                # Let go for good (its plan removed, its file changed): no longer listed, so
                # readers count the time from here as not watched (consumer/watched.py).
                continue
            state = self._budget.state(probe.index)
            # Time not watched: detached by the budget, plus the agent's own absence while
            # no pinned probe ran (take_over).
            unwatched_ns = self._budget.detached_ns(probe.index, now_ns) + self.unwatched_ns[probe.spec.probe_id]
            figures.append(ProbeFigures(probe.spec.probe_id, self._tracer.is_attached(probe),
                                        counters.get(probe.index, {}).get("hits", 0), unwatched_ns,
                                        state.detach_count if state else 0))
        for source in self._sources:
            figures.extend(source.probe_figures(now_ns))
        totals, agent_dropped = self._totals(counters)
        kernel = KernelFigures(totals, self._tracer.program_stats(),
                               self._ringbuf_peak_bytes, self._tracer.ringbuf_bytes, self._tracer.memory_bytes())
        self._ringbuf_peak_bytes = 0
        publisher = self._publisher
        delivery = DeliveryFigures(publisher.delivered_calls, publisher.pending_calls + self._parked_calls,
                                   dict(publisher.dropped_calls_by_reason), publisher.spool_bytes)
        self.latest = self._stats.take(kernel, delivery, self.new_paths_total, dict(agent_dropped),
                                       tuple(figures), self.cache_sizes(), self._base, self._unwind_figures(),
                                       taken_at=(now_ns, wall_us))
        return self.latest

    def _totals(self, counters: dict[int, dict[str, int]]) -> tuple[dict[str, int], Counter[str]]:
        """Kernel counters summed over the tracer's probes and the other call sources, and the
        agent's drops with theirs: one account for the statistics and the saved state."""
        totals = self._tracer.counters(counters)
        agent_dropped = Counter(self.agent_dropped_calls)
        for source in self._sources:
            for name, value in source.kernel_totals().items():
                totals[name] = totals.get(name, 0) + value
            agent_dropped.update(source.dropped_calls)
        return totals, agent_dropped

    # --- restarts -------------------------------------------------------------------

    def save_state(self, clean_stop: bool = False) -> None:
        """Write the identity, the figures and the program's probes and counters beside the
        spool (agent/state.py), for the next run of this agent."""
        if self._state is None or self._state_dir is None:
            return
        counters = self._tracer.all_probe_counters()
        publisher = self._publisher
        delivery = DeliveryFigures(publisher.delivered_calls, publisher.pending_calls + self._parked_calls,
                                   dict(publisher.dropped_calls_by_reason), publisher.spool_bytes)
        totals, agent_dropped = self._totals(counters)
        total, delivered, dropped = account(totals, delivery, dict(agent_dropped), self._base)
        state = self._state
        state.watermark_sequence = self._watermark_sequence
        state.clean_stop = clean_stop
        state.total_calls, state.delivered_calls, state.dropped_calls = total, delivered, dropped
        state.pending_calls = delivery.pending_calls
        state.max_frames = self._tracer.max_frames
        state.record_bytes = ctypes.sizeof(self._tracer.event_type)
        state.pin_dir = str(self._tracer.pin_dir) if self._tracer.pin_dir is not None else None
        state.probes = {p.index: ProbeSite(p.spec.probe_id, p.spec.symbol, p.path, p.file_offset)
                        for p in self._tracer.attached}
        # Per slot, over every probe that held it: what the pinned maps will show the next run.
        state.kernel_counters = self._tracer.slot_counters()
        try:
            state.save(self._state_dir)
        except OSError as exc:
            log.error("saving the agent state in %s failed: %s", self._state_dir, exc)

    def take_over(self, previous: AgentState | None, generation: PinnedGeneration | None) -> dict[str, int]:
        """Continue an earlier run of this identity. Call after the first target scan.

        With its pinned generation: close its remaining probes, publish every call its
        program collected and nobody read (ring buffer, dedup maps), and add what its
        kernel counters counted since the state was written. Whatever the earlier run
        counted and can be found nowhere now (not delivered, dropped, spooled nor left in
        the kernel: records librdkafka held in memory when it was killed, or delivered
        after its last state write, which cannot be told apart) is counted as dropped,
        "lost_at_restart". The time no probe ran (the agent down without pins: a clean
        stop, a reboot) is added to each probe's time not watched."""
        found = {"drained_records": 0, "drained_calls": 0, "kernel_calls_after_state": 0, "lost_at_restart": 0,
                 "down_ns": 0}
        if previous is None:
            return found
        found.update(previous_total=previous.total_calls, previous_delivered=previous.delivered_calls,
                     previous_dropped=sum(previous.dropped_calls.values()), previous_pending=previous.pending_calls,
                     spool_calls=self._spool_calls_at_start)
        dropped = Counter(previous.dropped_calls)
        total = previous.total_calls
        if generation is not None:
            generation.close_links()
            # The records' layout: frames kept, and the fields an agent version carries.
            if (previous.max_frames, previous.record_bytes) == (self._tracer.max_frames,
                                                                 ctypes.sizeof(self._tracer.event_type)):
                def on_record(raw: object) -> None:
                    call = self._adopted_call(self._tracer.to_raw_call(raw), previous)  # type: ignore[arg-type]
                    found["drained_records"] += 1
                    found["drained_calls"] += call.count
                    self._try_publish(call, None)
                generation.drain(self._tracer.event_type, DedupKey, on_record)
            else:
                log.error("the previous agent's records have %d frames in %d bytes, this one's %d in %d: its "
                          "uncollected calls cannot be read and are counted lost", previous.max_frames,
                          previous.record_bytes, self._tracer.max_frames, ctypes.sizeof(self._tracer.event_type))
            final = generation.counters(sorted(previous.probes))
            for index, now in final.items():
                before = previous.kernel_counters.get(index, {})
                found["kernel_calls_after_state"] += now.get("calls", 0) - before.get("calls", 0)
                for counter, reason in (("drop_ringbuf_full", "ringbuf_full"), ("drop_rate_limited", "rate_limited"),
                                        ("drop_nested", "nested")):
                    dropped[reason] += now.get(counter, 0) - before.get(counter, 0)
            total += found["kernel_calls_after_state"]
            generation.remove()
        else:
            # No probe ran while no agent did: that time was not watched.
            found["down_ns"] = max(0, time.time_ns() - previous.written_at_us * 1000)
            for site in previous.probes.values():
                self.unwatched_ns[site.probe_id] += found["down_ns"]
        lost = (total - previous.delivered_calls - sum(dropped.values()) - self._spool_calls_at_start
                - found["drained_calls"])
        delivered = previous.delivered_calls
        if lost < 0:
            # More calls accounted for (delivered, dropped, spooled, drained) than counted:
            # some were counted twice. One way: a record delivered and counted before the state
            # was saved but still in the spool (its cursor is saved every 100 records), which
            # is then sent again; the processor adds a record sent twice once (docs/processor.md,
            # "Records sent twice"). Seen in about 1 of 4 SIGKILL tests; the figures keep the
            # kernel's count and the excess is logged, never added to the calls.
            log.error("restart: %d more calls accounted for than the kernel counted (previous run %s); "
                      "its delivered figure is lowered by as many", -lost, found)
            found["recounted_at_restart"] = -lost
            delivered += lost
        elif lost:
            dropped["lost_at_restart"] += lost
        found["lost_at_restart"] = max(0, lost)
        self._base = BaseFigures(total, delivered, dict(dropped))
        self.taken_over = found
        log.info("continuing agent %s (restart %d): %s", self.settings.agent_id, previous.restarts, found)
        return found

    def _adopted_call(self, call: RawCall, previous: AgentState) -> RawCall:
        """An earlier run's call, with the index of the same probe in this run (or of a
        retired one, so it is still named)."""
        site = previous.probes.get(call.probe_index)
        if site is None:
            return call
        with self._lock:
            current = next((p for p in self._probes.values() if p.spec.probe_id == site.probe_id), None)
        if current is not None:
            return replace(call, probe_index=current.index)
        retired_index = -1 - call.probe_index
        if retired_index not in self._retired:
            spec = ProbeSpec.parse(site.probe_id)
            self._retired[retired_index] = AttachedProbe(replace(spec, symbol=site.symbol), site.path,
                                                         site.file_offset, retired_index)
        return replace(call, probe_index=retired_index)

    def cache_sizes(self) -> dict[str, int]:
        """Entries in every long-lived cache and queue of the agent, for /metrics: each is
        bounded, and a figure that keeps rising on a steady workload is a leak."""
        sizes = {"path_keys": len(self._paths), "encoded_stacks": len(self._encoded_stacks),
                 "parked_records": len(self._parked),
                 "unwind_processes": len(self._unwind_versions),
                 "uprobes_closing": self._tracer.uprobes_closing()}
        sizes.update(self._processes.sizes())
        sizes.update(self._python.sizes())
        sizes.update(self._symbol_tables.sizes())
        sizes.update(self._module_maps.sizes())
        for more in self._more_sizes:
            sizes.update(more())
        return sizes


    def _unwind_figures(self) -> dict[str, int]:
        figures = self._unwind.figures()
        return {"rows_used": figures.rows_used, "rows_capacity": figures.rows_capacity,
                "row_map_bytes": self._tracer.map_memory_bytes("unwind_rows"),
                "table_map_bytes": self._tracer.map_memory_bytes("unwind_tables"),
                "process_map_bytes": self._tracer.map_memory_bytes("proc_mappings"),
                "binaries_loaded": figures.binaries_loaded, "binaries_building": figures.binaries_building,
                "binaries_without_rules": figures.binaries_without_rules,
                "binaries_not_fitting": figures.binaries_not_fitting,
                "processes_loaded": figures.processes_loaded,
                "processes_over_mapping_limit": figures.processes_over_mapping_limit,
                "rules_cache_hits": figures.cache_hits, "rules_cache_misses": figures.cache_misses,
                "rules_cache_bytes": figures.cache_bytes,
                "python_code_map_bytes": self._tracer.map_memory_bytes("py_codes"),
                **self._python.figures()}

    def publish_statistics(self) -> Snapshot:
        snapshot = self.take_snapshot()
        value = codec.encode(snapshot.record(self.settings.agent_id, self.settings.host), STATISTICS,
                             self._registry)
        self._publisher.produce(self.settings.topics.statistics, self.settings.agent_id.encode(), value)
        return snapshot

    # --- lifecycle ----------------------------------------------------------------

    def healthy(self) -> bool:
        return time.monotonic_ns() - self.heartbeat_ns < HEALTHY_WITHIN_NS

    def ready(self) -> bool:
        with self._lock:
            any_probe = bool(self._probes) or bool(self._sources)
        return any_probe and self._publisher.has_metadata(self.settings.topics.raw)

    def run(self, stop: threading.Event) -> None:
        """Pump until stop is set, then collect everything and flush it."""
        interval_s = self.settings.watermark_interval_ms / 1000
        sweep_s = self.settings.process_sweep_interval_ms / 1000
        statistics_s = self.settings.statistics_interval_ms / 1000
        now = time.monotonic()
        next_watermark, next_sweep, next_statistics = now, now + sweep_s, now + statistics_s
        while not stop.is_set():
            self.heartbeat_ns = time.monotonic_ns()
            self._sample_ringbuf()
            self._tracer.poll(self.settings.poll_timeout_ms)
            self.retry_parked()
            for source in self._sources:
                source.poll()
            self._publisher.pump()
            self._publisher.poll(0)
            now = time.monotonic()
            if now >= next_watermark:
                self.publish_watermark()
                self.apply_budget()
                next_watermark = now + self._until_next_flush_s(interval_s)
            if now >= next_statistics:
                self.publish_statistics()
                next_statistics = now + statistics_s
            if now >= next_sweep:
                self._processes.forget_exited()
                with self._unwind_lock:
                    gone = [p for p in self._unwind_versions if not os.path.exists(f"/proc/{p}")]
                    for pid in gone:
                        del self._unwind_versions[pid]
                for pid in gone:
                    self._unwind.forget(pid)
                    self._python.forget(pid)
                next_sweep = now + sweep_s
        self.shutdown()

    def shutdown(self) -> None:
        """Detach, collect every call made, publish it and the last statistics, then hand
        everything to Kafka (or to the spool if Kafka cannot take it in time)."""
        self._tracer.detach_all()
        for source in self._sources:
            source.stop()
        self._tracer.collect()
        deadline = time.monotonic() + min(self.settings.shutdown_flush_timeout_s, MAX_PARKED_NS / 1e9)
        while self._parked and time.monotonic() < deadline:  # the hasher finishes what they wait for
            time.sleep(0.05)
            self.retry_parked()
        self.retry_parked(force=True)
        self.publish_watermark()  # after detaching: nothing is left in the kernel
        self._symbol_tables.close()
        self._module_maps.close()
        self._unwind.close()
        timeout_s = self.settings.shutdown_flush_timeout_s
        self._publisher.flush(timeout_s)
        snapshot = self.publish_statistics()
        remaining = self._publisher.close(min(timeout_s, 5.0))
        self.save_state(clean_stop=True)
        if remaining:
            log.warning("shutdown: %d record(s) left in the spool for the next run", remaining)
        log.info("agent stopped: calls %d, delivered %d, dropped %d %s, pending %d (spool %d bytes); "
                 "%d records published; detached %s; kernel counters %s",
                 snapshot.total_events, snapshot.delivered_events, snapshot.dropped_events,
                 dict(snapshot.dropped_by_reason), self._publisher.pending_calls, self._publisher.spool_bytes,
                 self.events_published, {p.probe_id: f"{p.detached_ns / 1e9:.1f}s" for p in snapshot.probes},
                 self._tracer.counters())
