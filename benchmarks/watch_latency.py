"""Benchmark 5: time to the first (provisional) answer, from a call to its line in `signals watch`.

Issue 19 measured 35-75 s from traffic to the first answer of `signals reachable` with the
default 60 s window: a summary exists only once its window ends, plus the allowed lateness.
`signals watch` answers from the raw topic instead. The agent runs as an operator starts it
(in-kernel dedup on, 500 ms watermark interval: a call is sent at the end of the interval it
was folded in); the target (`hot paced`) prints the CLOCK_REALTIME of each call just before
making it, and `signals watch --json` runs with its output stamped line by line as it arrives.
Calls come from one process, so their records arrive in call order: call i is shown by the
first line that brings the running total of calls past i.
    latency = arrival of that line - the call      floor: the watermark interval (dedup's batch)
The calls start once watch says it follows the raw topic; its start-up time is reported apart.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import native
from .kafka_io import pipeline_topics
from .procs import BenchmarkError, Child, percentile, signals_argv


def run(bootstrap: str, work_dir: Path, rate_per_s: int, seconds: float,
        watermark_interval_ms: int = 500) -> dict[str, Any]:
    binary = native.copy_for(native.build_target(work_dir / "bin"), "watch")
    prefix = f"bench-watch-{uuid.uuid4().hex[:8]}."
    pipeline_topics(bootstrap, prefix, partitions=3)
    common = ["--bootstrap", bootstrap, "--topic-prefix", prefix]
    agent_argv = signals_argv("agent", *common, "--probe", f"{binary}:{native.SYMBOL}",
                              "--watermark-interval-ms", str(watermark_interval_ms))
    calls = max(1, int(rate_per_s * seconds))
    watch_log = work_dir / "logs" / "watch.log"
    with Child("agent-watch", agent_argv, work_dir / "logs") as agent, open(watch_log, "w") as log:
        agent.wait_for("agent ready", 180)
        watch = subprocess.Popen(signals_argv("watch", *common, "--json", "--max-calls", str(calls),
                                              "--duration-s", str(seconds + 60), "--symbol-wait-ms", "5000"),
                                 stdout=subprocess.PIPE, stderr=log, text=True)
        arrivals: list[tuple[float, int]] = []  # (wall time s, calls on the line)

        def read() -> None:
            assert watch.stdout is not None
            for line in watch.stdout:
                arrivals.append((time.time(), json.loads(line)["calls"]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started_s = time.monotonic()
        # Steady state: watch has read the symbols and modules topics and follows the raw one.
        while "following " not in watch_log.read_text():
            if watch.poll() is not None or time.monotonic() - started_s > 120:
                raise BenchmarkError(f"signals watch did not start; see {watch_log}")
            time.sleep(0.05)
        startup_s = time.monotonic() - started_s
        call_times_s = _paced(binary, calls, rate_per_s)
        try:
            watch.wait(timeout=seconds + 90)
        except subprocess.TimeoutExpired as exc:
            watch.kill()
            raise BenchmarkError(f"signals watch showed {sum(c for _, c in arrivals)} of {calls} calls; "
                                 f"see {watch_log}") from exc
        reader.join(10)
        agent.stop()
    latencies_ms = []
    shown, line = 0, 0
    for index, call_s in enumerate(call_times_s):
        while shown <= index:
            if line >= len(arrivals):
                raise BenchmarkError(f"signals watch showed {shown} of {len(call_times_s)} calls; see {watch_log}")
            shown += arrivals[line][1]
            line += 1
        latencies_ms.append((arrivals[line - 1][0] - call_s) * 1000)
    # The first calls of a new binary also wait for its symbol tables (published on its first
    # call): the steady state is the calls made after the first two seconds.
    steady_ms = [ms for ms, t in zip(latencies_ms, call_times_s, strict=False) if t >= call_times_s[0] + 2.0] or latencies_ms
    return {"rate_per_s": rate_per_s, "calls": len(call_times_s), "lines": len(arrivals),
            "steady_p50_ms": percentile(steady_ms, 0.5), "steady_p99_ms": percentile(steady_ms, 0.99),
            "watermark_interval_ms": watermark_interval_ms, "watch_startup_s": startup_s,
            "p50_ms": percentile(latencies_ms, 0.5), "p99_ms": percentile(latencies_ms, 0.99),
            "max_ms": max(latencies_ms)}


def _paced(binary: Path, calls: int, rate_per_s: int) -> list[float]:
    """Run the target; the wall time (s) of each call."""
    process = subprocess.Popen([str(binary), "paced", str(calls), str(max(1, 1_000_000 // rate_per_s)), "4"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    times = []
    try:
        assert process.stdout is not None
        for text in process.stdout:
            if text.startswith("call "):
                times.append(int(text.split()[1]) / 1e9)
            elif text.startswith("done"):
                break
        # Keep the process alive while the agent reads its maps for the last calls.
        time.sleep(2.0)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(30)
    return times
