"""Benchmark: what a probed call costs with its stack walked, by frame pointers and by CFI
rules, against bcc's `stackcount -U` (the peer that also aggregates stacks in the kernel)
and the counting no-op uprobe, on the same target in the same run.

The target (targets/deep.c) calls bench_target through twelve functions; it is built twice:
- "frame pointers": -O1 -fno-omit-frame-pointer, no CFI at all, so the walker follows the
  frame pointers (libc's frames below main by their rules);
- "cfi": -O2 -fomit-frame-pointer, which only the rules can walk.
Each build is copied per role (a uprobe belongs to a file): unprobed, no-op uprobe, the
agent (`signals agent --no-budget`, dedup on as deployed) and stackcount. For each build
the four run in turn, repeatedly; the medians give
    cost ratio vs floor      = (probed - unprobed) / (noop - unprobed)
    cost ratio vs stackcount = (agent - unprobed) / (stackcount - unprobed)
The target sleeps after one warm-up call so the agent has met the process and written its
mapping table before the timed loop (docs/unwinding.md: a process's first calls are walked
by frame pointers). The reported paths are read back to show how deep each walk went.

Also: the time to build the rules, and their map bytes, for Debian's libcrypto, libpython
and a Go binary (agent/unwind.py build_rules, as the agent's child interpreter runs it).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_signals.agent.unwind import build_rules
from runtime_signals.schemas import codec

from . import native
from .floors import CALL_EVENT
from .kafka_io import OffsetWatch, pipeline_topics, read_range
from .procs import BenchmarkError, Child, median, signals_argv

HERE = Path(__file__).resolve().parent
DEEP_SOURCE = HERE / "targets" / "deep.c"
SYMBOL = "bench_target"
STACKCOUNT = "/usr/sbin/stackcount-bpfcc"
PAUSE_MS = 1500  # after the warm-up call: a few of the agent's collection ticks
BUILDS = {
    "frame pointers": ["-O1", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
    "cfi": ["-O2", "-fomit-frame-pointer"],
}
RULE_BINARIES = {
    "libcrypto": "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    "libpython": "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
}
GO_MAIN = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("rules") }\n'


@dataclass(frozen=True)
class UnwindPlan:
    calls: int
    repeats: int
    rule_figures: bool = True  # build libcrypto's and libpython's rules (a minute on the VM)


def _build(out_dir: Path, name: str, flags: list[str]) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchmarkError("no C compiler (cc or gcc) on PATH to build benchmarks/targets/deep.c")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / f"deep-{name.replace(' ', '-')}"
    subprocess.run([compiler, *flags, "-o", str(binary), str(DEEP_SOURCE)], check=True)
    return binary


def _timed(binary: Path, calls: int) -> float:
    with native.RunningTarget([str(binary), str(calls), str(PAUSE_MS)]) as target:
        return target.timed.ns_per_call


def _ratio(probed_ns: float, floor_ns: float, unprobed_ns: float) -> float | None:
    return (probed_ns - unprobed_ns) / (floor_ns - unprobed_ns) if floor_ns > unprobed_ns else None


def run(bootstrap: str, work_dir: Path, plan: UnwindPlan) -> dict[str, Any]:
    if not Path(STACKCOUNT).exists():
        raise BenchmarkError(f"{STACKCOUNT} is missing: install Debian's bpfcc-tools (scripts/bootstrap.sh)")
    prefix = f"bench-unwind-{uuid.uuid4().hex[:8]}."
    names = pipeline_topics(bootstrap, prefix, partitions=1)
    roles: dict[str, dict[str, Path]] = {}
    for build, flags in BUILDS.items():
        binary = _build(work_dir / "bin", build, flags)
        roles[build] = {role: native.copy_for(binary, role) for role in ("unprobed", "noop", "agent", "stackcount")}
    agent_argv = signals_argv("agent", "--bootstrap", bootstrap, "--topic-prefix", prefix, "--no-budget",
                              "--watermark-interval-ms", "200",
                              *[a for r in roles.values() for a in ("--probe", f"{r['agent']}:{SYMBOL}")])
    noop = native.NoopProbe()
    rows: list[dict[str, Any]] = []
    try:
        for r in roles.values():
            noop.attach(r["noop"], SYMBOL)
        with Child("agent-unwind", agent_argv, work_dir / "logs") as agent:
            agent.wait_for("agent ready", 180)
            # Warm-up, not counted: the agent builds the rules of each binary once (libc's
            # take seconds), then every later process finds them loaded.
            for r in roles.values():
                _timed(r["agent"], 1000)
            for loaded in (f"rules of {roles['cfi']['agent']} [", "rules of /usr/lib/x86_64-linux-gnu/libc.so.6 [",
                           "ld-linux-x86-64.so.2 ["):
                agent.wait_for(loaded, 300)
            for build, r in roles.items():
                rows.append(_measure(build, r, plan, work_dir))
            if agent.stop() != 0:
                raise BenchmarkError(f"the agent exited with {agent.process.returncode}; see {agent.log_path}")
            agent_log = agent.log()
    finally:
        noop.close()
    depth = _reported_depth(bootstrap, names.raw, {build: r["agent"] for build, r in roles.items()})
    for row in rows:
        row.update(depth.get(row["build"], {}))
    return {"rows": rows, "rules": _rule_figures(work_dir) if plan.rule_figures else [],
            "calls": plan.calls, "repeats": plan.repeats,
            "rules_loaded_lines": [line.split("unwind: ", 1)[1] for line in agent_log.splitlines()
                                   if "unwind: rules of" in line]}


def _measure(build: str, roles: dict[str, Path], plan: UnwindPlan, work_dir: Path) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"unprobed": [], "noop": [], "agent": [], "stackcount": []}
    for repeat in range(plan.repeats):
        samples["unprobed"].append(_timed(roles["unprobed"], plan.calls))
        samples["noop"].append(_timed(roles["noop"], plan.calls))
        samples["agent"].append(_timed(roles["agent"], plan.calls))
        argv = [STACKCOUNT, "-U", f"{roles['stackcount']}:{SYMBOL}"]
        with Child(f"stackcount-{build.replace(' ', '-')}-{repeat}", argv, work_dir / "logs") as stackcount:
            stackcount.wait_for("Tracing", 120)
            samples["stackcount"].append(_timed(roles["stackcount"], plan.calls))
    unprobed, noop_ns, agent_ns, stackcount_ns = (median(samples[k]) for k in
                                                 ("unprobed", "noop", "agent", "stackcount"))
    return {
        "build": build, "calls": plan.calls,
        "unprobed_ns_per_call": unprobed, "noop_ns_per_call": noop_ns, "agent_ns_per_call": agent_ns,
        "stackcount_ns_per_call": stackcount_ns,
        "agent_vs_floor": _ratio(agent_ns, noop_ns, unprobed),
        "stackcount_vs_floor": _ratio(stackcount_ns, noop_ns, unprobed),
        "agent_vs_stackcount": _ratio(agent_ns, stackcount_ns, unprobed),
        "runs_ns_per_call": samples,
    }


def _reported_depth(bootstrap: str, topic: str, binaries: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Frames and end of the paths the agent reported for each build's timed loop."""
    fingerprint = bytes.fromhex(codec.fingerprint_hex(CALL_EVENT))
    registry = codec.SchemaRegistry.default()
    by_build: dict[str, Counter[tuple[int, str]]] = {build: Counter() for build in binaries}
    owner = {str(path): build for build, path in binaries.items()}

    def take(batch: list[tuple[int, bytes | None, bytes]]) -> None:
        for _partition, _key, value in batch:
            if value[2:10] != fingerprint:
                continue
            event = codec.decode(value, registry).record
            build = owner.get(event["library"] or "")
            if build is not None:
                end = event.get("truncation_reason") or "complete"
                by_build[build][(len(event["stack_frames"]), end)] += event["observation_count"]

    watch = OffsetWatch(bootstrap)
    try:
        end_offsets = watch.ends(topic)
    finally:
        watch.close()
    read_range(bootstrap, topic, {}, end_offsets, take)
    return {build: {"reported_frames_and_end": {f"{frames} frames, {end}": calls
                                                for (frames, end), calls in sorted(paths.items())}}
            for build, paths in by_build.items()}


def _rule_figures(work_dir: Path) -> list[dict[str, Any]]:
    binaries = dict(RULE_BINARIES)
    go = shutil.which("go")
    if go is not None:
        source = work_dir / "gorules" / "main.go"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(GO_MAIN)
        binary = source.parent / "gorules"
        done = subprocess.run([go, "build", "-o", str(binary), str(source)], cwd=source.parent,
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            binaries["go (hello world)"] = str(binary)
    figures = []
    for name, path in binaries.items():
        if not Path(path).exists():
            figures.append({"binary": name, "path": path, "error": "not installed"})
            continue
        rules = build_rules(path)
        figures.append({"binary": name, "path": path, "file_bytes": Path(path).stat().st_size,
                        "fdes": rules.fde_count, "rows": rules.row_count, "row_bytes": rules.row_bytes,
                        "unsupported_rows": rules.unsupported_rows, "build_s": rules.build_ns / 1e9,
                        "sources": list(rules.sources), "error": rules.error})
    return figures
