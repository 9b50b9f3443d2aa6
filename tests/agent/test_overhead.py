"""Overhead control against a real hot function: in-kernel dedup and the adaptive budget
keep every distinct call path and exact counts.

tests/agent/targets/hotloop.c calls hot() in a tight loop (well over 1M calls/s unprobed)
through path_a and path_b, then also through path_c. It counts its own calls by whether
the uprobe was in place, so the test can hold the agent's accounting against the
workload's: every call made while the probe was attached is in the raw topic's counts,
and the calls made while the budget had it detached are the ones missing.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from runtime_signals.consumer.watched import watched
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import (
    CALL_EVENT,
    STATISTICS,
    AgentProcess,
    build_target,
    calls_by_caller,
    decode_all,
    last_statistics,
    read_all,
    target_tally,
)
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]


def test_hot_function_keeps_every_path_and_exact_counts_under_dedup_and_budget(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    hotloop = build_target("hotloop", tmp_path)
    prefix = f"overhead-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    probe_id = f"{hotloop}:hot"
    # A budget scaled down to the test's few seconds: detach after 1 s without a new path,
    # re-arm after 1 s, so path_c (its 3 s from 2.5 s on) is met by an armed probe.
    budget = ["--budget-quiet-s", "1", "--budget-min-rate", "100", "--budget-backoff-s", "1",
              "--budget-max-backoff-s", "1", "--statistics-interval-ms", "1000"]
    with AgentProcess(kafka_bootstrap, prefix, [probe_id], tmp_path / "agent.log", budget) as agent:
        run = subprocess.run([str(hotloop), "2500", "3000", "1500"], check=True, capture_output=True, text=True)
        assert agent.stop() == 0, agent.log()[-4000:]
    log = agent.log()[-4000:]
    tally = target_tally(run.stdout)

    events = decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
    observed = calls_by_caller(events, hotloop)
    report = last_statistics(kafka_bootstrap, names.statistics)
    # Every distinct path reached the raw topic, the late one included.
    assert set(observed) == {"path_a", "path_b", "path_c"}, (observed, log)
    # The kernel's hit count is the workload's own count of calls made with the probe in
    # place (a call during which the probe came or went may fall either way)...
    attached = sum(a for a, _d, _m in tally.values())
    ambiguous = sum(m for _a, _d, m in tally.values())
    assert attached <= report["total_events"] <= attached + ambiguous, (tally, report, log)
    # ...and every one of those calls is either in the raw topic's counts or a counted drop:
    # the only losses are calls that hit the probe while the kernel was detaching it.
    assert sum(observed.values()) + report["dropped_events"] == report["total_events"], (observed, report)
    assert set(r for r, calls in report["dropped_by_reason"].items() if calls) <= {"probe_transition"}, report
    for path, (attached_calls, _detached, ambiguous_calls) in tally.items():
        assert observed[path] <= attached_calls + ambiguous_calls, (path, tally, observed)
    # Dedup folded them: far fewer records than calls.
    assert len(events) * 100 < sum(observed.values()), (len(events), sum(observed.values()))

    # The budget detached the well-known probe (calls went unobserved) and says so.
    assert sum(detached for _a, detached, _m in tally.values()) > 0, tally
    assert report["detached_ns_by_probe"][probe_id] > 0, report
    # And `reachable` can say for how long it watched: between the first and last report, the
    # time less what the budget detached (consumer/watched.py, from these very records).
    reports = sorted(decode_all(read_all(kafka_bootstrap, names.statistics), STATISTICS),
                     key=lambda r: r["reported_at_us"])
    first, last = reports[0], reports[-1]
    # The agent's run clock, read with the detached figures, is what the figure is measured in.
    assert all(r["run_ns"] > 0 for r in reports) and last["run_ns"] > first["run_ns"], reports
    span_us = (last["run_ns"] - first["run_ns"]) // 1000
    detached_us = (last["detached_ns_by_probe"][probe_id] - first["detached_ns_by_probe"].get(probe_id, 0)) // 1000
    watch = watched("hot", reports, first["reported_at_us"], last["reported_at_us"])
    assert detached_us > 0 and watch.watched_us() < span_us, (watch, span_us)
    # (Less one statistics interval when the first report came before the probe was attached.)
    assert span_us - detached_us - 1_000_000 - 1000 * len(reports) <= watch.watched_us() <= span_us - detached_us, watch
    # Everything read from the kernel was delivered.
    assert report["pending_events"] == 0, report
    assert report["delivered_events"] == sum(observed.values()), report
    assert report["unique_call_paths"] == 3, report
