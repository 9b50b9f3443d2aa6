"""Benchmark 1, second half: a hot function (>= 1M calls/s unprobed) under the agent's
overhead controls. Per mode (one `signals agent` each, its own copy of the target): the
workload's slowdown against the unprobed copy run just before, and whether every distinct
call path still reached the raw topic.

Completion is the agent's own promise: once every raw partition holds an AgentWatermark
past the end of the run, every call made before it is on the topic.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runtime_signals.schemas import codec

from . import native
from .kafka_io import OffsetWatch, Tail, pipeline_topics
from .procs import BenchmarkError, Child, epoch_micros, signals_argv

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
# The agent's overhead modes, by the flags that select them; a mode is skipped when the
# agent does not offer one of its flags.
MODES: dict[str, list[str]] = {
    "dedup+budget (defaults)": [],
    "dedup, no budget": ["--no-budget"],
    "no dedup, no budget": ["--no-dedup", "--no-budget"],
}


@dataclass(frozen=True)
class HotPlan:
    paths: int
    run_s: float               # length of the unprobed run; probed runs take longer
    unprobed_ns_per_call: float = 400.0  # 2.5M calls/s: "hot" with room for a noisy machine
    extra_flags: tuple[str, ...] = ()  # e.g. a shorter --budget-quiet-s for --quick


def run(bootstrap: str, work_dir: Path, plan: HotPlan, offered: set[str]) -> dict[str, Any]:
    binary = native.build_target(work_dir / "bin")
    unprobed = native.copy_for(binary, "hot-unprobed")
    noop_binary = native.copy_for(binary, "hot-noop")
    work = native.calibrate_work(unprobed, plan.unprobed_ns_per_call)
    baseline = native.run_timed(unprobed, 100_000, plan.paths, work)
    calls = max(plan.paths, int(plan.run_s * baseline.calls_per_s))
    noop = native.NoopProbe()
    rows = []
    try:
        noop.attach(noop_binary, native.SYMBOL)
        for mode, flags in MODES.items():
            if not set(flags) <= offered:
                rows.append({"mode": mode, "skipped": f"the agent does not offer {sorted(set(flags) - offered)}"})
                continue
            wanted = flags + [flag for flag in plan.extra_flags if flag.split("=")[0] in offered]
            copies = {"binary": binary, "unprobed": unprobed, "noop": noop_binary}
            rows.append(_run_mode(bootstrap, work_dir, copies, mode, wanted, calls, plan.paths, work))
    finally:
        noop.close()
    return {"paths": plan.paths, "work_iterations": work, "calls_per_run": calls, "rows": rows}


def _run_mode(bootstrap: str, work_dir: Path, copies: dict[str, Path], mode: str, flags: list[str],
              calls: int, paths: int, work: int) -> dict[str, Any]:
    binary, unprobed = copies["binary"], copies["unprobed"]
    slug = re.sub(r"[^a-z]+", "-", mode).strip("-")
    probed = native.copy_for(binary, f"hot-{slug}")
    prefix = f"bench-hot-{uuid.uuid4().hex[:8]}."
    names = pipeline_topics(bootstrap, prefix, partitions=3)
    argv = signals_argv("agent", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                        "--probe", f"{probed}:{native.SYMBOL}", *flags)
    with Child(f"agent-hot-{slug}", argv, work_dir / "logs") as agent:
        agent.wait_for("agent ready", 180)
        tail = Tail(bootstrap, names.raw)
        try:
            before = native.run_timed(unprobed, calls, paths, work)
            noop_ns = native.run_timed(copies["noop"], calls, paths, work).ns_per_call
            started_wall_s = time.time()
            with native.RunningTarget(native.timed_argv(probed, calls, paths, work)) as target:
                ended_us = time.time_ns() // 1000
                _wait_for_watermarks(tail, bootstrap, names.raw, ended_us, timeout_s=300)
            after = native.run_timed(unprobed, calls, paths, work)
            # Once the budget has detached the probe, the workload runs at full speed until
            # the probe is re-armed (60 s later by default): a second run shows that state.
            again = None
            if "budget: detached" in agent.log():
                again = native.run_timed(probed, calls, paths, work).ns_per_call
            reported = _reported_paths(tail)
        finally:
            tail.close()
        agent.stop()
        log = agent.log()
    unprobed_ns = (before.ns_per_call + after.ns_per_call) / 2
    detached_at = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*budget: detached", log, re.MULTILINE)
    attached_s = None
    if detached_at:  # the agent logs in local time, like time.time() read through localtime
        stamp = datetime.strptime(detached_at.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        attached_s = stamp - started_wall_s
    return {
        "mode": mode, "flags": flags, "calls": calls, "paths": paths,
        "unprobed_ns_per_call": unprobed_ns, "unprobed_calls_per_s": 1e9 / unprobed_ns,
        "probed_ns_per_call": target.timed.ns_per_call,
        "slowdown_percent": (target.timed.ns_per_call - unprobed_ns) / unprobed_ns * 100,
        "noop_ns_per_call": noop_ns,
        "noop_slowdown_percent": (noop_ns - unprobed_ns) / unprobed_ns * 100,
        "paths_reported": reported["paths"], "all_paths_reported": reported["paths"] == paths,
        "calls_reported": reported["calls"], "records": reported["records"],
        "budget_detached": detached_at is not None, "attached_s_before_detach": attached_s,
        "probed_run_s": target.timed.ns_per_call * calls / 1e9,
        "second_run_slowdown_percent": None if again is None else (again - unprobed_ns) / unprobed_ns * 100,
    }


def _wait_for_watermarks(tail: Tail, bootstrap: str, topic: str, after_us: int, timeout_s: float) -> None:
    watch = OffsetWatch(bootstrap)
    try:
        partitions = set(watch.ends(topic))
    finally:
        watch.close()
    registry = codec.SchemaRegistry.default()
    fingerprint = bytes.fromhex(codec.fingerprint_hex(WATERMARK))
    passed: set[int] = set()
    seen = 0
    deadline = time.monotonic() + timeout_s
    while passed != partitions:
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{topic}: no watermark past the run's end on partitions "
                                 f"{sorted(partitions - passed)} within {timeout_s:.0f}s")
        tail.check()
        time.sleep(0.05)
        for arrival in tail.arrivals[seen:]:
            if arrival.value[2:10] == fingerprint:
                record = codec.decode(arrival.value, registry, WATERMARK).record
                if epoch_micros(record["watermark_us"]) >= after_us:
                    passed.add(arrival.partition)
        seen = len(tail.arrivals)


def _reported_paths(tail: Tail) -> dict[str, int]:
    """Distinct call stacks, calls and records of the call events seen on the raw topic."""
    registry = codec.SchemaRegistry.default()
    fingerprint = bytes.fromhex(codec.fingerprint_hex(CALL_EVENT))
    stacks: set[tuple[Any, ...]] = set()
    calls = records = 0
    for arrival in tail.arrivals:
        if arrival.value[2:10] != fingerprint:
            continue
        event = codec.decode(arrival.value, registry, CALL_EVENT).record
        stacks.add(tuple((f["binary_digest"], f["binary_offset"]) for f in event["stack_frames"]))
        calls += event["observation_count"]
        records += 1
    return {"paths": len(stacks), "calls": calls, "records": records}

