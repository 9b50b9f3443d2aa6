"""The local Kafka broker and the topic helper, against a real broker."""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from runtime_signals.devtools import localkafka
from runtime_signals.devtools.localkafka import BrokerStartError, LocalKafkaConfig, down, status, up
from runtime_signals.kafka.admin import TopicCreationError, TopicSpec, ensure_topics
from tests import brokers


def test_pom_pins_the_version_the_module_names() -> None:
    pom = LocalKafkaConfig.from_env().pom_path
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pinned = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    assert pinned is not None and pinned.text == localkafka.KAFKA_VERSION


def test_cluster_ids_have_kafkas_shape() -> None:
    ids = {localkafka.new_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.broker
def test_session_broker_answers(kafka_bootstrap: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert metadata.brokers


@pytest.mark.broker
def test_message_round_trips_through_a_consumer_group(
    kafka_bootstrap: str, unique_topic: brokers.TopicFactory
) -> None:
    topic = unique_topic()
    delivery_errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b"container-1", value=b"frame", headers=[("schema", b"v1")],
                     on_delivery=lambda err, _msg: delivery_errors.append(err) if err else None)
    assert producer.flush(15) == 0 and not delivery_errors

    # A group consumer with a synchronous commit: this needs __consumer_offsets, which a
    # single-node broker can only create with offsets.topic.replication.factor=1.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic}-group",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        message = _poll_one(consumer, timeout_s=30)
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
    assert (message.key(), message.value(), message.headers()) == (
        b"container-1", b"frame", [("schema", b"v1")])


@pytest.mark.broker
def test_ensure_topics_applies_partitions_and_configs(kafka_bootstrap: str) -> None:
    name = brokers.unique_topic_name("compacted")
    spec = TopicSpec(name, partitions=2,
                     config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"})
    ensure_topics(kafka_bootstrap, [spec])
    ensure_topics(kafka_bootstrap, [spec])  # already there: not an error

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 2
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)]).values()
    configs = future.result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["min.compaction.lag.ms"].value == "60000"


@pytest.mark.broker
def test_ensure_topics_error_names_the_topic(kafka_bootstrap: str) -> None:
    name = brokers.unique_topic_name("bad-config")
    with pytest.raises(TopicCreationError) as info:
        ensure_topics(kafka_bootstrap, [TopicSpec(name, config={"cleanup.policy": "sideways"})])
    assert info.value.topic == name and name in str(info.value)
    assert info.value.code == KafkaError.INVALID_CONFIG


@pytest.fixture
def spare_broker(tmp_path: Path) -> Iterator[LocalKafkaConfig]:
    """A second local broker's config (own ports and state), so the session broker stays up."""
    try:
        localkafka._java_binary()
    except localkafka.ToolNotFoundError as exc:
        pytest.skip(f"the up/down tests run a local broker: {exc}")
    port, controller_port = localkafka.free_port_pair()
    cfg = LocalKafkaConfig.from_env(state_dir=tmp_path / "broker", port=port,
                                    controller_port=controller_port)
    yield cfg
    down(cfg)  # only acts if a test failed before stopping it


@pytest.mark.broker
def test_up_status_down(spare_broker: LocalKafkaConfig) -> None:
    cfg = spare_broker
    assert status(cfg) == localkafka.BrokerStatus(None, False, cfg.bootstrap)

    assert up(cfg) == f"127.0.0.1:{cfg.port}"
    running = status(cfg)
    assert running.running and running.answering
    assert running.pid == int(cfg.pid_file.read_text())

    started = time.monotonic()
    assert up(cfg) == cfg.bootstrap  # already up: no second JVM, no waiting
    assert time.monotonic() - started < 5 and status(cfg).pid == running.pid

    assert down(cfg) is True
    assert not cfg.pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(running.pid, 0)
    assert status(cfg) == localkafka.BrokerStatus(None, False, cfg.bootstrap)
    assert down(cfg) is False


@pytest.mark.broker
def test_failed_start_quotes_the_broker_log(spare_broker: LocalKafkaConfig) -> None:
    up(spare_broker)  # format the state dir with good settings first
    down(spare_broker)
    broken = dataclasses.replace(spare_broker, extra_properties={
        "listeners": f"PLAINTEXT://127.0.0.1:{spare_broker.port},"
                     f"CONTROLLER://127.0.0.1:{spare_broker.controller_port},"
                     "PLAINTEXT://127.0.0.1:1"})
    with pytest.raises(BrokerStartError) as info:
        up(broken, timeout_s=60)
    assert "server.log" in str(info.value)
    assert "Each listener must have a different name" in str(info.value)
    assert not status(broken).running and not broken.pid_file.exists()


def test_up_refuses_a_port_already_taken(spare_broker: LocalKafkaConfig) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare_broker.port))
        squatter.listen()
        with pytest.raises(BrokerStartError, match=f"127.0.0.1:{spare_broker.port} is already"):
            up(spare_broker)


def _poll_one(consumer: Consumer, timeout_s: float) -> Message:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            raise AssertionError(f"consumer error: {message.error()}")
        return message
    raise AssertionError(f"no message within {timeout_s}s")
