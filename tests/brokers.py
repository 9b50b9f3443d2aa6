"""Choosing and naming Kafka resources for tests; tests/conftest.py only wires these helpers."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from runtime_signals.devtools.localkafka import KAFKA_VERSION, free_port_pair

# The project's own Kafka image (deploy/docker/Dockerfile.kafka, built by scripts/images.sh
# from the development broker's jars): no registry is needed. RUNTIME_SIGNALS_KAFKA_IMAGE may
# name another; an image outside runtime-signals/ is taken to be Apache's or Confluent's and
# is run with testcontainers' KafkaContainer.
PROJECT_KAFKA_IMAGE = f"runtime-signals/kafka:{KAFKA_VERSION}"
_DOCKER_SOCKET = Path("/var/run/docker.sock")
_STARTED_LINE = "Kafka Server started"


def kafka_image() -> str:
    return os.environ.get("RUNTIME_SIGNALS_KAFKA_IMAGE", PROJECT_KAFKA_IMAGE)


def image_unavailable_reason(image: str) -> str | None:
    """None if the engine holds image; otherwise why it cannot be used (no registry here
    to pull from, so an image that is not built locally is not used)."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env(timeout=5)
        try:
            client.images.get(image)
        finally:
            client.close()
    except ImageNotFound:
        return f"image {image} is not on the Docker engine (scripts/images.sh build makes it)"
    except DockerException as exc:
        return f"image {image}: {exc}"
    return None


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 1, config: Mapping[str, str] | None = None) -> str: ...


def docker_unavailable_reason(timeout_s: int = 2) -> str | None:
    """None if a Docker engine answers a ping, otherwise why not (for a skip message)."""
    host = os.environ.get("DOCKER_HOST")
    # Checked before importing docker: a failed connection attempt leaks a socket warning.
    if not host and not _DOCKER_SOCKET.exists():
        return f"no Docker engine (DOCKER_HOST unset, no {_DOCKER_SOCKET})"
    try:
        import docker
    except ImportError:
        return "the `docker` package is not installed"
    try:
        client = docker.from_env(timeout=timeout_s)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "not usable here"; the reason is reported
        return f"Docker engine at {host or _DOCKER_SOCKET} did not answer: {exc}"
    return None


@contextlib.contextmanager
def kafka_container(image: str) -> Iterator[str]:
    """A testcontainers Kafka (KRaft) of image for the block; yields its bootstrap address."""
    from testcontainers.core.config import testcontainers_config

    # Ryuk, testcontainers' reaper, is an image from Docker Hub: unreachable here. The
    # container is removed by the context manager instead.
    testcontainers_config.ryuk_disabled = True
    if not image.startswith("runtime-signals/"):
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers < 4.10 has no community namespace
            from testcontainers.kafka import KafkaContainer
        with KafkaContainer(image).with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    # The advertised address must be the published one, known before start: a free port.
    port, _ = free_port_pair()
    container = DockerContainer(image).with_bind_ports(9092, port).with_envs(
        CLUSTER_ID="tWZ3Jz3ZQ4yLsRkqFJvX2w", KAFKA_NODE_ID="1", KAFKA_PROCESS_ROLES="broker,controller",
        KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER", KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1", KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS="5",
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1", KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
        KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1", KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
        KAFKA_AUTO_CREATE_TOPICS_ENABLE="false", KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        # 16 MiB records, as the development broker accepts (schemas/topics.py).
        KAFKA_MESSAGE_MAX_BYTES=str(16 * 1024 * 1024 + 1024))
    with container:
        # Seconds on a quiet machine; minutes on a 2-core one running eight test suites.
        wait_for_logs(container, _STARTED_LINE, timeout=420)
        yield f"127.0.0.1:{port}"


def unique_topic_name(test_name: str) -> str:
    """A topic name no other test (or earlier run on the same broker) uses."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name)[:80].strip("-.")
    return f"t-{stem}-{uuid.uuid4().hex[:10]}"
