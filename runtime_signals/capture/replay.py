"""`signals replay`: records back into a topic, from a capture file or from another topic.

Every record keeps its key, value bytes, timestamp and headers. Partitions are kept when
the target has as many partitions as the source had: then each partition receives the
same records in the same order, which is what makes reprocessing reproduce the same
summaries. Otherwise records are partitioned by key with murmur2_random (the Java
client's partitioner, the agent's), and AgentWatermark records, which the agent sends to
every partition so each partition's windows can close, are sent once to every target
partition instead. Across source partitions the order is then the file's order (the
order the capture received them), so exact reprocessing wants the partition count kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from runtime_signals.capture.writer import progress_bar
from runtime_signals.consumer.kafka import KafkaRecord, TimestampType
from runtime_signals.schemas import codec

log = logging.getLogger(__name__)

WATERMARK = "io.runtimesignals.AgentWatermark"
# Watermarks seen on several source partitions are fanned out once: remember this many.
_RECENT_WATERMARKS = 4096


class ReplayError(Exception):
    """A replay cannot start or did not deliver everything (names the topic)."""


@dataclass(frozen=True)
class ReplaySettings:
    bootstrap: str
    topic: str
    source_partition_count: int
    rate_per_s: float | None = None   # records per second; None: as fast as the broker takes them
    keep_partitions: bool | None = None  # None: keep them when the counts match
    extra_config: Mapping[str, str] = field(default_factory=dict)
    flush_timeout_s: float = 60.0


@dataclass
class ReplayResult:
    topic: str
    records_read: int = 0
    produced: int = 0
    delivered: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    partitions_kept: bool = True
    interrupted: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed_by_reason and self.delivered == self.produced


class _RateLimit:
    """At most rate_per_s records per second on average, from the start of the replay."""

    def __init__(self, rate_per_s: float | None) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ReplayError(f"--rate must be above 0 records/s, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.started = time.monotonic()

    def wait(self, sent: int, stop: threading.Event) -> None:
        if self.rate_per_s is None:
            return
        due = self.started + sent / self.rate_per_s
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def replay(records: Iterable[KafkaRecord], settings: ReplaySettings, *, total: int | None = None,
           stop: threading.Event | None = None, registry: codec.SchemaRegistry | None = None,
           progress_stream: IO[str] | None = None) -> ReplayResult:
    """Produce ``records`` to ``settings.topic``; returns exact delivery counts."""
    stop = stop or threading.Event()
    registry = registry or codec.SchemaRegistry.default()
    producer = Producer({
        "bootstrap.servers": settings.bootstrap,
        "enable.idempotence": True,   # retries never duplicate or reorder a partition
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "zstd",
        "linger.ms": 20,
        **settings.extra_config,
    })
    target_partitions = _partition_count(producer, settings.topic)
    keep = settings.keep_partitions
    if keep is None:
        keep = target_partitions == settings.source_partition_count
    elif keep and target_partitions < settings.source_partition_count:
        raise ReplayError(
            f"{settings.topic} has {target_partitions} partitions, the source had "
            f"{settings.source_partition_count}: create it with as many, or replay by key")
    watermark_fingerprint = bytes.fromhex(registry.fingerprint_hex(WATERMARK))
    result = ReplayResult(settings.topic, partitions_kept=keep)
    limit = _RateLimit(settings.rate_per_s)
    fanned_out: OrderedDict[tuple[bytes | None, bytes], None] = OrderedDict()

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            result.delivered += 1
        else:
            result.failed_by_reason[f"kafka_{err.name().lower()}"] += 1
            log.error("replay into %s: delivery failed: %s", settings.topic, err)

    def send(record: KafkaRecord, partition: int | None) -> None:
        kwargs: dict[str, Any] = {"key": record.key, "value": record.value, "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        if record.timestamp_type is not TimestampType.NOT_AVAILABLE:
            kwargs["timestamp"] = record.timestamp_ms
        if record.headers:
            kwargs["headers"] = list(record.headers)
        while True:
            try:
                producer.produce(settings.topic, **kwargs)
                break
            except BufferError:  # librdkafka's queue is full: serve deliveries, then retry
                producer.poll(0.05)
        result.produced += 1
        producer.poll(0)

    started = time.monotonic()
    with progress_bar(total, "rec", "replay", progress_stream) as bar:
        for record in records:
            if stop.is_set():
                result.interrupted = True
                break
            limit.wait(result.records_read, stop)
            result.records_read += 1
            if keep:
                send(record, record.partition)
            elif _is_watermark(record.value, watermark_fingerprint):
                marker = (record.key, record.value or b"")
                if marker not in fanned_out:
                    fanned_out[marker] = None
                    if len(fanned_out) > _RECENT_WATERMARKS:
                        fanned_out.popitem(last=False)
                    for partition in range(target_partitions):
                        send(record, partition)
            else:
                send(record, None)
            bar.update(1)
    remaining = _flush(producer, settings.flush_timeout_s)
    if remaining:
        result.failed_by_reason["undelivered_at_flush_timeout"] += remaining
    result.elapsed_s = time.monotonic() - started
    log.info("replay into %s: read %d, produced %d, delivered %d, failed %s%s", settings.topic,
             result.records_read, result.produced, result.delivered, dict(result.failed_by_reason),
             " (interrupted)" if result.interrupted else "")
    return result


def _is_watermark(value: bytes | None, fingerprint: bytes) -> bool:
    return value is not None and value[:2] == codec.MAGIC and value[2:codec.HEADER_BYTES] == fingerprint


def _partition_count(producer: Producer, topic: str, timeout_s: float = 10.0) -> int:
    try:
        metadata = producer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise ReplayError(f"cannot read the metadata of {topic!r}: {exc}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        reason = described.error.str() if described is not None and described.error else "does not exist"
        raise ReplayError(f"target topic {topic!r} {reason}: create it first (`signals kafka topics` "
                          f"creates the pipeline's topics)")
    return len(described.partitions)


def _flush(producer: Producer, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    remaining = len(producer)
    while remaining and time.monotonic() < deadline:
        remaining = producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
    return remaining
