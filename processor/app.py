"""The worker, a faust-streaming app: raw topic in, Engine, outputs out, checkpoints.

No logic lives here: processor/engine.py decides everything; this wires it to faust.

What faust does: it runs the consumer group (aiokafka), the fetch loop, the timers, and the
web server for /metrics, /healthz and /readyz. Its fetch loop hands each partition's fetched
raw records straight to the worker (_process_batch), in partition order, not through faust's
per-record message, conductor and stream, which cost more than the consume + decode floor on
their own (faust_config.StepFirstConsumer); an agent on the raw topic remains, for faust to
subscribe it. Every record the worker writes (outputs and checkpoints) goes through
librdkafka (kafka_io.OutputWriter), which batches and compresses in its own threads, where
faust's aiokafka producer did both in Python on the event loop.

What is built on top of it, for exactness (docs/processor.md, "Exactness"): faust commits
"every offset acknowledged so far", and a restart from there loses the calls of windows
still open; its exactly-once mode (transactions) has open bugs and commits the same offsets.
So faust's offset management is switched off for the raw topic (declared acks=False, read
with noack(): faust never acks a raw record, so never commits one) and the worker
checkpoints instead:
- a faust timer, every --checkpoint-interval-ms: flush the producer and check the delivery
  report of every output since the last checkpoint, write the partitions' checkpoints and
  wait for their acks, then commit each partition's replay offset through faust's consumer;
- on assignment: restore each partition from its checkpoint. faust's recovery then seeks
  every assigned partition to its committed offset (faust/tables/recovery.py,
  _resume_streams -> Consumer.perform_seek), which is the checkpoint's replay offset, or an
  earlier one if the worker died between writing a checkpoint and committing: the Engine
  skips records below its position, so faust's seek and the checkpoint always agree;
- on revocation (faust has stopped the flow and cleared the agent's buffer by then):
  checkpoint the revoked partitions, then forget them. faust rebalances eagerly: each
  rebalance revokes every partition and assigns anew, and each is restored from its
  checkpoint. On SIGTERM faust sends no revocation: the worker checkpoints before it leaves.
One asyncio lock makes "handle a record and send its outputs", a checkpoint, and a
rebalance step atomic with respect to each other, so a checkpoint never covers a record
whose outputs are not yet sent.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import faust
from confluent_kafka.admin import AdminClient
from faust.transport.consumer import Consumer as TransportConsumer
from faust.types import TP
from faust.web import Request, Response, View

from runtime_signals.kafka.provenance import ProvenanceError, RecordVerifier
from runtime_signals.processor import metrics
from runtime_signals.processor.checkpoint import checkpoint_topic
from runtime_signals.processor.engine import Engine, EngineSettings, Output
from runtime_signals.processor.errors import ConfigError, DeliveryError, ProcessorError
from runtime_signals.processor.faust_config import build_app, check_port_free
from runtime_signals.processor.inflight import InflightLog
from runtime_signals.processor.intake import Rejected
from runtime_signals.processor.kafka_io import (
    BinaryFeed,
    CheckpointStore,
    OutputWriter,
    partition_count,
    read_partition,
)
from runtime_signals.processor.settings import ProcessorSettings
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.schemas import codec, hashing

log = logging.getLogger(__name__)

WATERMARK = "io.runtimesignals.AgentWatermark"
_FEED_INTERVAL_S = 0.1     # new symbol tables, and windows whose wait for them ran out
_ACK_TIMEOUT_S = 30.0
_YIELD_EVERY = 256  # records of a fetched batch handled before the event loop gets a turn


def _log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("stopping the faust worker failed: %r", task.exception())


def is_ready(*, joined: bool, stopping: bool, rebalancing: bool, consuming: bool,
             assigned: set[int], restored: set[int]) -> bool:
    """/readyz: in the group, not stopping or rebalancing, consuming, and every assigned raw
    partition restored from its checkpoint. A worker the group gave no partition is ready
    too: with more replicas than partitions such pods would otherwise stay unready and
    stall a rolling update."""
    return joined and not stopping and not rebalancing and consuming and assigned <= restored


def _verifier(ca_file: Path | None) -> RecordVerifier | None:
    if ca_file is None:
        return None
    try:
        verifier = RecordVerifier.from_file(ca_file)
    except ProvenanceError as exc:
        raise ConfigError(f"processor.agent_ca_file: {exc}") from exc
    log.info("records are taken only when signed by an agent certificate of %s", ca_file)
    return verifier


class Worker:
    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        if settings.metrics_port is not None:
            check_port_free(settings.metrics_port)
        raw = settings.topics.raw
        self._registry = codec.SchemaRegistry.default()
        self._symbols = SymbolStore()
        # One verifier each for the raw records (the engine's thread) and for the tables (the
        # feed's): their session caches are not shared between threads.
        self._provenance = _verifier(settings.agent_ca_file)
        self._feed_provenance = _verifier(settings.agent_ca_file)
        self.engine = Engine(EngineSettings(settings.window, raw, settings.agent_idle_ms,
                                            settings.symbol_wait_ms, settings.max_pending_windows,
                                            max_event_ahead_ms=settings.max_event_ahead_ms,
                                            latest_retention_ms=settings.latest_retention_ms,
                                            latest_in_memory=settings.latest_states_in_memory,
                                            latest_paths_in_memory=settings.latest_paths_in_memory,
                                            latest_dir=settings.data_dir / settings.app_id),
                             self._symbols, self._registry, provenance=self._provenance)
        self._inflight = InflightLog(settings.inflight_dir / settings.app_id, raw) \
            if settings.inflight_dir is not None else None
        connection = settings.connection()
        admin = AdminClient(connection)
        raw_partitions = partition_count(admin, raw)
        out = settings.outputs
        names = {"summary": out.summaries, "path": out.paths, "latest": out.latest, "late": out.late,
                 "dlq": out.dlq}
        for topic in names.values():
            partition_count(admin, topic)  # fail now, naming the topic, rather than on the first write
        self._latest_partitions = partition_count(admin, out.latest)
        # Side readers (confluent-kafka, assign-only, never in the group): checkpoints and
        # latest state on assignment, symbol tables and module maps all along.
        self._checkpoints = CheckpointStore(connection, checkpoint_topic(raw, settings.app_id), self._registry,
                                            f"{settings.app_id}.checkpoint-reader")
        self._checkpoints.ensure(raw_partitions)
        self._feed = BinaryFeed(connection, settings.topics.symbols, settings.topics.modules, self._symbols,
                                self._registry, f"{settings.app_id}.binaries",
                                provenance=self._feed_provenance)
        self._written: dict[int, bytes] = {}       # last checkpoint written per partition
        self._writer = OutputWriter(connection)
        self._lock = asyncio.Lock()
        self._stopping = False
        self._ready_logged = False
        self._joined = False  # an assignment (possibly empty) has been handled
        self.fatal: BaseException | None = None
        self._worker: faust.Worker | None = None
        self._status = (0, time.monotonic())
        self._stop_task: asyncio.Future[Any] | None = None
        self._watermark_fingerprint = bytes.fromhex(self._registry.fingerprint_hex(WATERMARK))
        self._exposition = metrics.Exposition() if settings.metrics_port is not None else None

        self.app = app = build_app(settings)
        app.batch_handlers = {raw: self._process_batch}  # before faust makes its consumer
        self._output_topics = names
        raw_topic = app.topic(raw, key_type=bytes, value_type=bytes, acks=False)
        app.agent(raw_topic, name="raw-records")(self._process)
        interval_s = settings.checkpoint_interval_ms / 1000
        app.timer(interval_s, name="checkpoint")(self._on_checkpoint_timer)
        app.timer(interval_s, name="status")(self._publish_status)
        app.timer(_FEED_INTERVAL_S, name="binaries")(self._on_feed_timer)
        # mode types a receiver as (sender, *args, signal=..., **kwargs): these take the
        # one argument faust sends, by name.
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        if self._exposition is not None:
            self._add_pages()

    # -- records ---------------------------------------------------------------------

    async def _process(self, stream: faust.StreamT[bytes]) -> None:
        """faust's agent on the raw topic: it subscribes the worker to the topic. Its records
        never come this way: the consumer hands them to _process_batch as fetched
        (faust_config.StepFirstConsumer). One that did would mean a faust this worker does
        not know: it stops, saying so, rather than handle records two ways."""
        # noack() is Stream's, not in faust's StreamT interface.
        async for event in cast(faust.Stream[bytes], stream).noack().events():
            await self._fail(ProcessorError(
                f"{event.message.topic}[{event.message.partition}]@{event.message.offset} reached faust's stream; "
                f"this worker reads the raw topic through its consumer's batch handler only (faust "
                f"{faust.__version__}: check processor/faust_config.py's StepFirstConsumer against it)"))

    async def _process_batch(self, tp: TP, records: list[Any], generation: int) -> int:
        """A partition's fetched records (aiokafka's ConsumerRecords), in offset order. Each is
        handled, and its outputs sent, under the lock before the next, as one at a time from a
        stream. The rest of the batch is dropped once a rebalance has stopped the flow or
        started a new generation: the partition is re-read from its checkpoint (faust seeks
        it to the committed replay offset). Returns how many records, from the first, it took."""
        consumer = cast(TransportConsumer, self.app.consumer)
        for index, record in enumerate(records):
            if index and index % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # timers, rebalance steps and /healthz between records
            async with self._lock:
                if self._stopping or generation != self.app.consumer_generation_id or not consumer.flow_active:
                    return index
                partition = record.partition
                try:
                    if not self.engine.owns(partition) and not await self._restore(partition):
                        return index  # not assigned here (any more)
                    # A watermark may close windows: building and encoding their summaries
                    # (up to 16 MiB each) runs on a worker thread, so the event loop keeps
                    # serving fetches, timers and /healthz meanwhile. The lock, held
                    # throughout, keeps every other use of the engine out. Records, and
                    # watermarks that close nothing (most: every agent sends one to every
                    # partition), are handled inline: a thread hop costs more than their work.
                    if self._is_watermark(record.value):
                        outputs = self._handle(record, release=False)
                        if self.engine.has_closed(partition):
                            await self._send(outputs)
                            outputs = []
                            await asyncio.to_thread(self._release, partition, record.offset)
                    else:
                        outputs = self._handle(record)
                    if outputs:  # most records cause none: no await for them
                        await self._send(outputs)
                except Exception as exc:
                    await self._fail(exc)
                    return index
        return len(records)

    def _handle(self, message: Any, release: bool = True) -> list[Output]:
        """One raw record (an aiokafka ConsumerRecord) through the engine."""
        partition, offset = message.partition, message.offset
        headers = tuple(message.headers or ())
        inflight = self._inflight
        if inflight is not None and inflight.is_poison(partition, offset):
            return self.engine.reject(partition, offset, message.key, message.value, headers, Rejected(
                "killed_worker", "a worker died while processing this record, twice; not processed again "
                                 "(processor/inflight.py)"))
        # Kafka timestamps are whole milliseconds. Log-append time on the raw topic
        # (schemas/topics.py); on a topic left at create time the producer chose it, and the
        # bounds are only as good as the writers.
        timestamp_us = message.timestamp * 1000 if message.timestamp and message.timestamp > 0 else None
        if inflight is not None:
            inflight.begin(partition, offset)
        outputs = self.engine.handle(partition, offset, message.key, message.value, headers, timestamp_us, release)
        if inflight is not None and (release or not self.engine.has_closed(partition)):
            inflight.end(partition, offset)  # else in flight until _release() emitted what it closed
        return outputs

    def _release(self, partition: int, offset: int) -> None:
        """Emit the windows the watermark at offset closed, then end its in-flight mark (on a
        worker thread)."""
        self._write_released(partition)
        if self._inflight is not None:
            self._inflight.end(partition, offset)

    def _write_released(self, partition: int | None = None) -> None:
        """Emit and write the closed windows of a partition (None: all), one window at a time,
        so that a watermark closing thousands of containers' windows never holds all their
        outputs at once. Blocks: a worker thread's, under the lock, which keeps checkpoints
        out until it returns."""
        for outputs in self.engine.release_windows(partition):
            for output in outputs:
                self._write_waiting(*self._destination(output), output.key, output.value, output.headers)

    def _destination(self, output: Output) -> tuple[str, int | None]:
        if output.kind == "latest":
            # Next to the raw partition's other states, so a new owner reads one partition back.
            return self._output_topics[output.kind], output.source_partition % self._latest_partitions
        return self._output_topics[output.kind], None

    async def _send(self, outputs: list[Output]) -> None:
        for output in outputs:
            await self._write(*self._destination(output), output.key, output.value, output.headers)

    async def _write(self, topic: str, partition: int | None, key: bytes | None, value: bytes,
                     headers: Sequence[tuple[str, bytes]] = ()) -> None:
        if not self._writer.send(topic, key, value, partition, headers):
            await asyncio.to_thread(self._write_waiting, topic, partition, key, value, headers)

    def _write_waiting(self, topic: str, partition: int | None, key: bytes | None, value: bytes,
                       headers: Sequence[tuple[str, bytes]]) -> None:
        """Write one record, waiting while the producer's queue is full, but not for ever (the
        lock is held meanwhile, so no checkpoint could notice a broker that is gone). Blocks."""
        deadline = time.monotonic() + _ACK_TIMEOUT_S
        while not self._writer.send(topic, key, value, partition, headers):
            if time.monotonic() > deadline:
                raise DeliveryError(f"{topic} key={key!r}: the producer's queue stayed full for "
                                    f"{_ACK_TIMEOUT_S:.0f}s; is the broker reachable?")
            self._writer.wait_for_room()

    async def _acknowledged(self) -> None:
        """Return when the broker acknowledged every record written so far (acks=all), or raise
        DeliveryError naming the first it refused."""
        await asyncio.to_thread(self._writer.acknowledged, _ACK_TIMEOUT_S)

    # -- checkpoints -----------------------------------------------------------------

    async def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Acknowledge every output, then write and commit the partitions' checkpoints.
        Call it holding the lock."""
        chosen = self.engine.partitions() if partitions is None else partitions
        checkpoints = [c for c in (self.engine.checkpoint(p) for p in chosen) if c is not None]
        changed = [(c, c.encode(self._registry)) for c in checkpoints]
        changed = [(c, value) for c, value in changed if self._written.get(c.partition) != value]
        if not changed:
            return
        await self._acknowledged()  # everything a checkpoint covers is acknowledged first
        for checkpoint_, value in changed:
            key = f"{checkpoint_.raw_topic}|{checkpoint_.partition}".encode()
            await self._write(self._checkpoints.topic, checkpoint_.partition, key, value)
        await self._acknowledged()
        for checkpoint_, value in changed:
            self._written[checkpoint_.partition] = value
        # So that faust's seek-to-committed on the next assignment lands on the replay
        # offset. Consumer._commit is the transport's "commit exactly these offsets" (faust's
        # own commit path ends in it); it skips partitions no longer assigned and returns
        # False when the group has rebalanced meanwhile: the checkpoint still counts.
        raw = self.settings.topics.raw
        offsets = {TP(raw, c.partition): c.replay_from_offset for c, _ in changed}
        if not await cast(TransportConsumer, self.app.consumer)._commit(offsets):
            log.info("committing %s not done (rebalancing); the checkpoints were written", sorted(offsets.values()))

    async def _on_checkpoint_timer(self) -> None:
        async with self._lock:
            if self._stopping:
                return
            try:
                await self.checkpoint()
            except Exception as exc:
                await self._fail(exc)

    async def _on_feed_timer(self) -> None:
        if self._lock.locked():
            return  # a checkpoint or a rebalance step; the next tick comes soon enough
        async with self._lock:
            if self._stopping:
                return
            try:
                # Decoding symbol chunks (up to 512 KiB each), indexing tables and encoding
                # released windows run off the event loop; the lock keeps the engine and the
                # symbol store to this one thread meanwhile.
                await asyncio.to_thread(self._feed.poll)
                await asyncio.to_thread(self._write_released)
            except Exception as exc:
                await self._fail(exc)

    # -- rebalancing -----------------------------------------------------------------

    async def _on_assigned(self, app: faust.App, assigned: set[TP], **_: Any) -> None:
        raw = self.settings.topics.raw
        partitions = sorted(tp.partition for tp in assigned if tp.topic == raw)
        async with self._lock:
            self._joined = True
            for lost in set(self.engine.partitions()) - set(partitions):
                # Assigned elsewhere without a revoke here: its owner restores it.
                self.engine.revoke(lost)
                self._written.pop(lost, None)
                if self._inflight is not None:
                    self._inflight.close(lost)
            for partition in partitions:
                try:
                    await self._restore(partition)
                except Exception as exc:
                    await self._fail(exc)
                    return

    async def _restore(self, partition: int) -> bool:
        """Take a partition assigned to this worker from its checkpoint, unless it is
        already. Called on assignment, and by the agent should a record of the partition
        come first (faust resumes fetching concurrently with the assignment signal)."""
        if self.engine.owns(partition):
            return True
        raw = self.settings.topics.raw
        if TP(raw, partition) not in self.app.consumer.assignment():
            return False
        checkpoint = await asyncio.to_thread(self._checkpoints.read, partition)
        # Streamed from the topic into the engine's bounded latest states, off the event loop.
        await asyncio.to_thread(self.engine.assign, partition, checkpoint, self._latest_values(partition))
        if self._inflight is not None:
            suspect = self._inflight.open(partition)
            if suspect is not None:
                self.engine.counts["worker_deaths_in_flight"] += 1
        if checkpoint is None:
            log.info("assigned %s[%d]: no checkpoint, from the committed offset (else the earliest)", raw, partition)
        else:
            log.info("assigned %s[%d]: checkpoint restored, replay from offset %d, outputs resume at %d",
                     raw, partition, checkpoint.replay_from_offset, checkpoint.suppress_until_offset)
            self._written[partition] = checkpoint.encode(self._registry)
        return True

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        raw = self.settings.topics.raw
        async with self._lock:
            owned = sorted(tp.partition for tp in revoked if tp.topic == raw and self.engine.owns(tp.partition))
            try:
                await self.checkpoint(owned)
            except Exception as exc:
                await self._fail(exc)
            for partition in owned:
                self.engine.revoke(partition)
                if self._inflight is not None:
                    self._inflight.close(partition)
                self._written.pop(partition, None)
            log.info("revoked %s: checkpointed and dropped", owned)

    async def _on_shutdown(self, app: faust.App, **_: Any) -> None:
        # faust leaves the group after this without sending on_partitions_revoked.
        async with self._lock:
            if self._stopping:
                return
            self._stopping = True
            try:
                await self.checkpoint()
            except Exception as exc:
                self.fatal = self.fatal or exc
                log.error("final checkpoint failed: %s", exc)
        log.info("processor stopped: %s", dict(sorted(self.engine.counts.items())))

    def _latest_values(self, partition: int) -> Iterator[bytes]:
        topic, source = self.settings.outputs.latest, partition % self._latest_partitions
        for message in read_partition(self.settings.connection(), topic, source,
                                      f"{self.settings.app_id}.latest-reader"):
            yield message.value() or b""

    # -- failure, health, metrics ----------------------------------------------------

    def _is_watermark(self, value: bytes | None) -> bool:
        return value is not None and value[2:10] == self._watermark_fingerprint

    async def _fail(self, exc: BaseException) -> None:
        """Stop the worker: an output refused for good, a checkpoint that cannot be read or
        written. Nothing is checkpointed past it; a restart resumes from the last checkpoint."""
        if self.fatal is None:
            self.fatal = exc
            log.error("stopping: %s", exc)
        self._stopping = True
        if self._worker is not None and self._stop_task is None:
            # Referenced until done: the loop keeps only a weak reference to a task, and an
            # error in stopping must be seen, not dropped with the task.
            self._stop_task = asyncio.ensure_future(self._worker.stop())
            self._stop_task.add_done_callback(_log_task_error)

    def ready(self) -> bool:
        try:
            assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.settings.topics.raw}
        except Exception:
            return False
        return is_ready(joined=self._joined, stopping=self._stopping, rebalancing=bool(self.app.rebalancing),
                        consuming=self.app.flow_control.is_active(), assigned=assigned,
                        restored=set(self.engine.partitions()))

    def _add_pages(self) -> None:
        worker, exposition = self, self._exposition
        assert exposition is not None

        @self.app.page("/metrics")
        async def metrics_page(view: View, request: Request) -> Response:
            return view.bytes(exposition.render(), content_type=exposition.content_type)

        @self.app.page("/healthz")
        async def healthz(view: View, request: Request) -> Response:
            # Served by the event loop that runs the worker: an answer means it is alive.
            return view.text("ok\n")

        @self.app.page("/readyz")
        async def readyz(view: View, request: Request) -> Response:
            if worker.ready():
                return view.text("ready\n")
            return view.text("not ready: joining the group, restoring partitions or rebalancing\n", status=503)

    def _provenance_outcomes(self) -> dict[str, int]:
        outcomes: Counter[str] = Counter()
        for verifier in (self._provenance, self._feed_provenance):
            for key, count in (verifier.counts if verifier else {}).items():
                if key == "verified" or key.startswith("refused:"):
                    outcomes[key.removeprefix("refused:")] += count
        return dict(outcomes)

    def _provenance_sizes(self) -> dict[str, int]:
        if self._provenance is None or self._feed_provenance is None:
            return {}
        return {"provenance_sessions_raw": self._provenance.sizes()["provenance_sessions"],
                "provenance_sessions_tables": self._feed_provenance.sizes()["provenance_sessions"]}

    async def _publish_status(self) -> None:
        # The engine and the symbol store change on worker threads under the lock (records,
        # watermarks, the feed): they are read under it too. Waited for, not skipped: the
        # checkpoint timer ticks with this one and would otherwise take the lock first at
        # every tick, leaving the metrics stale.
        async with self._lock:
            if not self._ready_logged and self.ready():
                self._ready_logged = True
                log.info("consuming partitions %s", self.engine.partitions())
            if self._exposition is None:
                return
            events, at = self._status
            now, total = time.monotonic(), self.engine.counts["events"]
            self._status = (total, now)
            taken = metrics.Status(
                counts=dict(self.engine.counts), events_per_second=(total - events) / max(1e-3, now - at),
                open_windows=self.engine.open_windows(), pending_windows=self.engine.pending_windows(),
                output_queue_records=self._writer.queued(),
                symbol_tables=len(self._symbols), symbols_held=self._symbols.symbols_held,
                store_counts=dict(self._symbols.counts), watermarks_us=self.engine.watermarks_us(),
                caches={**self._symbols.sizes(), **self._provenance_sizes(), **self.engine.cache_sizes(),
                        **hashing.cache_sizes()},
                provenance=self._provenance_outcomes(),
                feed_errors={k.split(":", 1)[1]: v for k, v in self._symbols.counts.items()
                             if k.startswith("feed_error:")})
            positions = self.engine.positions()
        raw = self.settings.topics.raw
        previous = self._exposition.collector.status.lag_records
        lag: dict[int, int] = {}
        consumer = self.app.consumer
        for partition, position in positions.items():
            tp = TP(raw, partition)
            try:
                high: int | None = consumer.highwater(tp)  # the end offset the last fetch reported
                if high is None:
                    high = (await consumer.highwaters(tp)).get(tp)
            except Exception:
                high = None
            if high is not None:
                lag[partition] = max(0, high - position)
            elif partition in previous:
                lag[partition] = previous[partition]
        self._exposition.collector.status = dataclasses.replace(taken, lag_records=lag)

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Read the symbol tables and module maps to their end, then run faust until
        SIGINT/SIGTERM. Raises the error that stopped the worker, if any."""
        self._feed.catch_up()
        out = self.settings.outputs
        log.info("processor ready: group %s reads %s, writes %s, %s, %s", self.settings.app_id,
                 self.settings.topics.raw, out.summaries, out.paths, out.latest)
        self._worker = faust.Worker(self.app, loglevel=logging.getLevelName(logging.getLogger().level).lower(),
                                    quiet=True, override_logging=False)
        self._worker.spinner = None  # a terminal progress spinner; the log says the same
        try:
            self._worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None) and self.fatal is None:
                raise ProcessorError(f"faust worker exited with status {exc.code}; see the log above") from exc
        finally:
            self._feed.close()
            self._checkpoints.close()
            self._writer.close()
        if self.fatal is not None:
            if isinstance(self.fatal, ProcessorError):
                raise self.fatal
            raise ProcessorError(f"worker stopped: {self.fatal!r}") from self.fatal


# A worker's heap is mostly long-lived (open windows, named stacks, frames, latest states),
# and its allocations churn: at Python's default (a young collection every 700 allocations,
# an older one every 10 of those) the collector keeps traversing that heap. Collected less
# often, the Engine cost 5-8 % less CPU per record on the fleet recordings (docs/benchmarks.md);
# cyclic garbage waits a little longer, nothing else changes.
GC_THRESHOLDS = (20_000, 10, 10)


# glibc gives a thread that finds the heap busy an arena of its own, up to eight per core,
# and seldom returns what is freed in them: the worker's emission (a thread) and
# librdkafka's threads left a 1,000-container worker at 1.35-1.62 GB, 1.08-1.15 GB with
# two arenas, for the same CPU (docs/benchmarks.md, session 12). MALLOC_ARENA_MAX, when
# set, is the operator's choice and wins.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; False where the C
    library is not glibc (no mallopt) or MALLOC_ARENA_MAX is set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def run_worker(settings: ProcessorSettings) -> None:
    """Run one faust worker in the foreground until SIGINT/SIGTERM."""
    limit_malloc_arenas()  # before the worker's threads start
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what start-up made (modules, faust, the settings) is never garbage
    Worker(settings).run()
