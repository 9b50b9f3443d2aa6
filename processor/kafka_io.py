"""The worker's confluent-kafka clients beside faust, no logic. faust (processor/app.py) runs
the group and the raw topic; these write every output and checkpoint, and read, outside the
group, what a worker needs whole, whichever partitions it owns:

- OutputWriter: every record the worker writes (outputs and checkpoints), through
  librdkafka: batching and compression in librdkafka's threads, not on the event loop.
- CheckpointStore: the worker group's checkpoint topic (processor/checkpoint.py): created
  here, read on assignment.
- BinaryFeed: the symbols and modules topics, every partition from the beginning, into the
  SymbolStore (a faust agent would share their partitions among the workers).
- read_partition: a whole partition up to its end (restoring the latest state).
Errors from the clients are re-raised as ProcessorError subclasses naming the topic and
partition, with librdkafka's error code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from runtime_signals.kafka.provenance import PRINCIPAL_HEADER, RecordVerifier
from runtime_signals.processor.checkpoint import Checkpoint
from runtime_signals.processor.errors import BrokerError, CheckpointError, ConfigError, DeliveryError
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError
from runtime_signals.schemas.topics import LARGE_RECORD_MAX_BYTES

log = logging.getLogger(__name__)

SYMBOL_TABLE = "io.runtimesignals.SymbolTable"
_RELOAD_INTERVAL_S = 10.0
MODULE_MAP = "io.runtimesignals.ModuleMap"


# `connection` below: librdkafka settings that reach the cluster (bootstrap.servers and the
# security settings of runtime_signals.config), shared by every client of the worker.
Connection = Mapping[str, Any]


def _reader(connection: Connection, group_id: str) -> Consumer:
    # Assign-only consumers: a group id is required by librdkafka, nothing is committed.
    # A short fetch wait: these read bounded ranges, and a long-polling fetch would delay
    # the next assign() by up to fetch.wait.max.ms (500 ms by default) on every restore.
    return Consumer({**connection, "group.id": group_id, "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})


def is_eof(message: Message) -> bool:
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


def located(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a fetched record: librdkafka sets all three on records,
    the client's types leave them optional."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _timestamp_ms(message: Message) -> int | None:
    kind, stamp = message.timestamp()
    return stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp > 0 else None


def partition_count(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> int:
    """Partitions of an existing topic; ConfigError naming it if it does not exist,
    BrokerError if the cluster does not answer."""
    try:
        described = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise BrokerError(f"kafka.bootstrap_servers: no answer about topic {topic!r} within {timeout_s:.0f}s "
                          f"({exc.args[0].str() if exc.args else exc}); is the broker up and reachable, "
                          f"and are the kafka.security_* settings right?") from exc
    if described is None or described.error is not None or not described.partitions:
        raise ConfigError(f"topic {topic!r} does not exist on the broker: create the pipeline's topics "
                          f"first (`signals kafka topics --topic-prefix PREFIX`)")
    return len(described.partitions)


class OutputWriter:
    """The worker's producer: idempotent with acks=all (a retry neither duplicates nor
    reorders a partition's records), zstd, batches of up to 1 MiB, and Kafka's key
    partitioner (murmur2, as the Java client and aiokafka: a key lands where it always
    has). A record is only handed over here; acknowledged() says when the broker has taken
    every one, or raises DeliveryError naming the first it refused. Bounded by librdkafka's
    queue (max_queued_kbytes); send() returns False while it is full."""

    def __init__(self, connection: Connection, max_queued_kbytes: int = 262_144) -> None:
        self._producer = Producer({
            **connection, "acks": "all", "enable.idempotence": True, "compression.type": "zstd",
            "linger.ms": 20, "batch.size": 1_048_576, "partitioner": "murmur2_random",
            # Summaries and latest states up to what their topics take (schemas/topics.py),
            # with room for the request's own framing.
            "message.max.bytes": LARGE_RECORD_MAX_BYTES + 65_536,
            "queue.buffering.max.kbytes": max_queued_kbytes})
        self._refused: list[tuple[str, bytes | None, KafkaError]] = []
        self._since_poll = 0

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._refused.append((message.topic() or "?", message.key(), error))

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Queue one record; False (nothing queued) while librdkafka's queue is full: call
        wait_for_room() and send it again."""
        wire: list[tuple[str, str | bytes | None]] | None = list(headers) if headers else None
        try:
            if partition is None:
                self._producer.produce(topic, value, key, headers=wire, on_delivery=self._delivered)
            else:
                self._producer.produce(topic, value, key, partition, headers=wire, on_delivery=self._delivered)
        except BufferError:
            return False
        self._since_poll += 1
        if self._since_poll >= 256:  # delivery reports free their records' memory when served
            self._since_poll = 0
            self._producer.poll(0)
        return True

    def queued(self) -> int:
        """Records handed over and not yet acknowledged or refused."""
        return len(self._producer)

    def wait_for_room(self, timeout_s: float = 0.1) -> None:
        """Serve delivery reports for up to timeout_s (blocks: call it off the event loop)."""
        self._producer.poll(timeout_s)

    def acknowledged(self, timeout_s: float) -> None:
        """Return when the broker has acknowledged every record sent so far; raise
        DeliveryError when it refused one, or had not answered within timeout_s (blocks)."""
        remaining = self._producer.flush(timeout_s)
        refused, self._refused = self._refused, []
        if refused:
            topic, key, error = refused[0]
            raise DeliveryError(f"{topic} key={key!r}: refused by the broker: {error.str()} ({error.name()}); "
                                f"{len(refused)} record(s) refused, offsets were not advanced past them")
        if remaining:
            raise DeliveryError(f"{remaining} output(s) not acknowledged within {timeout_s:.0f}s; is the broker "
                                f"reachable?")

    def close(self) -> None:
        """Drop what was not delivered (the worker stops: a restart resumes from its last
        checkpoint, which covers none of it)."""
        self._producer.purge()
        self._producer.flush(0)


