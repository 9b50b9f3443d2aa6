"""Kafka helpers for the processor's integration tests: produce scenarios, read topics back
with headers, scrape /metrics. The real broker and the real `signals processor` only."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Producer

from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.schemas import codec
from tests.processor.raw_records import REGISTRY, Scenario, encoded_binaries

T = TypeVar("T")


def producer(bootstrap: str) -> Producer:
    # The agent's partitioner (murmur2_random), so keys land where the agent puts them.
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "partitioner": "murmur2_random", "linger.ms": 2})


def produce(bootstrap: str, topic: str, records: Iterable[tuple[Any, ...]]) -> None:
    """Write (key, value, partition or None[, headers]) records and wait for their acks."""
    client = producer(bootstrap)
    for key, value, partition, *headers in records:
        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        if headers:
            kwargs["headers"] = headers[0]
        client.produce(topic, key=key, value=value, **kwargs)
    assert client.flush(30) == 0, f"records to {topic} not acknowledged"


class PacedProducer(threading.Thread):
    """Produces a scenario one step every step_s seconds of wall time, as an agent would."""

    def __init__(self, bootstrap: str, topic: str, scenario: Scenario, step_s: float) -> None:
        super().__init__(daemon=True)
        self._client = producer(bootstrap)
        self._topic = topic
        self._scenario = scenario
        self._step_s = step_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            steps = [*self._scenario.steps, len(self._scenario.records)]
            for first, end in zip(steps, steps[1:], strict=False):
                for key, value, partition in self._scenario.records[first:end]:
                    kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
                    self._client.produce(self._topic, key=key, value=value, **kwargs)
                self._client.poll(0)
                time.sleep(self._step_s)
            assert self._client.flush(30) == 0
        except BaseException as exc:  # reported by the test through .error
            self.error = exc


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def decoded(self) -> dict[str, Any]:
        assert self.value is not None
        return codec.decode(self.value, REGISTRY).record


def read_all(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[Record]:
    """Every record of the topic now, in partition then offset order (no group commits)."""
    reader = TopicReader(bootstrap, timeout_s=timeout_s)
    records = [Record(r.partition, r.offset, r.key, r.value, dict(r.headers))
               for r in reader.read(topic, reader.whole_topic(topic))]
    return sorted(records, key=lambda r: (r.partition, r.offset))


def values_by_key(records: list[Record]) -> dict[bytes | None, list[bytes | None]]:
    found: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for record in records:
        found[record.key].append(record.value)
    return found


def latest_by_key(records: list[Record]) -> dict[bytes | None, dict[str, Any]]:
    """What compaction keeps: the last record of each key, decoded."""
    return {key: codec.decode(values[-1], REGISTRY).record
            for key, values in values_by_key(records).items() if values[-1] is not None}


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {result!r})")
        time.sleep(interval_s)


def free_port() -> int:
    """A TCP port free on the loopback now (for a worker's --metrics-port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """/metrics as {"name{labels}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def publish_binaries(bootstrap: str, names: Any) -> None:
    """The symbol tables and module map an agent publishes for the scenario's binaries."""
    for attribute, records in encoded_binaries().items():
        produce(bootstrap, getattr(names, attribute), records)
