"""Benchmark 5: window attribution, each call counted in the window that holds its own time.

The issue's setting: 5 s windows, agent flushes every 500 ms, a paced load whose calls share
a few stacks, so the kernel folds them. The target (`hot paced`) prints the CLOCK_REALTIME of
each call just before making it; its own per-window counts are the reference. Figures:
- folded records whose first and last calls lie in different windows (read back from the
  raw topic): the records that would be attributed wholly to their first call's window;
- calls the summaries count in another window than the target's own clock says, as
  sum(|summary count - own count|) / 2 over the windows;
- calls within 1 ms of a window boundary: the target stamps a call just before making it
  and the kernel just after entering it, so a call that close may honestly fall either way.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.schemas import codec

from . import native
from .kafka_io import pipeline_topics
from .procs import BenchmarkError, Child, epoch_micros, signals_argv

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
NEAR_BOUNDARY_US = 1000


def run(bootstrap: str, work_dir: Path, calls: int, interval_us: int, window_ms: int = 5000,
        watermark_interval_ms: int = 500, lateness_ms: int = 300) -> dict[str, Any]:
    binary = native.copy_for(native.build_target(work_dir / "bin"), "windows")
    prefix = f"bench-windows-{uuid.uuid4().hex[:8]}."
    names = pipeline_topics(bootstrap, prefix, partitions=3)
    common = ["--bootstrap", bootstrap, "--topic-prefix", prefix]
    processor_argv = signals_argv("processor", *common, "--window-ms", str(window_ms),
                                  "--allowed-lateness-ms", str(lateness_ms), "--app-id", f"{prefix}app")
    # No budget: it would detach the steady probe after a few seconds, and the calls it then
    # misses are not this benchmark's subject.
    agent_argv = signals_argv("agent", *common, "--probe", f"{binary}:{native.SYMBOL}",
                              "--watermark-interval-ms", str(watermark_interval_ms), "--no-budget")
    window_us = window_ms * 1000
    logs = work_dir / "logs"
    with Child("processor-windows", processor_argv, logs) as processor, \
            Child("agent-windows", agent_argv, logs) as agent:
        processor.wait_for("processor ready", 120)
        agent.wait_for("agent ready", 180)
        process = subprocess.Popen([str(binary), "paced", str(calls), str(interval_us), "4"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        call_times_us: list[int] = []
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("call "):
                    call_times_us.append(int(line.split()[1]) // 1000)
                elif line.startswith("done"):
                    break
            own = Counter(t - t % window_us for t in call_times_us)
            observed = _summed_windows(bootstrap, names.summaries, set(own), calls,
                                       timeout_s=60 + calls * interval_us / 1e6)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(30)
        agent.stop()
        processor.stop()
    spanning, spanning_calls, records = _spanning_records(bootstrap, names.raw, window_us)
    misplaced = sum(abs(observed.get(w, 0) - own.get(w, 0)) for w in set(own) | set(observed)) // 2
    near = sum(1 for t in call_times_us if min(t % window_us, window_us - t % window_us) < NEAR_BOUNDARY_US)
    return {"window_ms": window_ms, "watermark_interval_ms": watermark_interval_ms, "calls": len(call_times_us),
            "windows": len(own), "raw_records": records, "records_spanning_windows": spanning,
            "calls_in_spanning_records": spanning_calls, "calls_in_another_window": misplaced,
            "calls_within_1ms_of_a_boundary": near}


def _summed_windows(bootstrap: str, topic: str, windows: set[int], calls: int, timeout_s: float) -> Counter[int]:
    """total_events per window start, once every window has a summary and they add up."""
    registry = codec.SchemaRegistry.default()
    reader = TopicReader(bootstrap, timeout_s=10)
    deadline = time.monotonic() + timeout_s
    while True:
        latest = {r.key: codec.decode(r.value, registry, SUMMARY).record
                  for r in reader.read(topic, reader.whole_topic(topic)) if r.value is not None}
        totals: Counter[int] = Counter()
        for summary in latest.values():
            totals[epoch_micros(summary["started_at_us"])] += summary["total_events"]
        if windows <= set(totals) and sum(totals.values()) >= calls:
            return totals
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{topic}: {sum(totals.values())} of {calls} calls summarized "
                                 f"within {timeout_s:.0f}s")
        time.sleep(0.5)


def _spanning_records(bootstrap: str, topic: str, window_us: int) -> tuple[int, int, int]:
    """(records whose calls lie in two windows, the calls they hold, call records in all)."""
    registry = codec.SchemaRegistry.default()
    reader = TopicReader(bootstrap, timeout_s=10)
    spanning = spanning_calls = records = 0
    for record in reader.read(topic, reader.whole_topic(topic)):
        decoded = codec.decode(record.value, registry)  # type: ignore[arg-type]
        if decoded.schema_name != CALL_EVENT:
            continue
        event = decoded.record
        records += 1
        first_us = event["observed_at_us"]
        last_ns = event["last_timestamp_ns"]
        last_us = first_us + ((last_ns - event["timestamp_ns"]) // 1000 if last_ns is not None else 0)
        if first_us // window_us != last_us // window_us:
            spanning += 1
            spanning_calls += event["observation_count"]
    return spanning, spanning_calls, records
