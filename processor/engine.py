"""Raw records in, output records out: the processor's logic for the partitions one worker
owns. No I/O, no wall clock except the bounded wait for symbol tables.

Per partition it keeps the event clock, the open windows, the windows closed but waiting
for symbol tables, and what a checkpoint needs. docs/processor.md explains the rules;
in short:
- a record's outputs depend only on the records before it in its partition, so a replay
  of the partition gives the same bytes;
- a checkpoint names the earliest record any unemitted window depends on, the event
  clock there, and the last window emitted, so a worker restarting from it rebuilds the
  open windows exactly and writes nothing twice that is not byte-identical.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtime_signals.config.schema import ProcessorSection
from runtime_signals.kafka.provenance import RecordVerifier, speaks_for
from runtime_signals.processor.aggregate import STACK_FIELDS, NamedStacks, WindowAggregate, window_output
from runtime_signals.processor.checkpoint import Checkpoint, WindowMarker
from runtime_signals.processor.errors import ConfigError
from runtime_signals.processor.intake import (
    DEFAULT_LIMITS,
    CallRecord,
    Intake,
    Limits,
    Rejected,
    WatermarkRecord,
    read_raw,
)
from runtime_signals.processor.latest import CONTAINER_STATE, STACK_ITEM_FIELDS, ContainerState, LatestStates
from runtime_signals.processor.output_bounds import fit_summary, refresh_summary, unnamed_path
from runtime_signals.processor.symbolize import SymbolSource
from runtime_signals.processor.watermarks import ClockState, EventClock
from runtime_signals.processor.windows import PartitionWindows, WindowSpec
from runtime_signals.schemas import codec
from runtime_signals.schemas.hashing import RECIPE_V2, callstack_hash, callstack_hash_v2
from runtime_signals.schemas.topics import LARGE_RECORD_MAX_BYTES, OUTPUT_RETENTION_MS

_DEFAULTS = ProcessorSection()  # the one place of the defaults

log = logging.getLogger(__name__)

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
CALL_PATH = "io.runtimesignals.ObservedCallPath"
Headers = tuple[tuple[str, bytes], ...]
_LOGGED_PER_REASON = 10  # then rejections are logged at debug level only, counted always
# Replay points (offset, event clock there) are recorded at each checkpoint and, between
# them, after a watermark at most every this many records (or every as many records as
# there are agents, so that copying the clock stays O(1) per record however many agents
# write); at most _MAX_SNAPSHOTS are kept
# (thinned evenly), so a backlog between two checkpoints does not push the replay point
# far back, and memory stays bounded (each snapshot holds one entry per agent).
_SNAPSHOT_EVERY_RECORDS = 64
_MAX_SNAPSHOTS = 128


class SymbolIndex(SymbolSource, Protocol):
    def has_all(self, binary_digests: Iterable[str]) -> bool: ...

    def has_modules(self, binary_digests: Iterable[str]) -> bool: ...


@dataclass(frozen=True)
class EngineSettings:
    window: WindowSpec
    raw_topic: str
    agent_idle_ms: int = _DEFAULTS.agent_idle_ms
    # A closed window waits at most this long (wall clock) for the symbol tables and module
    # maps of its frames' binaries, then goes out with what has arrived (counted).
    symbol_wait_ms: int = _DEFAULTS.symbol_wait_ms
    # And at most this many windows per partition wait; beyond it the oldest goes out.
    max_pending_windows: int = _DEFAULTS.max_pending_windows
    # A call dated further than this after its record's broker timestamp goes to the DLQ
    # (clock_skew): it would open a window far ahead, pinning the replay point and the
    # memory of that window (docs/processor.md, "What the clock trusts").
    max_event_ahead_ms: int = _DEFAULTS.max_event_ahead_ms
    limits: Limits = DEFAULT_LIMITS
    # Outputs larger than their topics take are reduced, visibly (processor/output_bounds.py):
    # the paths topic keeps the broker's default 1 MiB records, the summaries and latest
    # topics take 16 MiB (schemas/topics.py); a margin for the record's own framing.
    max_path_bytes: int = 1_000_000
    max_summary_bytes: int = LARGE_RECORD_MAX_BYTES - 65_536
    # A container's latest state is forgotten once its last window is this much older than
    # the watermark (event time, so a replay forgets the same ones): the latest-state topic
    # deletes it after kafka.output_retention_ms too, and a node replacing its containers
    # for months would otherwise hold every one it ever saw.
    latest_retention_ms: int = OUTPUT_RETENTION_MS
    # Latest states held decoded (processor/latest.py); the others wait, compressed, in a
    # file under latest_dir (None: the system's temporary directory).
    latest_in_memory: int = _DEFAULTS.latest_states_in_memory
    # ... and at most this many paths summed over them: a state's size is its paths.
    latest_paths_in_memory: int = _DEFAULTS.latest_paths_in_memory
    latest_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.agent_idle_ms <= 0:
            raise ConfigError(f"agent_idle_ms={self.agent_idle_ms}: must be positive (--agent-idle-ms)")
        if self.symbol_wait_ms < 0:
            raise ConfigError(f"symbol_wait_ms={self.symbol_wait_ms}: must not be negative (--symbol-wait-ms)")
        if self.max_event_ahead_ms < 0:
            raise ConfigError(f"max_event_ahead_ms={self.max_event_ahead_ms}: must not be negative "
                              f"(--max-event-ahead-ms)")
        if self.latest_in_memory < 1:
            raise ConfigError(f"latest_in_memory={self.latest_in_memory}: must be at least 1 "
                              f"(processor.latest_states_in_memory)")
        if self.latest_paths_in_memory < 1:
            raise ConfigError(f"latest_paths_in_memory={self.latest_paths_in_memory}: must be at least 1 "
                              f"(processor.latest_paths_in_memory)")
        if self.max_pending_windows < 0:
            raise ConfigError(f"max_pending_windows={self.max_pending_windows}: must not be negative "
                              f"(--max-pending-windows)")


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write. kind: summary, path, latest, late or dlq."""

    kind: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
    source_partition: int = -1


