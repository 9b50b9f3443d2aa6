"""Benchmarks 1 and 2: what a probed call costs, and how fast one agent ships calls.

One `signals agent` (the real BPF program, publishing to the broker) probes the "agent" copy
of the target; the benchmark's own counting uprobe probes the "noop" copy; the "unprobed"
copy has none. For each size the three run in turn, repeatedly, and the medians are kept:
    probe cost ratio = (full - unprobed) / (noop - unprobed)   per call
The agent's ring buffer is sized to hold a whole run, so every call takes the full path
(stack walk, reserve, submit) and none is dropped; the agent drains while the target runs
and after. Agent throughput = calls / (target start -> last call on the raw topic), against
a floor process that only encodes and produces the same records. Agent throughput is also
measured with the calls spread round-robin over `distinct_paths` call paths (as many distinct
stacks), against a floor fed those runs' own records.
"""

from __future__ import annotations

import ast
import collections
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_signals.schemas import codec

from . import native
from .floors import CALL_EVENT, run_floor_process
from .kafka_io import OffsetWatch, pipeline_topics, read_range
from .procs import BenchmarkError, Child, cpu_seconds, median, signals_argv

RECORD_BYTES = 4096 // 7  # a 64-frame call_event with its ring-buffer header, rounded up
FLOOR_SAMPLES = 2000


@dataclass(frozen=True)
class ProbeAgentPlan:
    sizes: list[int]       # calls per run
    repeats: int
    leaf_calls: int        # single-step case, one size
    drain_timeout_s: float = 300.0
    # Agent throughput again with every call's stack one of this many (benchmarks/targets/hot.c
    # has up to 1000 call paths); 0 or 1 skips it.
    distinct_paths: int = 1000


def ringbuf_pages_for(calls: int) -> int:
    """A power of two of pages that holds `calls` records."""
    pages = 1
    while pages * 4096 < calls * RECORD_BYTES * 2:
        pages *= 2
    return pages


def kernel_counters(agent_log: str) -> dict[str, int] | None:
    """The agent's last "kernel counters {...}" line, if it printed one."""
    marker = "kernel counters "
    position = agent_log.rfind(marker)
    if position < 0:
        return None
    text = agent_log[position + len(marker):].splitlines()[0]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else None


class _Stage:
    def __init__(self, bootstrap: str, work_dir: Path, plan: ProbeAgentPlan, agent_flags: list[str]) -> None:
        self.bootstrap = bootstrap
        self.work_dir = work_dir
        self.plan = plan
        binary = native.build_target(work_dir / "bin")
        self.unprobed = native.copy_for(binary, "unprobed")
        self.noop_binary = native.copy_for(binary, "noop")
        self.agent_binary = native.copy_for(binary, "agent")
        prefix = f"bench-agent-{uuid.uuid4().hex[:8]}."
        self.names = pipeline_topics(bootstrap, prefix, partitions=3)
        self.floor_topic = pipeline_topics(bootstrap, prefix + "floor.", partitions=3).raw
        self.watch = OffsetWatch(bootstrap)
        self.calls_sent = 0
        pages = ringbuf_pages_for(max([*plan.sizes, plan.leaf_calls]))
        self.agent_argv = signals_argv(
            "agent", "--bootstrap", bootstrap, "--topic-prefix", prefix,
            "--probe", f"{self.agent_binary}:{native.SYMBOL}",
            "--probe", f"{self.agent_binary}:{native.LEAF_SYMBOL}",
            "--ringbuf-pages", str(pages),
            # Few watermarks: the raw topic's end offset then counts (almost only) calls.
            "--watermark-interval-ms", "5000", *agent_flags)

    def probed_run(self, agent: Child, calls: int, leaf: bool = False, paths: int = 1) -> tuple[float, float, float]:
        """One run of the agent's copy: (ns per call, seconds until the raw topic holds every
        call, agent CPU seconds meanwhile)."""
        before = self.watch.total(self.names.raw)
        cpu_before_s = cpu_seconds(agent.pid)
        argv = native.timed_argv(self.agent_binary, calls, paths=paths, leaf=leaf)
        with native.RunningTarget(argv) as target:
            done_s = self.watch.wait_total(self.names.raw, before + calls, self.plan.drain_timeout_s)
            cpu_s = cpu_seconds(agent.pid) - cpu_before_s
        self.calls_sent += calls
        return target.timed.ns_per_call, done_s - target.started_monotonic_s, cpu_s


