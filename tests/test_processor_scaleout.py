"""Two workers in one consumer group: one joins mid-run (partitions move over with their
checkpoints), then the first is killed with SIGKILL (the other takes its partitions after
the session timeout). Every call is still counted exactly once."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import (
    PacedProducer,
    latest_by_key,
    publish_binaries,
    read_all,
    values_by_key,
    wait_until,
)
from tests.processor.raw_records import scenario

pytestmark = pytest.mark.broker

CONTAINERS = [f"pod-{n}" for n in range(8)]
WORKER_ARGS = ["--checkpoint-interval-ms", "300", "--session-timeout-ms", "6000"]


def test_a_worker_joining_and_one_dying_keep_counts_exact(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"scale-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=4)
    publish_binaries(kafka_bootstrap, names)
    produced = scenario(CONTAINERS, steps=100, step_us=100_000, window_us=1_000_000, partitions=4)
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor("worker-a", WORKER_ARGS, wait_ready_s=60)
        feeder = PacedProducer(kafka_bootstrap, names.raw, produced, step_s=0.1)
        feeder.start()
        time.sleep(2.5)
        pipeline.start_processor("worker-b", WORKER_ARGS, wait_ready_s=60)
        wait_until(lambda: "checkpoint restored" in pipeline.log("worker-b"), 30, "worker-b took partitions over")
        time.sleep(1.5)
        pipeline.kill_processor("worker-a")
        feeder.join(60)
        assert feeder.error is None and not feeder.is_alive()
        expected = sum(produced.calls.values())
        wait_until(lambda: sum(s["total_events"] for s in latest_by_key(
            read_all(kafka_bootstrap, names.summaries)).values()) >= expected, 60, f"{expected} calls summarized")
        assert pipeline.stop_processor(name="worker-b") == 0
    log_a, log_b = pipeline.log("worker-a"), pipeline.log("worker-b")

    summaries = read_all(kafka_bootstrap, names.summaries)
    latest = latest_by_key(summaries)
    assert sum(s["total_events"] for s in latest.values()) == expected, log_b[-3000:]
    assert {(s["container_id"], s["started_at_us"]): s["total_events"] for s in latest.values()} == dict(
        produced.calls_per_window)
    for kind, records in (("summary", summaries), ("path", read_all(kafka_bootstrap, names.paths))):
        changed = {key for key, values in values_by_key(records).items() if len(set(values)) != 1}
        assert not changed, f"{kind} keys with differing emissions: {sorted(changed)[:3]}"
    states = latest_by_key(read_all(kafka_bootstrap, names.latest))
    assert {key.decode(): s["total_events"] for key, s in states.items()} == dict(produced.calls)

    # Both hand-overs happened: worker-a gave partitions up when worker-b joined, and
    # worker-b restored worker-a's checkpoints, again after worker-a died.
    assert re.search(r"revoked \[\d", log_a), log_a[-2000:]
    restored = re.findall(r"\[(\d+)\]: checkpoint restored", log_b)
    assert sorted(set(restored)) == ["0", "1", "2", "3"], log_b[-2000:]
