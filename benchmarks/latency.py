"""Benchmark 4: end-to-end latency, from a call to the arrival of its window's summary.

The whole pipeline runs as an operator would start it (`signals processor`, `signals agent`);
the target (`hot paced`) prints the CLOCK_REALTIME of each call just before making it, and
a consumer tailing the summary topic stamps each summary as it arrives. For each call:
    latency = arrival of the summary of the window holding the call - the call
A call waits for its window to end by design; what the pipeline adds is the rest:
    after close = arrival - (window end)      floor: allowed lateness + one watermark interval
Each load (calls per second) runs for a few seconds, one after the other.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from runtime_signals.schemas import codec

from . import native
from .kafka_io import Tail, pipeline_topics
from .procs import BenchmarkError, Child, epoch_micros, percentile, signals_argv

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"


def run(bootstrap: str, work_dir: Path, rates_per_s: list[int], seconds_per_rate: float,
        window_ms: int = 1000, lateness_ms: int = 300, watermark_interval_ms: int = 200,
        agent_flags: list[str] | None = None) -> dict[str, Any]:
    binary = native.copy_for(native.build_target(work_dir / "bin"), "latency")
    prefix = f"bench-latency-{uuid.uuid4().hex[:8]}."
    names = pipeline_topics(bootstrap, prefix, partitions=3)
    common = ["--bootstrap", bootstrap, "--topic-prefix", prefix]
    processor_argv = signals_argv("processor", *common, "--window-ms", str(window_ms),
                                  "--allowed-lateness-ms", str(lateness_ms), "--app-id", f"{prefix}app")
    agent_argv = signals_argv("agent", *common, "--probe", f"{binary}:{native.SYMBOL}",
                              "--watermark-interval-ms", str(watermark_interval_ms), *(agent_flags or []))
    rows = []
    logs = work_dir / "logs"
    with Child("processor-latency", processor_argv, logs) as processor, \
            Child("agent-latency", agent_argv, logs) as agent:
        processor.wait_for("processor ready", 120)
        agent.wait_for("agent ready", 180)
        tail = Tail(bootstrap, names.summaries)
        try:
            for rate in rates_per_s:
                rows.append(_one_rate(binary, tail, rate, seconds_per_rate, window_ms))
        finally:
            tail.close()
        agent.stop()
        processor.stop()
    return {"window_ms": window_ms, "allowed_lateness_ms": lateness_ms,
            "watermark_interval_ms": watermark_interval_ms, "rows": rows}


def _one_rate(binary: Path, tail: Tail, rate_per_s: int, seconds: float, window_ms: int) -> dict[str, Any]:
    calls = max(1, int(rate_per_s * seconds))
    interval_us = max(1, 1_000_000 // rate_per_s)
    window_us = window_ms * 1000
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
        # Every window the calls touched, and when its summary arrived.
        windows = {t - t % window_us for t in call_times_us}
        arrived = _wait_for_windows(tail, windows, timeout_s=60 + seconds)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(30)
    latencies_ms = []
    after_close_ms = []
    for call_us in call_times_us:
        start_us = call_us - call_us % window_us
        arrival_us = arrived[start_us]
        latencies_ms.append((arrival_us - call_us) / 1000)
        after_close_ms.append((arrival_us - start_us - window_us) / 1000)
    return {
        "rate_per_s": rate_per_s, "calls": len(call_times_us), "windows": len(windows),
        "p50_ms": percentile(latencies_ms, 0.5), "p99_ms": percentile(latencies_ms, 0.99),
        "p50_minus_window_ms": percentile(latencies_ms, 0.5) - window_ms,
        "p99_minus_window_ms": percentile(latencies_ms, 0.99) - window_ms,
        "after_close_p50_ms": percentile(after_close_ms, 0.5),
        "after_close_p99_ms": percentile(after_close_ms, 0.99),
    }


def _wait_for_windows(tail: Tail, windows: set[int], timeout_s: float) -> dict[int, int]:
    """Arrival time (µs since the epoch) of the first summary of each window start."""
    registry = codec.SchemaRegistry.default()
    first: dict[int, int] = {}
    seen = 0
    deadline = time.monotonic() + timeout_s
    while not windows <= set(first):
        if time.monotonic() > deadline:
            missing = sorted(windows - set(first))
            raise BenchmarkError(f"{tail.topic}: no summary for windows starting at {missing[:5]} "
                                 f"(µs) within {timeout_s:.0f}s")
        tail.check()
        time.sleep(0.01)
        for arrival in tail.arrivals[seen:]:
            summary = codec.decode(arrival.value, registry, SUMMARY).record
            start_us = epoch_micros(summary["started_at_us"])
            first.setdefault(start_us, int(arrival.at_wall_s * 1_000_000))
        seen = len(tail.arrivals)
    return first