def run(bootstrap: str, work_dir: Path, plan: ProbeAgentPlan, agent_flags: list[str]) -> dict[str, Any]:
    stage = _Stage(bootstrap, work_dir, plan, agent_flags)
    noop = native.NoopProbe()
    rows: list[dict[str, Any]] = []
    try:
        noop.attach(stage.noop_binary, native.SYMBOL)
        noop.attach(stage.noop_binary, native.LEAF_SYMBOL)
        with Child("agent-probe", stage.agent_argv, work_dir / "logs") as agent:
            agent.wait_for("agent ready", 180)
            # Warm-up, not counted: the agent's first call of a process reads its maps and
            # hashes and publishes its binaries' symbol tables.
            stage.probed_run(agent, min(plan.sizes))
            for calls in plan.sizes:
                rows.append(_measure_size(stage, agent, noop, calls))
            leaf = _measure_leaf(stage, agent, noop)
            # Last: the floor of these rows is fed the last records on the topic, theirs.
            if plan.distinct_paths > 1:
                rows += [_measure_distinct(stage, agent, calls, plan.distinct_paths) for calls in plan.sizes]
            agent_cpu_s_total = cpu_seconds(agent.pid)
            if agent.stop() != 0:
                raise BenchmarkError(f"the agent exited with {agent.process.returncode}; see {agent.log_path}")
            counters = kernel_counters(agent.log())
    finally:
        noop.close()
        stage.watch.close()
    checked = _check_and_sample(stage)
    for row in rows:
        samples = checked["distinct_samples_path" if row["paths"] > 1 else "samples_path"]
        floor = run_floor_process(["produce", "--bootstrap", bootstrap, "--topic", stage.floor_topic,
                                   "--samples", str(samples), "--count", str(row["calls"])])
        row["floor_events_per_s"] = row["calls"] / floor["seconds"]
        row["floor_cpu_s_per_million"] = floor["cpu_s"] / row["calls"] * 1e6
        row["agent_vs_floor"] = row["agent_events_per_s"] / row["floor_events_per_s"]
    return {
        "rows": rows, "leaf": leaf, "kernel_counters": counters,
        "calls_sent": stage.calls_sent, "call_events_on_topic": checked["call_events"],
        "agent_cpu_s_total": agent_cpu_s_total, "agent_flags": agent_flags,
    }


def _ratio(full_ns: float, noop_ns: float, unprobed_ns: float) -> float | None:
    floor_ns = noop_ns - unprobed_ns
    return (full_ns - unprobed_ns) / floor_ns if floor_ns > 0 else None


def _measure_size(stage: _Stage, agent: Child, noop: native.NoopProbe, calls: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"unprobed": [], "noop": [], "full": [], "drain_s": [], "cpu_s": []}
    for _ in range(stage.plan.repeats):
        samples["unprobed"].append(native.run_timed(stage.unprobed, calls).ns_per_call)
        samples["noop"].append(native.run_timed(stage.noop_binary, calls).ns_per_call)
        full_ns, drain_s, cpu_s = stage.probed_run(agent, calls)
        samples["full"].append(full_ns)
        samples["drain_s"].append(drain_s)
        samples["cpu_s"].append(cpu_s)
    unprobed, noop_ns, full = (median(samples[k]) for k in ("unprobed", "noop", "full"))
    drain_s, cpu_s = median(samples["drain_s"]), median(samples["cpu_s"])
    return {
        "calls": calls, "paths": 1, "repeats": stage.plan.repeats,
        "unprobed_ns_per_call": unprobed, "noop_ns_per_call": noop_ns, "full_ns_per_call": full,
        "cost_ratio": _ratio(full, noop_ns, unprobed),
        "full_ns_per_call_runs": samples["full"], "noop_ns_per_call_runs": samples["noop"],
        "agent_seconds": drain_s, "agent_events_per_s": calls / drain_s,
        "agent_cpu_s_per_million": cpu_s / calls * 1e6,
    }


