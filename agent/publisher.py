"""Deliver encoded records to Kafka with librdkafka, and account for every one.

Settings favour "nothing lost": an idempotent producer with acks=all, so a retry
never duplicates and an acknowledged record is on every in-sync replica.
The partitioner is murmur2_random, the Java client's, so that keyed records land
on the same partition whichever client (Java, aiokafka, librdkafka) wrote them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProducerSettings:
    """How the agent talks to Kafka. extra holds any further librdkafka setting
    (security.protocol, sasl.*, ssl.*) passed through unchanged."""

    bootstrap_servers: str
    compression_type: str = "zstd"
    linger_ms: int = 20
    batch_size_bytes: int = 1_000_000
    queue_buffering_max_messages: int = 1_000_000
    message_timeout_ms: int = 300_000
    extra: Mapping[str, str] = field(default_factory=dict)

    def librdkafka_config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "compression.type": self.compression_type,
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_size_bytes,
            "queue.buffering.max.messages": self.queue_buffering_max_messages,
            "message.timeout.ms": self.message_timeout_ms,
        }
        config.update(self.extra)
        return config


class Publisher:
    """Produces records and keeps exact counts of what was delivered and what failed, by reason."""

    def __init__(self, settings: ProducerSettings) -> None:
        self._producer = Producer(settings.librdkafka_config(), logger=log)
        self._lock = threading.Lock()
        self.produced = 0
        self.delivered = 0
        self.failed_by_reason: Counter[str] = Counter()
        self._partitions: dict[str, int] = {}

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        # Called from poll()/flush() on the calling thread; the lock guards readers
        # on other threads (statistics, metrics).
        with self._lock:
            if err is None:
                self.delivered += 1
            else:
                self.failed_by_reason[f"kafka_{err.name().lower()}"] += 1
                log.error("delivery failed: %s", err)

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue one record; waits (serving delivery reports) while librdkafka's queue is full
        rather than dropping."""
        kwargs: dict[str, object] = {"key": key, "value": value, "on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.produced += 1
        self._producer.poll(0)

    def partition_count(self, topic: str, timeout_s: float = 10.0) -> int:
        """Partitions of topic, from the broker's metadata (cached)."""
        cached = self._partitions.get(topic)
        if cached:
            return cached
        metadata = self._producer.list_topics(topic, timeout=timeout_s)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            reason = described.error if described is not None else "not in metadata"
            raise KafkaException(f"topic {topic!r} is not available: {reason}")
        self._partitions[topic] = len(described.partitions)
        return self._partitions[topic]

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Wait until every queued record is delivered or failed; returns what is still queued."""
        deadline = time.monotonic() + timeout_s
        remaining = len(self._producer)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        return remaining

    @property
    def in_flight(self) -> int:
        return len(self._producer)
