"""Choosing and naming Kafka resources for tests; tests/conftest.py only wires these helpers."""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
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


def free_port_pair(host: str = "127.0.0.1") -> tuple[int, int]:
    """Two adjacent free ports (client, controller) below the kernel's ephemeral range, so a
    client's outgoing connection cannot take them between this check and the broker's bind."""
    for _ in range(200):
        port = random.randrange(20000, 32000, 2)
        if _bindable(host, port) and _bindable(host, port + 1):
            return port, port + 1
    raise RuntimeError(f"no two adjacent free ports on {host} in 20000-32000")


def unique_topic_name(test_name: str) -> str:
    """A topic name no other test (or earlier run on the same broker) uses."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name)[:80].strip("-.")
    return f"t-{stem}-{uuid.uuid4().hex[:10]}"


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