def _measure_distinct(stage: _Stage, agent: Child, calls: int, paths: int) -> dict[str, Any]:
    """Agent throughput alone (the probe's cost is section 1's) with calls over `paths` stacks."""
    drains: list[float] = []
    cpus: list[float] = []
    for _ in range(stage.plan.repeats):
        _ns, drain_s, cpu_s = stage.probed_run(agent, calls, paths=paths)
        drains.append(drain_s)
        cpus.append(cpu_s)
    drain_s, cpu_s = median(drains), median(cpus)
    return {"calls": calls, "paths": paths, "repeats": stage.plan.repeats, "agent_seconds": drain_s,
            "agent_events_per_s": calls / drain_s, "agent_cpu_s_per_million": cpu_s / calls * 1e6}


def _measure_leaf(stage: _Stage, agent: Child, noop: native.NoopProbe) -> dict[str, Any]:
    calls = stage.plan.leaf_calls
    samples: dict[str, list[float]] = {"unprobed": [], "noop": [], "full": []}
    for _ in range(stage.plan.repeats):
        samples["unprobed"].append(native.run_timed(stage.unprobed, calls, leaf=True).ns_per_call)
        samples["noop"].append(native.run_timed(stage.noop_binary, calls, leaf=True).ns_per_call)
        samples["full"].append(stage.probed_run(agent, calls, leaf=True)[0])
    unprobed, noop_ns, full = (median(samples[k]) for k in ("unprobed", "noop", "full"))
    return {"calls": calls, "unprobed_ns_per_call": unprobed, "noop_ns_per_call": noop_ns,
            "full_ns_per_call": full, "cost_ratio": _ratio(full, noop_ns, unprobed),
            "full_ns_per_call_runs": samples["full"], "noop_ns_per_call_runs": samples["noop"]}


def _check_and_sample(stage: _Stage) -> dict[str, Any]:
    """Count the call events on the raw topic (every call must be there) and keep some of
    them as the floor's input."""
    fingerprint = bytes.fromhex(codec.fingerprint_hex(CALL_EVENT))
    samples: list[bytes] = []
    last: collections.deque[bytes] = collections.deque(maxlen=FLOOR_SAMPLES)  # the distinct-paths runs'
    counted = [0]

    def count(batch: list[tuple[int, bytes | None, bytes]]) -> None:
        for _partition, _key, value in batch:
            if value[2:10] == fingerprint:
                counted[0] += 1
                last.append(value)
                if len(samples) < FLOOR_SAMPLES:
                    samples.append(value)

    watch = OffsetWatch(stage.bootstrap)
    try:
        end = watch.ends(stage.names.raw)
    finally:
        watch.close()
    read_range(stage.bootstrap, stage.names.raw, {}, end, count)
    if not samples:
        raise BenchmarkError(f"no call event on {stage.names.raw}: the agent published nothing")
    samples_path = stage.work_dir / "floor-samples.pickle"
    samples_path.write_bytes(pickle.dumps(samples))
    distinct_path = stage.work_dir / "floor-samples-distinct.pickle"
    distinct_path.write_bytes(pickle.dumps(list(last)))
    return {"call_events": counted[0], "samples_path": samples_path, "distinct_samples_path": distinct_path}