@dataclass
class ClosedWindow:
    marker: WindowMarker
    window: WindowAggregate
    needs_tables: frozenset[str]
    needs_modules: frozenset[str]
    closed_at_s: float


def summary_key(container_id: str, window_start_us: int) -> bytes:
    """Key of a window's summary: one per container per window, so compaction keeps the
    latest emission of each window and a consumer can look one up."""
    return f"{container_id}|{window_start_us}".encode()


class PartitionState:
    def __init__(self, partition: int, settings: EngineSettings, checkpoint: Checkpoint | None) -> None:
        self.partition = partition
        clock_state = checkpoint.clock if checkpoint else None
        self.clock = EventClock(settings.agent_idle_ms, clock_state)
        self.windows: PartitionWindows[WindowAggregate] = PartitionWindows(settings.window)
        list(self.windows.advance(self.clock.watermark_us))  # no windows yet: nothing closes
        self.pending: deque[ClosedWindow] = deque()
        self.latest_checked_us = 0  # watermark at the last look for idle containers
        # Next offset to handle; None until the first record when there is no checkpoint.
        self.position: int | None = checkpoint.replay_from_offset if checkpoint else None
        self.suppress_until = checkpoint.suppress_until_offset if checkpoint else -1
        self.emitted_through: WindowMarker | None = checkpoint.emitted_through if checkpoint else None
        # (offset, clock there): candidate replay points, oldest first.
        self.snapshots: deque[tuple[int, ClockState]] = deque()
        if checkpoint:
            self.snapshots.append((checkpoint.replay_from_offset, checkpoint.clock))


# Stacks kept named (aggregate.NamedStacks): a fleet's hot stacks, about 9 KB each with their
# encodings (74 MB when full; measured with tracemalloc on the fleet recording).
NAMED_STACKS = 8192


