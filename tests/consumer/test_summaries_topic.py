"""Reading the summary topic as `signals summaries` and the demo do: the latest summary of each
window (as compaction keeps it), in window order, whatever order the partitions hold them in."""

from __future__ import annotations

import pytest

from runtime_signals.consumer.summaries import latest_summaries, read_topic
from runtime_signals.schemas import codec
from tests.brokers import TopicFactory
from tests.consumer import sample_summaries as sample

pytestmark = pytest.mark.broker


def test_summaries_come_back_latest_per_window_in_window_order(unique_topic: TopicFactory,
                                                               kafka_bootstrap: str) -> None:
    topic = unique_topic(partitions=3)
    first, second, third, fourth = sample.samples()
    # A re-emitted window (the processor rewrites a window's summary after a restart) replaces
    # the first version; a tombstone deletes its window.
    corrected = dict(third, total_events=third["total_events"] + 1)
    extra = [(sample.summary_key(third), codec.encode(corrected, sample.SUMMARY, codec.SchemaRegistry.default())),
             (sample.summary_key(second), None)]
    sample.produce(kafka_bootstrap, topic, [fourth, third, second, first], extra)
    summaries = latest_summaries(read_topic(kafka_bootstrap, topic, timeout_s=10))
    assert [(s["started_at_us"], s["container_id"]) for s in summaries] == [
        (first["started_at_us"], "web-1"), (third["started_at_us"], "web-1"), (fourth["started_at_us"], "worker-2")]
    assert summaries[1]["total_events"] == third["total_events"] + 1


def test_an_empty_summary_topic_reads_as_no_summaries(unique_topic: TopicFactory, kafka_bootstrap: str) -> None:
    assert latest_summaries(read_topic(kafka_bootstrap, unique_topic(), timeout_s=10)) == []
