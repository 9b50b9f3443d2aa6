"""Shared fixtures: one real Kafka broker per test session, and uniquely named topics."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping

import pytest

from runtime_signals.devtools import localkafka
from runtime_signals.kafka import admin
from tests import brokers

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the session's broker, from the first source that works:
    KAFKA_BOOTSTRAP_SERVERS, a testcontainers broker if Docker answers and holds the Kafka
    image (brokers.kafka_image(), built locally: no registry here), or the local broker of
    runtime_signals.devtools.localkafka in a fresh state dir (stopped at session end)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    docker_reason = brokers.docker_unavailable_reason()
    if docker_reason is None:
        docker_reason = brokers.image_unavailable_reason(brokers.kafka_image())
    if docker_reason is None:
        with brokers.kafka_container(brokers.kafka_image()) as bootstrap:
            yield bootstrap
        return
    log.warning("Kafka for the tests: not with testcontainers (%s); starting the local broker", docker_reason)
    # Free ports rather than the defaults: a developer's demo broker may hold 19092/19093.
    port, controller_port = localkafka.free_port_pair()
    cfg = localkafka.LocalKafkaConfig.from_env(
        state_dir=tmp_path_factory.mktemp("kafka-broker"), port=port,
        controller_port=controller_port)
    try:
        bootstrap = localkafka.up(cfg)
    except (localkafka.ToolNotFoundError, localkafka.ProvisionError) as exc:
        # Missing tools or no route to Maven Central: the machine cannot host a broker. A broker
        # that was provisioned but fails to start is a bug, so BrokerStartError is not skipped.
        pytest.skip(f"no Kafka broker: {docker_reason}, and the local broker cannot run: {exc}")
    try:
        yield bootstrap
    finally:
        localkafka.down(cfg)


@pytest.fixture
def unique_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> brokers.TopicFactory:
    """Call it to create a fresh topic for this test; returns the topic's name."""

    def make(partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        name = brokers.unique_topic_name(request.node.name)
        admin.ensure_topics(
            kafka_bootstrap, [admin.TopicSpec(name, partitions, dict(config or {}))])
        return name

    return make
