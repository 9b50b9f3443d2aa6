"""kill -9 in the middle of open windows, several times: every call is counted exactly once.

The raw events come from a paced producer (schemas.codec, no BPF needed), one step of
event time every 100 ms of wall time, with the agent's watermark after each step; the
real `signals processor` is killed with SIGKILL three times while windows are open and
restarted each time.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
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

CONTAINERS = [f"container-{n}" for n in range(6)]
WINDOW_MS = 1000
STEPS = 90          # 9 s of event time, 9 windows per container
STEP_S = 0.1
KILL_AT_S = (2.0, 4.6, 7.1)


@pytest.mark.parametrize("states_in_memory", [256, 1])
def test_kill_minus_9_mid_window_loses_and_doubles_nothing(kafka_bootstrap: str, tmp_path: Path,
                                                          states_in_memory: int) -> None:
    """With room for one container's latest state in memory, the others go through the
    worker's file at every window, and restarts stream the latest topic into it."""
    prefix = f"exact-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=3)
    publish_binaries(kafka_bootstrap, names)
    produced = scenario(CONTAINERS, STEPS, step_us=100_000, window_us=WINDOW_MS * 1000, partitions=3)
    worker_args = ["--group-instance-id", "worker-1", "--checkpoint-interval-ms", "300",
                   "--session-timeout-ms", "6000", "--latest-states-in-memory", str(states_in_memory)]
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=WINDOW_MS, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor(extra_args=worker_args, wait_ready_s=60)
        feeder = PacedProducer(kafka_bootstrap, names.raw, produced, STEP_S)
        started = time.monotonic()
        feeder.start()
        for kill_at_s in KILL_AT_S:
            time.sleep(max(0.0, started + kill_at_s - time.monotonic()))
            pipeline.kill_processor()
            pipeline.start_processor(extra_args=worker_args, wait_ready_s=60)
        feeder.join(60)
        assert feeder.error is None and not feeder.is_alive()
        expected_calls = sum(produced.calls.values())

        def all_counted() -> int | bool:
            latest = latest_by_key(read_all(kafka_bootstrap, names.summaries))
            total = sum(s["total_events"] for s in latest.values())
            return total >= expected_calls and total
        wait_until(all_counted, 60, f"{expected_calls} calls in the summaries")
        assert pipeline.stop_processor() == 0
    log = pipeline.log("processor")

    summaries = read_all(kafka_bootstrap, names.summaries)
    latest = latest_by_key(summaries)
    assert sum(s["total_events"] for s in latest.values()) == expected_calls, log[-3000:]
    per_window = Counter({(s["container_id"], s["started_at_us"]): s["total_events"] for s in latest.values()})
    assert +per_window == +produced.calls_per_window
    assert all(not symbol.startswith("sha256:") for s in latest.values() for symbol in s["observed_symbols"])
    # A window emitted again after a restart is the same bytes: compaction or a reader
    # keeping the last record per key can never see two versions.
    for kind, records in (("summary", summaries), ("path", read_all(kafka_bootstrap, names.paths))):
        changed = {key for key, values in values_by_key(records).items() if len(set(values)) != 1}
        assert not changed, f"{kind} keys with differing emissions: {sorted(changed)[:3]}"
    # The latest-state record of each container counts each call exactly once too.
    states = latest_by_key(read_all(kafka_bootstrap, names.latest))
    assert {key.decode(): s["total_events"] for key, s in states.items()} == dict(produced.calls)

    if states_in_memory == 1:  # the states did go through the file, since the last restart too
        stopped = log.rsplit("processor stopped: ", 1)[1]
        read_back = re.search(r"'latest_states_read_back': (\d+)", stopped)
        assert read_back and int(read_back.group(1)) > 0, stopped[:2000]
    # The kills did land mid-window: restarts restored checkpoints and replayed records
    # of windows that were open (replay starts after 0, yet before where outputs resume).
    restores = [(int(a), int(b)) for a, b in re.findall(r"replay from offset (\d+), outputs resume at (\d+)", log)]
    assert len(log.split("processor ready")) - 1 == len(KILL_AT_S) + 1
    assert any(0 < replay_from < resume_at for replay_from, resume_at in restores), restores
