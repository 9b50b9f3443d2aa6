"""Deliver encoded records to Kafka with librdkafka, spool what it cannot hold, and
account for every call each record stands for.

Settings favour "nothing lost": an idempotent producer with acks=all, so a retry never
duplicates and an acknowledged record is on every in-sync replica; zstd compression and
large batches (records of one node are alike and compress well). The partitioner is
murmur2_random, the Java client's, so that keyed records land on the same partition
whichever client (Java, aiokafka, librdkafka) wrote them.

Broker outages. librdkafka retries every record it holds until delivered
(message.timeout.ms = 0: no local timeout), in memory bounded by queue_max_kbytes. What
does not fit goes to the on-disk spool (agent/spool.py), and so does every record once
no acknowledgement came for outage_after_ms while records wait (broker_away): memory dies
with a killed agent, the spool does not. While the spool holds
anything every new record goes behind it, so order is kept: librdkafka's queue holds the
oldest records, the spool the next, new ones join the spool's end. Each pass of the
pump moves records from the spool's head into librdkafka while it has room, so the
spool drains in order once the broker is back. Beyond the spool's bound records are
dropped and their calls counted ("spool_full"); with no spool, "kafka_queue_full".
Records that fail with a permanent error (too large, not authorised) are counted by
error code and not retried. On shutdown whatever librdkafka still holds after the flush
timeout is purged from it and written to the spool's head, so the next run sends it
first. A record purged while in flight may have reached the broker: it can arrive twice
(same event_id), which is the only duplicate this design allows.

Watermarks go to every partition of the raw topic, so they need its partition count. An
agent started while the broker is away asks for it on a background thread
(known_partition_count), never on the event pump; until the broker answers, calls are
spooled as usual and watermarks are skipped (a later one covers them).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from runtime_signals.agent.spool import Spool, SpoolRecord
from runtime_signals.kafka.provenance import RecordSigner

log = logging.getLogger(__name__)

_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
# produce() serves delivery reports every this many records (the pump polls as well).
_POLL_EVERY = 64


@dataclass(frozen=True)
class ProducerSettings:
    """How the agent talks to Kafka. extra holds any further librdkafka setting
    (security.protocol, sasl.*, ssl.*) passed through unchanged."""

    bootstrap_servers: str
    compression_type: str = "zstd"
    linger_ms: int = 50
    batch_size_bytes: int = 1_000_000
    queue_max_messages: int = 100_000
    queue_max_kbytes: int = 64 * 1024
    message_timeout_ms: int = 0  # 0: retry until delivered; the spool bounds what is held
    # Topic metadata (partition counts, for watermarks) is asked for off the caller's
    # thread: each attempt waits up to metadata_timeout_ms, the next starts
    # metadata_retry_ms after a failed one.
    metadata_timeout_ms: int = 5_000
    metadata_retry_ms: int = 1_000
    # With a spool: no acknowledgement for this long while records wait means the broker is
    # away, and new records go to the spool instead of librdkafka's memory.
    outage_after_ms: int = 2_000
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
            "queue.buffering.max.messages": self.queue_max_messages,
            "queue.buffering.max.kbytes": self.queue_max_kbytes,
            "message.timeout.ms": self.message_timeout_ms,
        }
        config.update(self.extra)
        return config


class Publisher:
    """Produces records; keeps exact counts, in records and in calls, of what was
    delivered, what was dropped (by reason) and what is still held."""

    def __init__(self, settings: ProducerSettings, spool: Spool | None = None,
                 signer: RecordSigner | None = None) -> None:
        self._producer = Producer(settings.librdkafka_config(), logger=log)
        self._spool = spool
        self._signer = signer  # every record carries proof of this node's principal
        self._lock = threading.RLock()
        self._settings = settings
        self.produced = 0  # records accepted (to librdkafka or the spool)
        self.delivered = 0
        self.delivered_calls = 0
        self.pending_calls = 0  # accepted, not yet delivered nor dropped
        self.spooled_records = 0  # records written to the spool, ever
        self.failed_by_reason: Counter[str] = Counter()  # records
        self.dropped_calls_by_reason: Counter[str] = Counter()
        self._partitions: dict[str, int] = {}  # written by metadata threads, read by anyone
        self._metadata_lock = threading.Lock()
        self._metadata_threads: dict[str, threading.Thread] = {}
        self._metadata_stop = threading.Event()
        self._closing = False
        self._unpolled = 0  # records produced since produce() last polled
        self._purged: list[SpoolRecord] = []
        # Broker outage detection, for the spool: records wait in librdkafka and none has
        # been acknowledged for outage_after_ms.
        self._last_ack_ns = time.monotonic_ns()
        if spool is not None:
            # Records an earlier run left in the spool are this run's to deliver.
            self.pending_calls = spool.calls

    # --- producing ----------------------------------------------------------------

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None, calls: int = 0) -> None:
        """Queue one record standing for `calls` calls; never blocks. It goes to librdkafka,
        or to the spool when librdkafka is full or the spool already holds records."""
        if self._signer is not None:
            headers = [*(headers or ()), *self._signer.headers(topic, key, value)]
        record = SpoolRecord(topic, key, value, partition, calls, tuple(headers or ()))
        with self._lock:
            self.produced += 1
            self.pending_calls += calls
            # While the broker is away, new records go to disk, not librdkafka's memory:
            # a process killed then (SIGKILL, OOM) loses what memory held, the spool keeps it.
            if (self._spool is not None and (self._spool or self.broker_away())) or not self._to_kafka(record):
                self._to_spool(record)
            self._unpolled += 1
            if self._unpolled < _POLL_EVERY:
                return
            self._unpolled = 0
        # Delivery reports are served by poll(); the agent's pump polls after every read of the
        # ring buffer too, so here only every so many records (once per record, polling took
        # 8 % of the agent's CPU).
        self._producer.poll(0)

    def _to_kafka(self, record: SpoolRecord) -> bool:
        try:
            self._producer.produce(
                record.topic, value=record.value, key=record.key,
                partition=-1 if record.partition is None else record.partition,  # -1: the partitioner picks
                on_delivery=functools.partial(self._on_delivery, record.calls, record.partition),
                headers=list(record.headers) or None)
        except BufferError:
            return False
        return True

    def _to_spool(self, record: SpoolRecord) -> None:
        if self._spool is None:
            self._drop(record, "kafka_queue_full")
        elif self._spool.append(record):
            self.spooled_records += 1
        else:
            self._drop(record, "spool_full")

    def _drop(self, record: SpoolRecord, reason: str) -> None:
        self.failed_by_reason[reason] += 1
        self.dropped_calls_by_reason[reason] += record.calls
        self.pending_calls -= record.calls

    def _on_delivery(self, calls: int, partition: int | None, err: KafkaError | None, msg: Message) -> None:
        # Called from poll()/flush() on the calling thread; the lock guards readers on
        # other threads (statistics, metrics) and the spool.
        with self._lock:
            if err is None:
                self._last_ack_ns = time.monotonic_ns()
                self.delivered += 1
                self.delivered_calls += calls
                self.pending_calls -= calls
                return
            raw_headers = msg.headers() or []
            pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
            headers = tuple((name, value.encode() if isinstance(value, str) else value) for name, value in pairs)
            record = SpoolRecord(msg.topic() or "", msg.key(), msg.value() or b"", partition, calls, headers)
            if err.code() in _PURGED:
                self._purged.append(record)  # goes to the spool's head, in order, at close()
            elif (err.retriable() or err.code() == KafkaError._MSG_TIMED_OUT) and self._spool is not None:
                # Only with a finite message_timeout_ms: kept, though behind newer records.
                self._to_spool(record)
            else:
                self._drop(record, f"kafka_{err.name().lower()}")
                log.error("delivery to %s failed: %s", msg.topic(), err)

    def pump(self, max_records: int = 10_000) -> int:
        """Move records from the spool's head into librdkafka while it has room; returns how many."""
        if self._spool is None or self._closing or self.broker_away():
            return 0  # away: the records stay on disk until librdkafka delivers again
        moved = 0
        high_water = self._settings.queue_max_messages // 2
        if time.monotonic_ns() - self._last_ack_ns > self._settings.outage_after_ms * 1_000_000:
            # Nothing acknowledged for a while and nothing waiting: is the broker back? One
            # record finds out; a batch moved into memory now would die with a killed agent.
            max_records = 1
        with self._lock:
            while moved < max_records and len(self._producer) < high_water:
                record = self._spool.peek()
                if record is None or not self._to_kafka(record):
                    break
                self._spool.pop()
                moved += 1
        if moved:
            self._producer.poll(0)
        return moved

    def broker_away(self) -> bool:
        """Records wait in librdkafka and none was acknowledged for outage_after_ms. Once
        the broker answers again, the records still in librdkafka are acknowledged and the
        spool drains; with nothing in librdkafka, a pump moves one batch in to find out."""
        return (len(self._producer) > 0
                and time.monotonic_ns() - self._last_ack_ns > self._settings.outage_after_ms * 1_000_000)

    # --- metadata -----------------------------------------------------------------

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

    def known_partition_count(self, topic: str) -> int | None:
        """partition_count without ever blocking the caller (the event pump): the cached
        count, or None while a background thread asks the broker for it, again and again
        until the broker answers. Once known, a count is kept through later outages."""
        cached = self._partitions.get(topic)
        if cached:
            return cached
        with self._metadata_lock:
            if topic in self._metadata_threads or self._metadata_stop.is_set():
                return None
            thread = threading.Thread(target=self._fetch_metadata, args=(topic,), name=f"metadata {topic}",
                                      daemon=True)
            self._metadata_threads[topic] = thread
        thread.start()
        return None

    def _fetch_metadata(self, topic: str) -> None:
        timeout_s = self._settings.metadata_timeout_ms / 1000
        retry_s = self._settings.metadata_retry_ms / 1000
        attempts = 0
        while not self._metadata_stop.is_set():
            attempts += 1
            try:
                partitions = self.partition_count(topic, timeout_s=timeout_s)
            except KafkaException as exc:
                # Once, then quietly: an outage at start is expected, and the spool holds records.
                (log.warning if attempts == 1 else log.debug)(
                    "no metadata for %s yet (%s); asking again every %.0fs", topic, exc, timeout_s + retry_s)
            except Exception:  # never let the thread die silently: watermarks depend on it
                log.exception("asking for the metadata of %s failed", topic)
            else:
                if attempts > 1:
                    log.info("metadata for %s: %d partition(s), after %d attempts", topic, partitions, attempts)
                return
            self._metadata_stop.wait(retry_s)

    def has_metadata(self, topic: str) -> bool:
        return topic in self._partitions

    # --- lifecycle ----------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Deliver the spool and librdkafka's queue, waiting up to timeout_s; returns the
        records still held."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            remaining = len(self._producer) + (len(self._spool) if self._spool else 0)
            left_s = deadline - time.monotonic()
            if not remaining or left_s <= 0:
                return remaining
            self._producer.flush(min(0.5, left_s))

    def close(self, timeout_s: float) -> int:
        """Flush for up to timeout_s; then move what librdkafka still holds to the spool's
        head (or count it as dropped, "undelivered_at_exit", without a spool). Returns the
        records left in the spool."""
        remaining = self.flush(timeout_s)
        self._closing = True
        # A metadata thread still waiting on an absent broker is a daemon: it ends after
        # its attempt, and holds nothing that needs delivering.
        self._metadata_stop.set()
        if len(self._producer):
            log.warning("shutdown: %d record(s) still in librdkafka after %.1fs; %s", len(self._producer), timeout_s,
                        "spooling them" if self._spool is not None else "dropping them (counted)")
            self._producer.purge(in_queue=True, in_flight=False, blocking=True)
            self._producer.flush(2.0)  # in-flight requests finish, fail or are purged below
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            self._producer.flush(0)
        with self._lock:
            purged, self._purged = self._purged, []
            if self._spool is not None:
                for record in self._spool.prepend(purged):
                    self._drop(record, "spool_full")
                self._spool.close()
                remaining = len(self._spool)
            else:
                for record in purged:
                    self._drop(record, "undelivered_at_exit")
                remaining = 0
        return remaining

    @property
    def in_flight(self) -> int:
        return len(self._producer)

    @property
    def spool_bytes(self) -> int:
        return self._spool.bytes if self._spool is not None else 0

    @property
    def spool_records(self) -> int:
        return len(self._spool) if self._spool is not None else 0
