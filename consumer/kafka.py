"""Reading Kafka partitions between explicit bounds: the only module here that talks to Kafka.

Reads assign partitions directly (no consumer-group membership, nothing committed), so a
reader never disturbs the processors' groups and two readers never share work. Each
partition is read from a start offset to an end offset fixed when the read begins: what
was on the topic then is read, and the read ends, however busy the topic is. A range may
instead stay open (``end_offset=None``): the read then follows the partition until its
``until_ms`` passes or the caller's stop event is set.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from runtime_signals.consumer.errors import BrokerUnreachableError, ReadError, TopicNotFoundError

_POLL_S = 0.2
# librdkafka's own log (connection failures, retries) goes to this logger instead of raw
# lines on stderr; the `signals` command keeps it quiet unless -v is given.
LIBRDKAFKA_LOGGER = logging.getLogger("runtime_signals.librdkafka")
_T = TypeVar("_T")
# Errors a just-created topic answers with until its partitions have leaders.
_SETTLING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                       KafkaError.UNKNOWN_TOPIC_OR_PART})


class TimestampType(IntEnum):
    """Kafka's record timestamp types, with librdkafka's codes."""

    NOT_AVAILABLE = 0
    CREATE_TIME = 1       # set by the producer (the agent's send time, or a replay's copy of it)
    LOG_APPEND_TIME = 2   # set by the broker when it appended the record


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record as it sits on its partition, every byte kept."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: TimestampType
    key: bytes | None
    value: bytes | None   # None is a tombstone on a compacted topic
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets [start_offset, end_offset) of one partition; end_offset None leaves it open."""

    partition: int
    start_offset: int
    end_offset: int | None

    @property
    def empty(self) -> bool:
        return self.end_offset is not None and self.start_offset >= self.end_offset

    @property
    def size(self) -> int | None:
        """Offsets in the range (records, unless compaction or transaction markers left gaps)."""
        return None if self.end_offset is None else max(0, self.end_offset - self.start_offset)


