"""Choosing and naming Kafka resources for tests; tests/conftest.py only wires these helpers."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Iterator, Mapping, Protocol

# Matches the testcontainers default; a 4.x image can be chosen with RUNTIME_SIGNALS_KAFKA_IMAGE.
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
_DOCKER_SOCKET = Path("/var/run/docker.sock")


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
def kafka_container() -> Iterator[str]:
    """A testcontainers Kafka (KRaft) for the block; yields its bootstrap address."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.10 has no community namespace
        from testcontainers.kafka import KafkaContainer
    image = os.environ.get("RUNTIME_SIGNALS_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE)
    with KafkaContainer(image).with_kraft() as container:
        yield container.get_bootstrap_server()


def unique_topic_name(test_name: str) -> str:
    """A topic name no other test (or earlier run on the same broker) uses."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name)[:80].strip("-.")
    return f"t-{stem}-{uuid.uuid4().hex[:10]}"
