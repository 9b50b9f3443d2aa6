"""The same raw topic processed twice gives byte-identical outputs, even when the symbol
tables arrive while the first run's windows are waiting for them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import latest_by_key, produce, publish_binaries, read_all, values_by_key, wait_until
from tests.processor.raw_records import scenario

pytestmark = pytest.mark.broker

CONTAINERS = ["web-1", "web-2", "worker-1", "cron-1"]


def test_live_run_and_replay_write_the_same_bytes(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"det-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    live, replay = TopicNames().with_prefix(f"{prefix}live."), TopicNames().with_prefix(f"{prefix}replay.")
    for topics in (names, live, replay):
        create_topics(kafka_bootstrap, topics, partitions=3)
    produced = scenario(CONTAINERS, steps=40, step_us=100_000, window_us=1_000_000, partitions=3)
    half = produced.steps[20]
    wait_args = ["--symbol-wait-ms", "60000"]
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path) as pipeline:
        pipeline.start_processor("live", ["--app-id", f"{prefix}live", "--output-topic-prefix", f"{prefix}live.",
                                          *wait_args], wait_ready_s=60)
        # The first two seconds of calls and watermarks: windows close, their tables are missing.
        produce(kafka_bootstrap, names.raw, produced.records[:half])
        time.sleep(2)
        assert read_all(kafka_bootstrap, live.summaries) == [], "a window went out before its symbol tables"
        publish_binaries(kafka_bootstrap, names)
        produce(kafka_bootstrap, names.raw, produced.records[half:])
        # The replay starts once the symbols topic holds every table.
        pipeline.start_processor("replay", ["--app-id", f"{prefix}replay", "--output-topic-prefix",
                                            f"{prefix}replay.", *wait_args], wait_ready_s=60)
        expected = sum(produced.calls.values())
        for topics in (live, replay):
            wait_until(lambda topics=topics: sum(s["total_events"] for s in latest_by_key(
                read_all(kafka_bootstrap, topics.summaries)).values()) == expected, 60, f"{topics.summaries} complete")
        assert pipeline.stop_processor(name="live") == 0
        assert pipeline.stop_processor(name="replay") == 0

    for kind in ("summaries", "paths", "latest"):
        live_values = values_by_key(read_all(kafka_bootstrap, getattr(live, kind)))
        replay_values = values_by_key(read_all(kafka_bootstrap, getattr(replay, kind)))
        assert live_values.keys() == replay_values.keys() and live_values, kind
        for key in live_values:
            assert live_values[key][-1] == replay_values[key][-1], f"{kind} {key!r} differs"
    summaries = latest_by_key(read_all(kafka_bootstrap, live.summaries))
    signatures = {s for summary in summaries.values() for p in summary["call_paths"] for s in p["function_signatures"]}
    assert "image::Parser::decode(std::vector<unsigned char, std::allocator<unsigned char>> const&)" in signatures
    assert "image::header::parse" in signatures