class TopicReader:
    """Metadata look-ups and bounded reads on one cluster."""

    def __init__(self, bootstrap: str, extra_config: Mapping[str, str] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._config: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            # librdkafka needs a group id even for assign(); a fresh one joins nothing.
            "group.id": f"runtime-signals-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # An assigned offset that retention already deleted restarts at the oldest one left.
            "auto.offset.reset": "earliest",
            "logger": LIBRDKAFKA_LOGGER,
            "error_cb": self._remember_error,
        }
        self._config.update(extra_config or {})
        self.last_error: str | None = None  # librdkafka's latest client-level error, for messages

    def _remember_error(self, error: KafkaError) -> None:
        self.last_error = error.str()

    def _consumer(self) -> Consumer:
        return Consumer(self._config)

    def partitions(self, topic: str) -> list[int]:
        """The topic's partition ids, sorted."""
        consumer = self._consumer()
        try:
            metadata = consumer.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                                                                   KafkaError._ALL_BROKERS_DOWN):
                consumer.poll(0)  # serves error_cb: the connection failure's own words
                raise BrokerUnreachableError(self.bootstrap, self.timeout_s, self.last_error) from exc
            raise TopicNotFoundError(topic, self.bootstrap, f"metadata request failed: {exc}") from exc
        finally:
            consumer.close()
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            reason = described.error.str() if described is not None and described.error else None
            raise TopicNotFoundError(topic, self.bootstrap, reason or "not in the cluster's metadata")
        return sorted(described.partitions)

    def _retrying(self, call: Callable[[], _T], what: str) -> _T:
        """call(), again while Kafka says to retry (a partition whose leader is being elected,
        as right after the topic was created), until timeout_s."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and (error.retriable() or error.code() in _SETTLING)
                if not retriable or time.monotonic() >= deadline:
                    raise ReadError(f"{what}: {exc}", error.code() if isinstance(error, KafkaError) else None) from exc
                time.sleep(0.2)

    def watermarks(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(low, high) offsets of each partition: the oldest record kept and the next offset."""
        consumer = self._consumer()
        try:
            return {p: self._retrying(lambda p=p: consumer.get_watermark_offsets(  # type: ignore[misc]
                        TopicPartition(topic, p), timeout=self.timeout_s), f"{topic}[{p}]: cannot read its offsets")
                    for p in partitions}
        finally:
            consumer.close()

    def offsets_for_time(self, topic: str, partitions: Sequence[int], time_ms: int) -> dict[int, int | None]:
        """For each partition, the first offset whose timestamp is at or after time_ms (Kafka's
        ListOffsets by time); None where no record is that recent yet."""
        consumer = self._consumer()
        try:
            asked = [TopicPartition(topic, p, time_ms) for p in partitions]
            answered = self._retrying(lambda: consumer.offsets_for_times(asked, timeout=self.timeout_s),
                                      f"{topic}: offsets for time {time_ms} ms")
        finally:
            consumer.close()
        result: dict[int, int | None] = {}
        for tp in answered:
            if tp.error is not None:
                raise ReadError(f"{topic}[{tp.partition}]: offsets for time {time_ms} ms: {tp.error}",
                                tp.error.code())
            result[tp.partition] = tp.offset if tp.offset >= 0 else None
        return result

    def whole_topic(self, topic: str) -> list[OffsetRange]:
        """Every partition from its oldest record to its end now."""
        partitions = self.partitions(topic)
        return [OffsetRange(p, low, high) for p, (low, high) in self.watermarks(topic, partitions).items()]

    def ranges_since(self, topic: str, since_ms: int) -> list[OffsetRange]:
        """Every partition from its first record stamped at or after since_ms (Kafka's index
        by time, no scan) to its end now: a query about the last hour reads the last hour."""
        partitions = self.partitions(topic)
        ends = self.watermarks(topic, partitions)
        starts = self.offsets_for_time(topic, partitions, since_ms)
        return [OffsetRange(p, high if starts[p] is None else max(low, starts[p] or 0), high)
                for p, (low, high) in ends.items()]

    def read(self, topic: str, ranges: Sequence[OffsetRange], *, until_ms: int | None = None,
             stop: threading.Event | None = None,
             on_idle: Callable[[], None] | None = None) -> Iterator[KafkaRecord]:
        """The records of ``ranges``, each partition in offset order (partitions interleave as
        they arrive). An open range ends at the first record stamped at or after ``until_ms``,
        or, once the wall clock has passed ``until_ms``, at the partition's end; without
        ``until_ms`` it ends only when ``stop`` is set. ``on_idle`` runs whenever a poll
        brings nothing, so a writer can flush while the topic is quiet."""
        open_ranges = {r.partition: r for r in ranges if not r.empty}
        if not open_ranges:
            return
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(topic, r.partition, r.start_offset if r.start_offset >= 0
                                            else OFFSET_BEGINNING) for r in open_ranges.values()])
            while open_ranges and not (stop is not None and stop.is_set()):
                message = consumer.poll(_POLL_S)
                if message is None:
                    if on_idle is not None:
                        on_idle()
                    continue
                partition: int = message.partition()  # type: ignore[assignment]  # set on fetched messages
                bounds = open_ranges.get(partition)
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise ReadError(f"{topic}[{partition}] at offset {message.offset()}: {error.str()}",
                                        error.code())
                    if bounds is not None and _ended_at_eof(bounds, message.offset() or 0, until_ms):
                        del open_ranges[partition]
                    if on_idle is not None:
                        on_idle()
                    continue
                if bounds is None:
                    continue  # a record fetched before its partition ended
                record = _record(topic, message)
                if bounds.end_offset is not None and record.offset >= bounds.end_offset:
                    del open_ranges[partition]
                    continue
                if bounds.end_offset is None and until_ms is not None and record.timestamp_ms >= until_ms:
                    del open_ranges[partition]
                    continue
                yield record
                if bounds.end_offset is not None and record.offset >= bounds.end_offset - 1:
                    del open_ranges[partition]
        finally:
            consumer.close()


def _ended_at_eof(bounds: OffsetRange, next_offset: int, until_ms: int | None) -> bool:
    if bounds.end_offset is not None:
        # Compaction and transaction markers leave gaps: the end may never be seen as a record.
        return next_offset >= bounds.end_offset
    return until_ms is not None and time.time() * 1000 >= until_ms


def _record(topic: str, message: object) -> KafkaRecord:
    kind, timestamp_ms = message.timestamp()  # type: ignore[attr-defined]
    headers = message.headers() or ()  # type: ignore[attr-defined]
    return KafkaRecord(
        topic=topic,
        partition=message.partition(),  # type: ignore[attr-defined]
        offset=message.offset(),  # type: ignore[attr-defined]
        timestamp_ms=timestamp_ms if timestamp_ms >= 0 else 0,
        timestamp_type=TimestampType(kind),
        key=message.key(),  # type: ignore[attr-defined]
        value=message.value(),  # type: ignore[attr-defined]
        headers=tuple((name, value) for name, value in headers),
    )
