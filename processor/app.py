"""The worker: Kafka in, Engine, Kafka out, checkpoints. No logic lives here.

One consumer-group member (cooperative-sticky assignment) reads the raw topic; partitions
are the unit of state, so a partition moves between workers whole. On assignment the
worker restores the partition from its checkpoint and seeks to the checkpoint's replay
offset; on revocation it checkpoints the partition first. docs/processor.md explains why
this counts every call exactly once across kill -9, restarts and rebalances.

faust-streaming is not used for this stage: its commits cover every acknowledged
offset with no room for the replay point and state a checkpoint needs, and its
exactly-once mode has open bugs. confluent-kafka gives the three controls the mechanism
needs: the offset to seek to on assignment, a delivery report per output, and commits
made only when the worker decides.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_STORED, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas import codec
from schemas.errors import SchemaError
from schemas.topics import TopicNames

from . import metrics
from .checkpoint import checkpoint_topic
from .engine import Engine, EngineSettings
from .errors import ConfigError
from .kafka_io import (
    BinaryFeed,
    CheckpointStore,
    OutputWriter,
    headers_of,
    located,
    partition_count,
    read_partition,
)
from .symbol_store import SymbolStore
from .windows import WindowSpec

log = logging.getLogger(__name__)

CONTAINER_STATE = "io.runtimesignals.ContainerState"


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    window: WindowSpec
    topics: TopicNames = field(default_factory=TopicNames)       # raw, symbols, modules are read here
    output_topics: TopicNames | None = None                      # default: topics
    app_id: str = "runtime-signals-processor"
    group_instance_id: str | None = None
    agent_idle_ms: int = 30_000
    symbol_wait_ms: int = 10_000
    max_pending_windows: int = 10_000
    checkpoint_interval_ms: int = 1_000
    session_timeout_ms: int = 10_000
    metrics_port: int | None = None
    # librdkafka connection settings (security, client id) laid over bootstrap_servers:
    # runtime_signals/config.py's KafkaSettings.librdkafka_config().
    kafka_config: dict[str, Any] = field(default_factory=dict)

    def connection(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_config}

    def __post_init__(self) -> None:
        if self.checkpoint_interval_ms <= 0:
            raise ConfigError(f"checkpoint_interval_ms={self.checkpoint_interval_ms}: must be positive "
                              f"(--checkpoint-interval-ms)")

    @property
    def outputs(self) -> TopicNames:
        return self.output_topics or self.topics


class Worker:
    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        raw = settings.topics.raw
        self._registry = codec.SchemaRegistry.default()
        self._symbols = SymbolStore()
        self.engine = Engine(EngineSettings(settings.window, raw, settings.agent_idle_ms,
                                            settings.symbol_wait_ms, settings.max_pending_windows),
                             self._symbols, self._registry)
        connection = settings.connection()
        admin = AdminClient(connection)
        raw_partitions = partition_count(admin, raw)
        out = settings.outputs
        topics = {"summary": out.summaries, "path": out.paths, "latest": out.latest, "late": out.late,
                  "dlq": out.dlq}
        for topic in topics.values():
            partition_count(admin, topic)  # fail now, naming the topic, rather than on the first write
        self._latest_topic = out.latest
        self._latest_partitions = partition_count(admin, out.latest)
        self._writer = OutputWriter(connection, topics, self._latest_partitions)
        self._checkpoints = CheckpointStore(connection, checkpoint_topic(raw, settings.app_id), self._registry,
                                            f"{settings.app_id}.checkpoint-reader")
        self._checkpoints.ensure(raw_partitions)
        self._feed = BinaryFeed(connection, settings.topics.symbols, settings.topics.modules, self._symbols,
                                self._registry, f"{settings.app_id}.binaries")
        self._written: dict[int, bytes] = {}   # last checkpoint written per partition
        config: dict[str, Any] = {
            **connection,
            "group.id": settings.app_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            # Notice a rebalance (a worker joining) within a third of the session timeout.
            "heartbeat.interval.ms": max(100, min(3000, settings.session_timeout_ms // 3)),
        }
        if settings.group_instance_id:
            # Static membership: a restarted worker takes its partitions back at once.
            config["group.instance.id"] = settings.group_instance_id
        self._consumer = Consumer(config)
        self._collector = metrics.serve(settings.metrics_port) if settings.metrics_port else None

    # -- rebalancing -----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            checkpoint = self._checkpoints.read(tp.partition)
            latest = self._latest_records(tp.partition)
            offset = self.engine.assign(tp.partition, checkpoint, latest)
            tp.offset = OFFSET_STORED if offset is None else offset
            if checkpoint is None:
                log.info("assigned %s[%d]: no checkpoint, from the committed offset (else the earliest)",
                         tp.topic, tp.partition)
            else:
                log.info("assigned %s[%d]: checkpoint restored, replay from offset %d, outputs resume at %d",
                         tp.topic, tp.partition, checkpoint.replay_from_offset, checkpoint.suppress_until_offset)
            if checkpoint is not None:
                self._written[tp.partition] = checkpoint.encode(self._registry)
        consumer.incremental_assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = [tp.partition for tp in partitions if self.engine.owns(tp.partition)]
        self.checkpoint(owned)
        for partition in owned:
            self.engine.revoke(partition)
            self._written.pop(partition, None)
        log.info("revoked %s: checkpointed and dropped", sorted(owned))
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member owns them already: its checkpoints count, not ours.
        for tp in partitions:
            self.engine.revoke(tp.partition)
            self._written.pop(tp.partition, None)
        log.warning("lost %s without a revoke (session timed out?); dropped", [tp.partition for tp in partitions])
        consumer.incremental_unassign(partitions)

    def _latest_records(self, partition: int) -> list[dict[str, Any]]:
        records = []
        source = partition % self._latest_partitions
        for message in read_partition(self.settings.connection(), self._latest_topic, source,
                                      f"{self.settings.app_id}.latest-reader"):
            try:
                records.append(codec.decode(message.value() or b"", self._registry, CONTAINER_STATE).record)
            except SchemaError as exc:
                log.warning("%s[%d]@%d: latest-state record skipped: %s", self._latest_topic, source,
                            message.offset(), exc)
        return records

    # -- checkpoints -----------------------------------------------------------------

    def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Flush every output, then write and commit the partitions' checkpoints."""
        chosen = self.engine.partitions() if partitions is None else partitions
        checkpoints = [c for c in (self.engine.checkpoint(p) for p in chosen) if c is not None]
        changed = [(c, c.encode(self._registry)) for c in checkpoints]
        changed = [(c, value) for c, value in changed if self._written.get(c.partition) != value]
        if not changed:
            return
        self._writer.flush()  # everything a checkpoint covers is acknowledged first
        for checkpoint_, value in changed:
            self._writer.write_raw(self._checkpoints.topic, f"{checkpoint_.raw_topic}|{checkpoint_.partition}".encode(),
                                   value, checkpoint_.partition)
        self._writer.flush()
        for checkpoint_, value in changed:
            self._written[checkpoint_.partition] = value
        try:
            # For lag tools and as the fallback start; the checkpoint is what restarts use.
            self._consumer.commit(offsets=[TopicPartition(self.settings.topics.raw, c.partition,
                                                          c.replay_from_offset) for c, _ in changed],
                                  asynchronous=False)
        except KafkaException as exc:
            log.warning("committing offsets failed (checkpoints were written): %s", exc.args[0])

    # -- the loop --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._feed.catch_up()
        raw = self.settings.topics.raw
        self._consumer.subscribe([raw], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        log.info("processor ready: group %s reads %s, writes %s, %s, %s", self.settings.app_id, raw,
                 self.settings.outputs.summaries, self.settings.outputs.paths, self.settings.outputs.latest)
        interval_s = self.settings.checkpoint_interval_ms / 1000
        next_checkpoint = next_status = time.monotonic() + interval_s
        status_events, status_at = 0, time.monotonic()
        try:
            while not stop.is_set():
                if self._feed.poll():
                    self._write(self.engine.release())
                for message in self._consumer.consume(500, 0.1):
                    if message.error():
                        log.warning("consuming %s: %s", raw, message.error())
                        continue
                    _, partition, offset = located(message)
                    if not self.engine.owns(partition):
                        continue  # fetched before its partition was revoked
                    self._write(self.engine.handle(partition, offset, message.key(), message.value(),
                                                   headers_of(message)))
                self._write(self.engine.release())
                self._writer.poll()
                now = time.monotonic()
                if now >= next_checkpoint:
                    self.checkpoint()
                    next_checkpoint = now + interval_s
                if now >= next_status:
                    events = self.engine.counts["events"]
                    self._publish_status((events - status_events) / (now - status_at))
                    status_events, status_at, next_status = events, now, now + interval_s
            self.checkpoint()
        finally:
            self._consumer.close()  # revokes (and so checkpoints) what is still assigned
            self._writer.flush()
            self._feed.close()
            self._checkpoints.close()
        log.info("processor stopped: %s", dict(sorted(self.engine.counts.items())))

    def _write(self, outputs: list[Any]) -> None:
        for output in outputs:
            self._writer.write(output)

    def _publish_status(self, events_per_second: float) -> None:
        if self._collector is None:
            return
        lag: dict[int, int] = {}
        previous = self._collector.status.lag_records
        for partition, position in self.engine.positions().items():
            tp = TopicPartition(self.settings.topics.raw, partition)
            try:
                # The end offset the last fetch reported; a broker query when none is known yet.
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high is None or high < 0:
                    _, high = self._consumer.get_watermark_offsets(tp, timeout=0.5, cached=False)
            except KafkaException:
                if partition in previous:
                    lag[partition] = previous[partition]
                continue
            lag[partition] = max(0, high - position)
        self._collector.status = metrics.Status(
            counts=dict(self.engine.counts), events_per_second=events_per_second,
            open_windows=self.engine.open_windows(), pending_windows=self.engine.pending_windows(),
            symbol_tables=len(self._symbols), lag_records=lag, watermarks_us=self.engine.watermarks_us())


def run_worker(settings: ProcessorSettings) -> None:
    """Run one worker in the foreground until SIGINT/SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    worker = Worker(settings)
    worker.run(stop)