class Engine:
    """Windows and aggregates of the partitions this worker owns."""

    def __init__(self, settings: EngineSettings, symbols: SymbolIndex,
                 registry: codec.SchemaRegistry | None = None,
                 monotonic_s: Callable[[], float] = time.monotonic,
                 provenance: RecordVerifier | None = None) -> None:
        self.settings = settings
        self._symbols = symbols
        # With a CA (processor.agent_ca_file): only records an agent signed, and only for itself.
        self._provenance = provenance
        self._registry = registry or codec.SchemaRegistry.default()
        self._now_s = monotonic_s
        self._states: dict[int, PartitionState] = {}
        self.counts: Counter[str] = Counter()
        self.latest = LatestStates(settings.latest_dir or Path(tempfile.gettempdir()) / "runtime-signals",
                                   settings.latest_in_memory, settings.latest_paths_in_memory,
                                   lambda record: codec.encode(record, CONTAINER_STATE, self._registry),
                                   lambda value: codec.decode(value, self._registry, CONTAINER_STATE).record,
                                   self.counts)
        self.named_stacks = NamedStacks(NAMED_STACKS)
        # A named stack's fields are encoded once, for its path records and its latest-state items.
        self._path_template = codec.template(CALL_PATH, STACK_FIELDS, self._registry)
        self._state_item_template = codec.item_template(CONTAINER_STATE, "call_paths", STACK_ITEM_FIELDS,
                                                        self._registry)

    # -- ownership -------------------------------------------------------------------

    def assign(self, partition: int, checkpoint: Checkpoint | None,
               latest_values: Iterable[bytes] = ()) -> int | None:
        """Take a partition, from its checkpoint if it has one, and the ContainerState
        records last written for it, encoded (the latest topic's partition: records of
        other source partitions are passed over). Returns the offset to consume from
        (None: the group's committed offset, else the earliest)."""
        if checkpoint is not None:
            checkpoint.check_settings(self.settings.window, self.settings.agent_idle_ms,
                                      f"checkpoint of {self.settings.raw_topic}[{partition}]")
        state = PartitionState(partition, self.settings, checkpoint)
        for position, exc in self.latest.restore(partition, latest_values):
            self.counts["latest_records_skipped"] += 1
            log.warning("latest state of partition %d, record %d read back: skipped: %s", partition, position, exc)
        self._states[partition] = state
        return checkpoint.replay_from_offset if checkpoint else None

    def revoke(self, partition: int) -> None:
        """Drop a partition's state; its next owner rebuilds it from the checkpoint."""
        self._states.pop(partition, None)
        self.latest.drop_partition(partition)

    def partitions(self) -> list[int]:
        return sorted(self._states)

    def owns(self, partition: int) -> bool:
        return partition in self._states

    def cache_sizes(self) -> dict[str, int]:
        """Entries in the engine's caches, for /metrics."""
        return {**self.latest.sizes(), "named_stacks": len(self.named_stacks)}

    def open_windows(self) -> int:
        return sum(len(s.windows) for s in self._states.values())

    def pending_windows(self) -> int:
        return sum(len(s.pending) for s in self._states.values())

    def watermarks_us(self) -> dict[int, int]:
        return {p: s.clock.watermark_us for p, s in self._states.items()}

    def positions(self) -> dict[int, int]:
        return {p: s.position for p, s in self._states.items() if s.position is not None}

    # -- records ---------------------------------------------------------------------

    def handle(self, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Headers = (), broker_timestamp_us: int | None = None,
               release: bool = True) -> list[Output]:
        """Process one raw record; returns the outputs it causes. broker_timestamp_us is the
        record's Kafka timestamp (log-append time on the raw topic, docs/processor.md): event
        times are bounded by it. None (a record without one) leaves them unbounded, counted.
        With release False, the windows a watermark closes wait for release(partition)
        (has_closed() says whether there are any), so that a caller can emit them elsewhere."""
        state = self._states[partition]
        if state.position is None:
            state.position = offset
            state.snapshots.append((offset, state.clock.state()))
        if offset < state.position:
            self.counts["duplicates_skipped"] += 1  # delivered twice around a seek
            return []
        state.position = offset + 1
        replaying = offset < state.suppress_until
        if replaying:
            self.counts["replayed_records"] += 1
        else:
            self.counts["raw_records"] += 1
        intake = read_raw(value, self._registry, self.settings.limits)
        if self._provenance is not None and not isinstance(intake, Rejected):
            intake = self._authenticated(key, value, headers, broker_timestamp_us, intake)
        if broker_timestamp_us is None or broker_timestamp_us <= 0:
            broker_timestamp_us = None
            if not replaying:
                self.counts["records_without_timestamp"] += 1
        if isinstance(intake, WatermarkRecord):
            if not state.clock.knows(intake.agent_id) and len(state.clock) >= self.settings.limits.max_agents:
                intake = Rejected("too_many_agents", f"agent_id {intake.agent_id!r} would be agent number "
                                  f"{len(state.clock) + 1} of this partition; at most "
                                  f"{self.settings.limits.max_agents} are tracked")
            else:
                return self._watermark(state, offset, intake, replaying, broker_timestamp_us, release)
        elif isinstance(intake, CallRecord):
            ahead_us = self.settings.max_event_ahead_ms * 1000
            if broker_timestamp_us is not None and intake.observed_at_us > broker_timestamp_us + ahead_us:
                intake = Rejected("clock_skew", f"observed_at_us={intake.observed_at_us} is "
                                  f"{(intake.observed_at_us - broker_timestamp_us) // 1000} ms after the record's "
                                  f"broker timestamp {broker_timestamp_us}; at most "
                                  f"{self.settings.max_event_ahead_ms} ms are taken (--max-event-ahead-ms)")
            else:
                return self._call(state, offset, key, value, headers, intake, replaying)
        return self._reject(state, offset, key, value, headers, intake, replaying)

    def _authenticated(self, key: bytes | None, value: bytes | None, headers: Headers,
                       broker_timestamp_us: int | None, intake: CallRecord | WatermarkRecord) -> Intake:
        """The record as read when an agent signed it and speaks for itself; else why not.
        Certificates are checked at the record's broker timestamp, so a replay decides alike."""
        assert self._provenance is not None
        found = self._provenance.verify("raw", key, value, headers,
                                        None if broker_timestamp_us is None else broker_timestamp_us // 1000)
        if not found.verified:
            return Rejected("unauthenticated", f"{found.problem} (processor.agent_ca_file)")
        assert found.principal is not None
        if not speaks_for(found.principal, intake.agent_id):
            return Rejected("impersonation", f"signed by {found.principal!r}, the record claims agent "
                            f"{intake.agent_id!r}: an agent speaks only for itself")
        return intake

    def reject(self, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Headers, rejected: Rejected) -> list[Output]:
        """Route one raw record to the DLQ without reading it (a record that killed a worker,
        processor/inflight.py), advancing the partition past it as handle() would."""
        state = self._states[partition]
        if state.position is None:
            state.position = offset
            state.snapshots.append((offset, state.clock.state()))
        if offset < state.position:
            self.counts["duplicates_skipped"] += 1
            return []
        state.position = offset + 1
        replaying = offset < state.suppress_until
        self.counts["replayed_records" if replaying else "raw_records"] += 1
        return self._reject(state, offset, key, value, headers, rejected, replaying)

    def _watermark(self, state: PartitionState, offset: int, mark: WatermarkRecord,
                   replaying: bool, broker_timestamp_us: int | None, release: bool) -> list[Output]:
        if not replaying:
            self.counts["watermarks"] += 1
        promise_us = mark.watermark_us
        if broker_timestamp_us is not None and promise_us > broker_timestamp_us:
            # No agent can know that no call will come after the broker received its promise:
            # a promise beyond that is a fast clock or a lie, and is worth only the broker's time.
            promise_us = broker_timestamp_us
            if not replaying:
                self.counts["watermarks_clamped"] += 1
        regressions = state.clock.sequence_regressions
        advanced = state.clock.apply(mark.agent_id, promise_us, mark.sequence)
        if state.clock.sequence_regressions > regressions and not replaying:
            self.counts["watermark_sequence_regressions"] += 1
            if self.counts["watermark_sequence_regressions"] <= _LOGGED_PER_REASON:
                log.warning("%s[%d]@%d: watermark of agent %r with sequence %d, not above the last one applied: "
                            "a duplicate, or two writers using one agent id (its promise is still the highest "
                            "either made, clamped to broker time)", self.settings.raw_topic, state.partition,
                            offset, mark.agent_id, mark.sequence)
        every = max(_SNAPSHOT_EVERY_RECORDS, len(state.clock))
        if state.position is not None and state.position - state.snapshots[-1][0] >= every:
            _remember(state)
        if not advanced:
            return []
        self._forget_idle_containers(state)
        now_s = self._now_s()
        for key, window in state.windows.advance(state.clock.watermark_us):
            marker = (offset, key.start_us, key.container_id)
            if state.emitted_through is not None and marker <= state.emitted_through:
                self.counts["windows_suppressed"] += 1  # emitted before the checkpoint
                continue
            state.pending.append(ClosedWindow(marker, window, *window.needs(), now_s))
        return [output for outputs in self._release(state, now_s) for output in outputs] if release else []

    def _forget_idle_containers(self, state: PartitionState) -> None:
        watermark_us = state.clock.watermark_us
        retention_us = self.settings.latest_retention_ms * 1000
        # Looked at once per tenth of the retention: the scan is over every container.
        if watermark_us - state.latest_checked_us < retention_us // 10:
            return
        state.latest_checked_us = watermark_us
        self.counts["containers_forgotten"] += self.latest.forget_idle(state.partition, watermark_us - retention_us)

    def _call(self, state: PartitionState, offset: int, key: bytes | None, value: bytes | None,
              headers: Headers, call: CallRecord, replaying: bool) -> list[Output]:
        spec = self.settings.window
        windows = state.windows
        if not replaying and call.last_observed_at_us != call.observed_at_us and \
                spec.start_of(call.last_observed_at_us) != spec.start_of(call.observed_at_us):
            # The agent folded calls of two windows into one record: the window length is not
            # a multiple of its flush interval. Counted in the first call's window, reported.
            self.counts["records_spanning_windows"] += 1
            self.counts["calls_spanning_windows"] += call.observation_count
            if self.counts["records_spanning_windows"] <= _LOGGED_PER_REASON:
                log.warning("%s[%d]@%d: a folded record of %d calls spans windows (%d..%d us) and is counted in "
                            "the first: make the window (%d ms) a multiple of the agents' "
                            "--watermark-interval-ms", self.settings.raw_topic, state.partition, offset,
                            call.observation_count, call.observed_at_us, call.last_observed_at_us, spec.size_ms)
        if not windows.is_late(call.observed_at_us):
            window = windows.find(call.container_id, call.observed_at_us) or \
                self._open_window(windows, call.container_id, call.observed_at_us, offset)
            full = window.event_ids_full
            if window.is_repeat(call, self.settings.limits.max_event_ids_per_window):
                if not replaying:
                    self.counts["repeated_records"] += 1
                    self.counts["repeated_events"] += call.observation_count
                return []
            window.add(call)
            if not replaying:
                self.counts["events"] += call.observation_count
                if window.event_ids_full and not full:
                    self.counts["windows_event_ids_full"] += 1
            return []
        # Late: counted in the container's window that holds the watermark now (it is
        # open: it closes at its end plus the lateness, beyond the watermark).
        self._open_window(windows, call.container_id, windows.watermark_us, offset).add_late(call.observation_count)
        if replaying:
            return []
        self.counts["late_records"] += 1
        self.counts["late_events"] += call.observation_count
        window_start_us = spec.start_of(call.observed_at_us)
        late_headers = headers + self._source_headers(state.partition, offset) + (
            ("signals.late.window_start_us", str(window_start_us).encode()),
            ("signals.late.watermark_us", str(windows.watermark_us).encode()),
            ("signals.late.counted_in_window_start_us", str(spec.start_of(windows.watermark_us)).encode()),
        )
        return [Output("late", key, value or b"", late_headers, state.partition)]

    def _open_window(self, windows: PartitionWindows[WindowAggregate], container_id: str, at_us: int,
                     offset: int) -> WindowAggregate:
        """The container's window holding at_us, opened by the record at offset if it is not open."""
        size_us = self.settings.window.size_us
        return windows.window_for(container_id, at_us,
                                  lambda key: WindowAggregate(key, key.start_us + size_us, first_offset=offset))

    def _reject(self, state: PartitionState, offset: int, key: bytes | None, value: bytes | None,
                headers: Headers, rejected: Rejected, replaying: bool) -> list[Output]:
        if replaying:
            return []
        self.counts[f"dlq:{rejected.reason}"] += 1
        logged = self.counts[f"dlq:{rejected.reason}"] <= _LOGGED_PER_REASON
        log.log(logging.WARNING if logged else logging.DEBUG,
                "%s[%d]@%d to the dead-letter topic: %s: %s", self.settings.raw_topic, state.partition,
                offset, rejected.reason, rejected.error)
        dlq_headers = (*headers, ("signals.dlq.reason", rejected.reason.encode()), ("signals.dlq.error", rejected.error.encode("utf-8", "replace")), *self._source_headers(state.partition, offset))
        return [Output("dlq", key, value or b"", dlq_headers, state.partition)]

    def _source_headers(self, partition: int, offset: int) -> Headers:
        # (topic, partition, offset) identify the original: a reader dedupes by them.
        return (("signals.source.topic", self.settings.raw_topic.encode()),
                ("signals.source.partition", str(partition).encode()),
                ("signals.source.offset", str(offset).encode()))

    # -- emission --------------------------------------------------------------------

    def release(self, partition: int | None = None) -> list[Output]:
        """Emit the closed windows (of one partition, or all) whose symbol tables are complete
        or whose wait ran out."""
        return [output for outputs in self.release_windows(partition) for output in outputs]

    def release_windows(self, partition: int | None = None) -> Iterator[list[Output]]:
        """release(), one window's outputs at a time: a watermark may close the windows of
        thousands of containers, and their outputs at once were hundreds of megabytes."""
        now_s = self._now_s()
        for chosen in sorted(self._states) if partition is None else [partition]:
            yield from self._release(self._states[chosen], now_s)

    def has_closed(self, partition: int) -> bool:
        """Whether closed windows of the partition wait to go out."""
        return bool(self._states[partition].pending)

    def _release(self, state: PartitionState, now_s: float) -> Iterator[list[Output]]:
        # Strictly in close order, so "emitted" is always a prefix: what checkpoints record.
        wait_s = self.settings.symbol_wait_ms / 1000
        while state.pending:
            head = state.pending[0]
            complete = self._symbols.has_all(head.needs_tables) and self._symbols.has_modules(head.needs_modules)
            if not complete:
                if now_s - head.closed_at_s < wait_s and len(state.pending) <= self.settings.max_pending_windows:
                    break
                self.counts["windows_waited_out"] += 1  # goes out with what has arrived
            state.pending.popleft()
            yield self._emit(state, head, complete)

    def _emit(self, state: PartitionState, closed: ClosedWindow, complete: bool) -> list[Output]:
        window = closed.window
        # Stacks named earlier are reused only while every table and map they need is here:
        # a window that went out without some names them as a fresh run would.
        built = window_output(window, self._symbols, self.named_stacks if complete else None)
        container, start_us = window.key.container_id, window.key.start_us
        path_outputs = []
        identities = None
        # A path is encoded once: its record's body is also its item in the summary (the
        # same ObservedCallPath type), keyed by the dict the summary holds.
        bodies: dict[int, bytes] = {}
        stacks = {}  # a path's named stack, while the path has the stack's fields
        for path, stack in zip(built.paths, built.stacks, strict=True):
            path_key = f"{container}|{start_us}|{path['callstack_hash']}".encode()
            parts = stack.encoded.get(self._path_template.name)
            if parts is None:
                parts = stack.encoded[self._path_template.name] = self._path_template.fixed_parts(path)
            encoded = self._path_template.encode(path, parts)
            if len(encoded) <= self.settings.max_path_bytes:
                stacks[id(path)] = stack
            else:
                if identities is None:
                    by_recipe = (callstack_hash_v2 if path.get("hash_recipe") == RECIPE_V2 else callstack_hash)
                    identities = {by_recipe(p.identities): p.identities for p in window.paths.values()}
                unnamed_path(path, identities[path["callstack_hash"]])  # also in the summary: same dict
                encoded = codec.encode(path, CALL_PATH, self._registry)
                self.counts["paths_unnamed_oversize"] += 1
            bodies[id(path)] = encoded[codec.HEADER_BYTES:]
            path_outputs.append(Output("path", path_key, encoded, (), state.partition))
        if identities is not None:
            refresh_summary(built.summary)
        summary, dropped = fit_summary(
            built.summary, lambda r: codec.encode_with_items(r, SUMMARY, self._registry, "call_paths",
                                                             [bodies[id(p)] for p in r["call_paths"]]),
            self.settings.max_summary_bytes)
        if dropped:
            self.counts["summary_paths_dropped_oversize"] += dropped
            log.warning("summary of %s window %d: %d call paths left out to fit %d bytes (their calls are in "
                        "dropped_events; every path is on the paths topic)", container, start_us, dropped,
                        self.settings.max_summary_bytes)
        outputs = [Output("summary", summary_key(container, start_us), summary, (), state.partition)]
        outputs += path_outputs
        latest = self.latest.get(state.partition, container) or ContainerState(container, state.partition)
        if latest.fold(built.summary):
            for path in built.summary["call_paths"]:
                named = stacks.get(id(path))
                if named is not None:
                    item = latest.paths[path["callstack_hash"]]
                    parts = named.encoded.get(self._state_item_template.name)
                    if parts is None:
                        parts = named.encoded[self._state_item_template.name] = \
                            self._state_item_template.fixed_parts(item)
                    latest.items[path["callstack_hash"]] = self._state_item_template.body(item, parts)
            encoded = latest.encoded = latest.encode(self._registry)
            self.latest.put(state.partition, latest)
            if len(encoded) <= self.settings.max_summary_bytes:
                outputs.append(Output("latest", container.encode(), encoded, (), state.partition))
            else:
                # Not sent: the topic would refuse it and stop the worker. Counted; the
                # container's summaries still say everything.
                self.counts["latest_oversize"] += 1
        state.emitted_through = closed.marker
        self.counts["windows_emitted"] += 1
        if built.executables_omitted:
            self.counts["executables_omitted"] += built.executables_omitted
        if built.unresolved_frames:
            self.counts["windows_unresolved"] += 1
            self.counts["unresolved_frames"] += built.unresolved_frames
        log.debug("window emitted: partition=%d container=%s start_us=%d calls=%d paths=%d late=%d "
                  "unresolved_frames=%d", state.partition, container, start_us, window.total_events,
                  len(built.paths), window.late_events, built.unresolved_frames)
        return outputs

    # -- checkpoints -----------------------------------------------------------------

    def checkpoint(self, partition: int) -> Checkpoint | None:
        """Where this partition can restart now. Call it only when every output returned
        so far has been acknowledged by the broker (or will be before it is written)."""
        state = self._states[partition]
        position = state.position
        if position is None:
            return None
        _remember(state)
        needed = [w.first_offset for w in state.windows.states()]
        needed += [c.window.first_offset for c in state.pending]
        earliest = min(needed, default=position)
        while len(state.snapshots) > 1 and state.snapshots[1][0] <= earliest:
            state.snapshots.popleft()
        replay_from, clock = state.snapshots[0]
        return Checkpoint(
            raw_topic=self.settings.raw_topic, partition=partition, replay_from_offset=replay_from,
            suppress_until_offset=max(position, state.suppress_until), window=self.settings.window,
            agent_idle_ms=self.settings.agent_idle_ms, clock=clock, emitted_through=state.emitted_through)


def _remember(state: PartitionState) -> None:
    """Record the current position and event clock as a replay point."""
    assert state.position is not None
    if state.snapshots and state.snapshots[-1][0] == state.position:
        return
    state.snapshots.append((state.position, state.clock.state()))
    if len(state.snapshots) > _MAX_SNAPSHOTS:
        # Keep the first (the current replay point), the last, and every second one between.
        kept = list(state.snapshots)
        state.snapshots = deque(kept[:1] + kept[1:-1][1::2] + kept[-1:])
