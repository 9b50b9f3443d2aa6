"""Probe slots against real BPF: a retired probe's slot serves a new probe once its uprobe
is gone and its records are in, so agent.max_probes bounds the probes attached at once, not
every probe an agent ever attached (plans come and go for months)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from runtime_signals.agent.errors import ProbeError
from runtime_signals.agent.probes import CallTracer, ProbeSpec, RawCall, TracerSettings
from tests.agent.agent_runs import target_tally

pytestmark = pytest.mark.bpf



def _run(hotloop: Path, tracer: CallTracer) -> dict[str, int]:
    """One short run; every call per path, whatever the probes did."""
    done = subprocess.run([str(hotloop), "150", "0", "0"], check=True, capture_output=True, text=True)
    tracer.collect()
    return {path: sum(columns) for path, columns in target_tally(done.stdout).items()}


def test_a_retired_probes_slot_serves_a_new_probe_with_figures_of_its_own(hotloop: Path) -> None:
    tracer = CallTracer(TracerSettings(ringbuf_pages=16, max_probes=2, slot_reuse_after_s=0.2))
    records: list[RawCall] = []
    try:
        tracer.on_event(records.append)
        first = tracer.attach(ProbeSpec(str(hotloop), "path_a"))
        hot = tracer.attach(ProbeSpec(str(hotloop), "hot"))
        with pytest.raises(ProbeError, match="2 probes are attached already"):
            tracer.attach(ProbeSpec(str(hotloop), "path_b"))
        before = _run(hotloop, tracer)
        first_calls = tracer.probe_counters(first)["calls"]
        first_records = sum(r.count for r in records if r.probe_index == first.index)

        tracer.retire_many([first])
        with pytest.raises(ProbeError, match="1 retired"):  # resting: not taken at once
            tracer.attach(ProbeSpec(str(hotloop), "path_b"))
        deadline = time.monotonic() + 30
        while tracer.uprobes_closing() and time.monotonic() < deadline:
            time.sleep(0.02)
        tracer.collect()
        tracer.collect()
        time.sleep(0.3)
        records.clear()
        second = tracer.attach(ProbeSpec(str(hotloop), "path_b"))
        assert second.index == first.index
        after = _run(hotloop, tracer)
        counters = tracer.probe_counters(second)
        totals = tracer.counters()
        hot_calls = tracer.probe_counters(hot)["calls"]
    finally:
        tracer.close()

    assert first_calls == first_records == before["path_a"]
    # The slot's new probe counts its own calls only, and its records are all its own.
    assert counters["calls"] == counters["hits"] == after["path_b"], (counters, after)
    assert sum(r.count for r in records if r.probe_index == second.index) == after["path_b"]
    # Totals keep the retired probe's calls: they never go back.
    assert hot_calls == sum(before.values()) + sum(after.values())
    assert totals["calls"] == first_calls + hot_calls + after["path_b"], totals
    assert totals["hits"] >= totals["calls"]
