"""The raw topic's partition count (for watermarks) is asked for off the event pump: an
agent started while the broker is away never waits on it, and learns it once the broker
answers. Real librdkafka against no broker, then against the session's real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from runtime_signals.agent.publisher import ProducerSettings, Publisher
from runtime_signals.devtools import localkafka
from runtime_signals.kafka import admin


def test_the_pump_never_waits_for_metadata_while_the_broker_is_away() -> None:
    nothing_listens = f"127.0.0.1:{localkafka.free_port_pair()[0]}"
    # Each metadata attempt waits 30 s for a broker, so a call made on the caller's thread
    # would take 30 s. The bound below only tells "did not wait for the broker" from
    # "waited": it is a third of that wait, not a performance figure.
    publisher = Publisher(ProducerSettings(nothing_listens, metadata_timeout_ms=30_000))
    try:
        answers, longest_s = [], 0.0
        for _ in range(30):  # three seconds of a pump turning every 100 ms
            started = time.monotonic()
            answers.append(publisher.known_partition_count("raw"))
            longest_s = max(longest_s, time.monotonic() - started)
            time.sleep(0.1)
        assert answers == [None] * 30
        assert longest_s < 10, f"a call waited {longest_s:.2f}s for the broker"
        assert not publisher.has_metadata("raw")
    finally:
        publisher.close(0.1)


@pytest.mark.broker
def test_the_partition_count_is_learnt_once_the_broker_answers(kafka_bootstrap: str) -> None:
    topic = f"metadata-{uuid.uuid4().hex[:8]}"  # not created yet: the broker does not know it
    publisher = Publisher(ProducerSettings(kafka_bootstrap, metadata_timeout_ms=2_000, metadata_retry_ms=200))
    try:
        assert publisher.known_partition_count(topic) is None
        admin.ensure_topics(kafka_bootstrap, [admin.TopicSpec(topic, 3, {})])
        deadline = time.monotonic() + 60
        while publisher.known_partition_count(topic) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.known_partition_count(topic) == 3
        assert publisher.has_metadata(topic)
    finally:
        publisher.close(1.0)