class CheckpointStore:
    """Partition p of the checkpoint topic holds the checkpoints of raw partition p."""

    def __init__(self, connection: Connection, topic: str, registry: codec.SchemaRegistry, group_id: str) -> None:
        self.topic = topic
        self._registry = registry
        self._admin = AdminClient(dict(connection))
        self._reader = _reader(connection, group_id)

    def ensure(self, partitions: int, timeout_s: float = 30.0) -> None:
        """Create the topic (compacted) with at least `partitions` partitions."""
        described = self._admin.list_topics(timeout=timeout_s).topics.get(self.topic)
        if described is None:
            futures = self._admin.create_topics([NewTopic(
                self.topic, num_partitions=partitions, replication_factor=-1,
                # A checkpoint holds one entry per agent writing to the partition: up to
                # Limits.max_agents of them, more than Kafka's default 1 MiB record.
                config={"cleanup.policy": "compact", "segment.ms": "3600000",
                        "max.message.bytes": str(LARGE_RECORD_MAX_BYTES)})])
        elif len(described.partitions) < partitions:
            futures = self._admin.create_partitions([NewPartitions(self.topic, partitions)])
        else:
            return
        for future in futures.values():
            try:
                future.result(timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another worker won the race
                    raise CheckpointError(f"cannot create checkpoint topic {self.topic}: {exc.args[0]}") from exc

    def read(self, partition: int, timeout_s: float = 15.0) -> Checkpoint | None:
        """The last checkpoint written for a raw partition, or None."""
        tp = TopicPartition(self.topic, partition)
        try:
            low, high = _watermarks_settled(self._reader, tp, timeout_s)
        except KafkaException as exc:
            raise CheckpointError(f"reading {self.topic}[{partition}]: {exc.args[0]}") from exc
        if high <= low:
            return None
        self._reader.assign([TopicPartition(self.topic, partition, high - 1)])
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                message = self._reader.poll(0.2)
                if message is None:
                    continue
                if is_eof(message):
                    continue
                if message.error():
                    raise CheckpointError(f"reading {self.topic}[{partition}]: {message.error()}")
                return Checkpoint.decode(message.value() or b"", self._registry,
                                         f"{self.topic}[{partition}]@{message.offset()}")
        finally:
            self._reader.unassign()
        raise CheckpointError(f"{self.topic}[{partition}]: no record within {timeout_s:.0f}s although the "
                              f"partition ends at offset {high}; is the broker healthy?")

    def close(self) -> None:
        self._reader.close()


# What a partition answers while a just-created topic's metadata reaches this client and its
# leader is elected (the checkpoint topic is created at start-up, then read at once).
_SETTLING = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                       KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})


