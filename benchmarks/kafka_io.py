"""The benchmarks' own Kafka plumbing: a dedicated broker, offsets, range reads, a tail."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from runtime_signals.devtools import localkafka
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames

from .procs import BenchmarkError

Offsets = dict[int, int]  # partition -> offset


@contextlib.contextmanager
def dedicated_broker(bootstrap: str | None) -> Iterator[str]:
    """The given broker, or a fresh local KRaft broker on free ports, stopped on exit.
    A dedicated broker keeps other work's topics and load out of the figures."""
    if bootstrap:
        yield bootstrap
        return
    port, controller_port = localkafka.free_port_pair()
    with tempfile.TemporaryDirectory(prefix="rs-bench-kafka-") as state_dir:
        cfg = localkafka.LocalKafkaConfig.from_env(state_dir=Path(state_dir), port=port,
                                                   controller_port=controller_port)
        address = localkafka.up(cfg)
        try:
            yield address
        finally:
            localkafka.down(cfg)


def pipeline_topics(bootstrap: str, prefix: str, partitions: int) -> TopicNames:
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names, partitions=partitions)
    return names


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    config: dict[str, object] = {"bootstrap.servers": bootstrap, "group.id": "rs-bench-reader",
                                 "enable.auto.commit": False}
    config.update(extra)
    return Consumer(config)


class OffsetWatch:
    """Reads end offsets of topics cheaply (no records fetched)."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = _consumer(bootstrap)

    def ends(self, topic: str) -> Offsets:
        metadata = self._consumer.list_topics(topic, timeout=10)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise BenchmarkError(f"topic {topic!r} is not available: create it first")
        return {p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(described.partitions)}

    def total(self, topic: str) -> int:
        return sum(self.ends(topic).values())

    def wait_total(self, topic: str, at_least: int, timeout_s: float, interval_s: float = 0.02) -> float:
        """Wait until the topic holds at_least records; returns the monotonic time it did."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.total(topic) >= at_least:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{topic} holds {self.total(topic)} records, expected "
                                     f"{at_least} within {timeout_s:.0f}s")
            time.sleep(interval_s)

    def close(self) -> None:
        self._consumer.close()


def read_range(bootstrap: str, topic: str, start: Offsets, end: Offsets,
               on_batch: Callable[[list[tuple[int, bytes | None, bytes]]], None],
               timeout_s: float = 120.0) -> int:
    """Feed every record of [start, end) of each partition to on_batch as
    (partition, key, value) tuples; returns how many were read."""
    consumer = _consumer(bootstrap, **{"enable.partition.eof": True})
    pending = {p: end[p] for p in end if end[p] > start.get(p, 0)}
    read = 0
    try:
        consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"reading {topic}: partitions {sorted(pending)} not read "
                                     f"to their end within {timeout_s:.0f}s")
            batch: list[tuple[int, bytes | None, bytes]] = []
            for message in consumer.consume(10_000, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BenchmarkError(f"reading {topic}[{message.partition()}]: {error}")
                partition, offset, value = message.partition(), message.offset(), message.value()
                if partition is None or offset is None or value is None:
                    continue  # not a record (no tombstones are written to these topics)
                if partition in pending and offset < pending[partition]:
                    batch.append((partition, message.key(), value))
                    if offset + 1 >= pending[partition]:
                        del pending[partition]
            read += len(batch)
            on_batch(batch)
        return read
    finally:
        consumer.close()


@dataclass(frozen=True)
class Arrival:
    at_wall_s: float       # time.time() when the runner received it
    at_monotonic_s: float
    partition: int
    key: bytes | None
    value: bytes


class Tail:
    """Records written to a topic after this object was made, stamped on arrival by a
    thread that polls all along (so a busy caller does not delay the stamps)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = _consumer(bootstrap)
        watch = OffsetWatch(bootstrap)
        try:
            ends = watch.ends(topic)
        finally:
            watch.close()
        # Explicit offsets, not OFFSET_END: the position is fixed now, before any producer starts.
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in ends.items()])
        self.arrivals: list[Arrival] = []  # appended by the thread only
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name=f"tail-{topic}", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(1000, 0.02):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise BenchmarkError(f"tailing {self.topic}: {error}")
                    partition, value = message.partition(), message.value()
                    if partition is None or value is None:
                        continue
                    self.arrivals.append(Arrival(time.time(), time.monotonic(), partition, message.key(), value))
        except BaseException as exc:  # handed to the caller by check()
            self._error = exc

    def check(self) -> None:
        """Raise what stopped the polling thread, if anything did."""
        if self._error is not None:
            raise BenchmarkError(f"tailing {self.topic} failed: {self._error}") from self._error

    def wait_for(self, count: int, timeout_s: float) -> list[Arrival]:
        """Wait until count records have arrived in all."""
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < count:
            self.check()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{self.topic}: {len(self.arrivals)} of {count} records "
                                     f"arrived within {timeout_s:.0f}s")
            time.sleep(0.005)
        return list(self.arrivals)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def fast_producer(bootstrap: str) -> Producer:
    """A producer for synthetic input: batches large, compressed like the agent's records."""
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "batch.size": 1_000_000,
                     "compression.type": "zstd", "queue.buffering.max.messages": 2_000_000,
                     "queue.buffering.max.kbytes": 2_000_000, "acks": "all"})


def produce_all(producer: Producer, records: list[tuple[str, int, bytes | None, bytes]]) -> None:
    """Produce (topic, partition, key, value) records and wait until all are acknowledged."""
    for topic, partition, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(120)
    if remaining:
        raise BenchmarkError(f"{remaining} synthetic records not acknowledged within 120s")
