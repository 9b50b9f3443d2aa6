"""Drop accounting against real BPF: every call the kernel saw is delivered or counted as
dropped, by reason, exactly."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from runtime_signals.agent.probes import CallTracer, ProbeLimits, ProbeSpec, RawCall, TracerSettings
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import (
    CALL_EVENT,
    STATISTICS,
    AgentProcess,
    decode_all,
    read_all,
    target_tally,
)

pytestmark = pytest.mark.bpf



@pytest.mark.broker
def test_a_full_ring_buffer_drops_are_counted_and_calls_add_up(kafka_bootstrap: str, hotloop: Path,
                                                               tmp_path: Path) -> None:
    prefix = f"drops-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    # One page holds six records; without dedup every call needs one, and the agent
    # cannot read them as fast as a tight loop makes them.
    flags = ["--ringbuf-pages", "1", "--no-dedup", "--no-budget", "--statistics-interval-ms", "300"]
    with AgentProcess(kafka_bootstrap, prefix, [f"{hotloop}:hot"], tmp_path / "agent.log", flags) as agent:
        run = subprocess.run([str(hotloop), "800", "0", "1000"], check=True, capture_output=True, text=True)
        assert agent.stop() == 0, agent.log()[-4000:]
    tally = target_tally(run.stdout)
    reports = decode_all(read_all(kafka_bootstrap, names.statistics), STATISTICS)
    final = max(reports, key=lambda r: r["reported_at_us"])
    delivered = sum(e["observation_count"] for e in decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT))

    attached = sum(a for a, _d, _m in tally.values())
    ambiguous = sum(m for _a, _d, m in tally.values())
    assert attached <= final["total_events"] <= attached + ambiguous, (tally, final)
    assert final["dropped_by_reason"]["ringbuf_full"] > 0, final
    assert final["dropped_events"] == sum(final["dropped_by_reason"].values())
    # calls = delivered + dropped, exactly, and the raw topic holds what was delivered.
    assert final["delivered_events"] + final["dropped_events"] == final["total_events"], final
    assert final["pending_events"] == 0, final
    assert delivered == final["delivered_events"], (delivered, final)
    assert max(r["buffer_utilization_percent"] for r in reports) > 0, reports


def test_rate_limited_calls_are_counted_not_captured(hotloop: Path) -> None:
    tracer = CallTracer(TracerSettings(ringbuf_pages=16))
    try:
        collected: list[RawCall] = []
        tracer.on_event(collected.append)
        probe = tracer.attach(ProbeSpec(str(hotloop), "hot"), ProbeLimits(dedup=True, rate_per_cpu_s=200, burst=20))
        run = subprocess.run([str(hotloop), "500", "0", "0"], check=True, capture_output=True, text=True)
        tracer.detach(probe)
        tracer.collect()
        counters = tracer.probe_counters(probe)
    finally:
        tracer.close()
    tally = target_tally(run.stdout)
    attached = sum(a for a, _d, _m in tally.values())
    ambiguous = sum(m for _a, _d, m in tally.values())
    assert attached <= counters["hits"] <= attached + ambiguous, (tally, counters)
    captured = sum(call.count for call in collected)
    assert counters["drop_rate_limited"] > captured > 0, counters
    # Folded, but for the process's first call: without a mapping table it goes through the
    # ring buffer to announce the process to the agent (bpf/calltrace.bpf.c announce()).
    assert counters["sent"] <= 1, counters
    assert captured == counters["folded"] + counters["sent"], (captured, counters)
    assert counters["calls"] == counters["folded"] + counters["sent"] + counters["drop_rate_limited"], counters


def test_a_retired_probes_calls_stop_at_once_and_count_as_transition(hotloop: Path) -> None:
    """retire_many() returns before the kernel has unregistered the uprobe (a grace period
    per uprobe, done by a background thread): from its return no call is taken, and the
    calls that still trap meanwhile are the kernel's hits without a program run, which the
    statistics report as probe_transition. Calls = hits exactly once the uprobe is gone."""
    tracer = CallTracer(TracerSettings(ringbuf_pages=16))
    try:
        tracer.on_event(lambda _call: None)
        probe = tracer.attach(ProbeSpec(str(hotloop), "hot"), ProbeLimits(dedup=True))
        loop = subprocess.Popen([str(hotloop), "1500", "0", "0"], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while tracer.probe_counters(probe)["calls"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        tracer.retire_many([probe])
        taken = tracer.probe_counters(probe)["calls"]
        closing_at_return = tracer.uprobes_closing()
        stdout, _ = loop.communicate(timeout=30)
        while tracer.uprobes_closing():
            time.sleep(0.01)
        counters = tracer.probe_counters(probe)
        tracer.collect()
    finally:
        tracer.close()
    attached, _detached, ambiguous = (sum(column) for column in zip(*target_tally(stdout).values(), strict=True))
    assert closing_at_return == 1
    # At most a run per CPU that read the config before it changed.
    assert taken <= counters["calls"] <= taken + os.cpu_count(), (taken, counters)
    assert attached <= counters["hits"] <= attached + ambiguous, counters
    assert counters["hits"] > counters["calls"], counters  # trapped while being unregistered
