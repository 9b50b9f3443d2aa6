"""Topic administration: create the topics a pipeline needs, with explicit settings.

Used by `signals kafka topics`, the demo, the tests and the benchmarks against any cluster
(the local development broker or a secured production one: client_config carries
security.protocol, sasl.* and ssl.*)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


class TopicCreationError(Exception):
    def __init__(self, topic: str, bootstrap: str, error: KafkaError) -> None:
        super().__init__(
            f"creating topic {topic!r} on {bootstrap} failed: {error.name()}: {error.str()}"
        )
        self.topic = topic
        self.code: int = error.code()


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout_s: float = 30.0,
                  client_config: Mapping[str, str] | None = None) -> None:
    """Create the topics that do not exist yet. An existing topic is left as it is: its
    partitions and configs are not compared with the spec. client_config adds librdkafka
    connection settings (security.protocol, sasl.*, ssl.*) for a secured cluster."""
    if not specs:
        return
    admin = AdminClient({**(client_config or {}), "bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                  config=dict(s.config)) for s in specs],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicCreationError(name, bootstrap, error) from exc
    _wait_for_leaders(admin, [s.name for s in specs], timeout_s)


def _wait_for_leaders(admin: AdminClient, names: Sequence[str], timeout_s: float) -> None:
    """Return once every partition of the topics has a leader: a client started on a topic
    whose leaders are still being elected fails its first offset request
    (NOT_LEADER_FOR_PARTITION). Past the timeout, return anyway: clients retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            topics = admin.list_topics(timeout=10).topics
        except KafkaException:  # a busy broker's slow metadata answer: ask again until the deadline
            if time.monotonic() > deadline:
                return
            continue
        waiting = [name for name in names if name not in topics or topics[name].error is not None
                   or any(p.leader < 0 for p in topics[name].partitions.values())]
        if not waiting or time.monotonic() > deadline:
            return
        time.sleep(0.2)
