"""The worker's librdkafka writer (processor/kafka_io.py, OutputWriter) on a real broker: keys
land on the partitions Kafka's key partitioner gives them (what aiokafka's producer chose
before it), a record the broker refuses is named, and a full queue holds records back rather
than drop them."""

from __future__ import annotations

import os
import uuid

import pytest
from aiokafka.partitioner import murmur2

from runtime_signals.kafka.admin import TopicSpec, ensure_topics
from runtime_signals.processor.errors import DeliveryError
from runtime_signals.processor.kafka_io import OutputWriter
from tests.processor.harness import read_all

pytestmark = pytest.mark.broker


def _topic(bootstrap: str, partitions: int, **config: str) -> str:
    name = f"writer-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [TopicSpec(name, partitions, config)])
    return name


def test_keys_land_where_kafkas_partitioner_puts_them(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 12)
    writer = OutputWriter({"bootstrap.servers": kafka_bootstrap})
    keys = [f"container-{i}|{1_793_491_200_000_000 + i}".encode() for i in range(200)]
    for key in keys:
        assert writer.send(topic, key, b"v:" + key, headers=[("h", b"1")])
    assert writer.send(topic, b"pinned", b"v", partition=5)
    writer.acknowledged(30)
    writer.close()
    records = {r.key: r for r in read_all(kafka_bootstrap, topic)}
    assert len(records) == len(keys) + 1
    for key in keys:
        # Java's and aiokafka's default partitioner: murmur2 of the key, made positive.
        assert records[key].partition == (murmur2(key) & 0x7FFFFFFF) % 12, key
        assert records[key].value == b"v:" + key and records[key].headers == {"h": b"1"}
    assert records[b"pinned"].partition == 5
    assert len({r.partition for r in records.values()}) == 12


def test_a_refused_record_is_named(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 1, **{"max.message.bytes": "10000"})
    writer = OutputWriter({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 20_000})
    assert writer.send(topic, b"small", b"x" * 100)
    writer.acknowledged(30)
    assert writer.send(topic, b"too-large", os.urandom(50_000))  # incompressible: zstd cannot shrink it
    with pytest.raises(DeliveryError, match=rf"{topic} key=b'too-large': refused by the broker"):
        writer.acknowledged(30)
    writer.acknowledged(30)  # reported once; nothing else pending
    writer.close()
    assert [r.key for r in read_all(kafka_bootstrap, topic)] == [b"small"]


def test_a_full_queue_holds_records_back_until_there_is_room(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 3)
    writer = OutputWriter({"bootstrap.servers": kafka_bootstrap}, max_queued_kbytes=64)
    value = b"y" * 20_000
    refusals = 0
    for index in range(100):  # 2 MB through a 64 KiB queue
        while not writer.send(topic, str(index).encode(), value):
            refusals += 1
            writer.wait_for_room()
    writer.acknowledged(30)
    writer.close()
    assert refusals > 0
    assert sorted(int(r.key or b"") for r in read_all(kafka_bootstrap, topic)) == list(range(100))