def _watermarks_settled(reader: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """(low, high) of a partition, asked again while its topic is still settling."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = reader.get_watermark_offsets(tp, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code not in _SETTLING or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def read_partition(connection: Connection, topic: str, partition: int, group_id: str,
                   timeout_s: float = 60.0) -> Iterator[Message]:
    """Every record of one partition, from the beginning to its end now."""
    reader = _reader(connection, group_id)
    try:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        if high <= low:
            return
        reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = reader.poll(0.2)
            if message is None:
                continue
            if is_eof(message):
                return
            if message.error():
                raise ConfigError(f"reading {topic}[{partition}]: {message.error()}")
            yield message
            if located(message)[2] >= high - 1:
                return
        raise ConfigError(f"reading {topic}[{partition}] to offset {high} took over {timeout_s:.0f}s")
    finally:
        reader.close()


class BinaryFeed:
    """The symbols and modules topics, every partition from the beginning, into a SymbolStore."""

    def __init__(self, connection: Connection, symbols_topic: str, modules_topic: str, store: SymbolStore,
                 registry: codec.SchemaRegistry, group_id: str, provenance: RecordVerifier | None = None) -> None:
        self._store = store
        self._provenance = provenance  # with it, only tables and maps an agent signed are taken
        self._registry = registry
        self._consumer = _reader(connection, group_id)
        admin = AdminClient(dict(connection))
        self._kinds = {symbols_topic: SYMBOL_TABLE, modules_topic: MODULE_MAP}
        assigned = [TopicPartition(topic, p) for topic in self._kinds for p in range(partition_count(admin, topic))]
        self._ends = {(tp.topic, tp.partition): _watermarks_settled(self._consumer, tp, 10)[1] for tp in assigned}
        self._consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in assigned])
        self._symbol_partitions = [tp.partition for tp in assigned if tp.topic == symbols_topic]
        self._symbols_topic = symbols_topic
        self._last_reload_s = 0.0

    def catch_up(self, timeout_s: float = 60.0) -> None:
        """Read what the topics held at start-up before any raw record is processed, so a
        replay finds the tables and maps a live run had (docs/processor.md, "Determinism")."""
        behind = {tp for tp, end in self._ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while behind and time.monotonic() < deadline:
            for message in self._consumer.consume(500, 0.2):
                if message.error():
                    if is_eof(message):
                        behind.discard((message.topic() or "", message.partition() or 0))
                    else:
                        self._report(message)
                    continue
                topic, partition, offset = located(message)
                self._add(message)
                if offset >= self._ends[(topic, partition)] - 1:
                    behind.discard((topic, partition))
        if behind:
            log.warning("partitions %s not read to their end within %.0fs; continuing", sorted(behind), timeout_s)
        log.info("loaded %d symbol tables and %d module maps from %s", len(self._store),
                 self._store.counts["module_maps"], ", ".join(self._kinds))

    def poll(self, max_records: int = 500) -> int:
        """Take what arrived since; returns how many records were added. When a window needs
        a table evicted from memory (SymbolStore.wanted), re-read the symbols topic from its
        start, at most every _RELOAD_INTERVAL_S: the store takes back only the tables asked
        for, and only identical to what it evicted."""
        now_s = time.monotonic()
        if self._store.wanted() and now_s - self._last_reload_s >= _RELOAD_INTERVAL_S:
            self._last_reload_s = now_s
            self._store.counts["symbol_table_reloads"] += 1
            for partition in self._symbol_partitions:
                try:
                    self._consumer.seek(TopicPartition(self._symbols_topic, partition, OFFSET_BEGINNING))
                except KafkaException as exc:  # not fetching yet: the next reload tries again
                    log.info("reload of %s[%d] not started: %s", self._symbols_topic, partition, exc)
        added = 0
        for message in self._consumer.consume(max_records, 0):
            if not message.error():
                self._add(message)
                added += 1
            elif not is_eof(message):
                self._report(message)
        return added

    def _report(self, message: Message) -> None:
        """A consumer error other than end-of-partition: counted by code, logged, and fatal
        when librdkafka says the client cannot go on (BrokerError names the topic). The
        others (a broker away, a leader moving) librdkafka retries by itself."""
        error = message.error()
        assert error is not None
        where = f"{message.topic() or '(no topic)'}[{message.partition()}]"
        self._store.counts[f"feed_error:{error.name()}"] += 1
        if error.fatal():
            raise BrokerError(f"reading {where}: {error.str()} (code {error.code()}): the client cannot continue; "
                              "check the broker and the kafka.security_* settings")
        count = self._store.counts[f"feed_error:{error.name()}"]
        (log.warning if count <= 10 or count % 1000 == 0 else log.debug)(
            "reading %s: %s (code %d, %d so far); librdkafka retries", where, error.str(), error.code(), count)

    def _add(self, message: Message) -> None:
        kind = self._kinds[located(message)[0]]
        try:
            record = codec.decode(message.value() or b"", self._registry, kind).record
        except SchemaError as exc:
            self._store.counts["bad_records"] += 1
            log.warning("%s[%d]@%d: skipped: %s", message.topic(), message.partition(), message.offset(), exc)
            return
        # Who wrote it, for conflict reports: where it is, and the principal its signature
        # proves (runtime_signals/kafka/provenance.py), or the one it only claims.
        topic, partition, offset = located(message)
        received = message.headers() or []
        pairs = received.items() if isinstance(received, dict) else received
        headers = [(name, value) for name, value in pairs if isinstance(value, bytes)]
        writer = f"{topic}[{partition}]@{offset}"
        if self._provenance is not None:
            found = self._provenance.verify("symbols" if kind == SYMBOL_TABLE else "modules", message.key(),
                                            message.value(), headers, _timestamp_ms(message))
            if not found.verified:
                claimed = f" claimed principal={found.principal}" if found.principal else ""
                self._store.refuse(record, kind, f"{writer}{claimed}", found.problem or "unsigned")
                return
            writer += f" principal={found.principal}"
        else:
            principal = dict(headers).get(PRINCIPAL_HEADER)
            if principal:
                writer += f" principal={principal.decode('utf-8', 'replace')} (unverified)"
        if kind == SYMBOL_TABLE:
            self._store.add(record, writer)
        else:
            self._store.add_module_map(record, writer)

    def close(self) -> None:
        self._consumer.close()
