"""`python -m benchmarks`: run the suite, write results.json, results.md and the plot."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (
    fleet_bench,
    hot,
    latency,
    probe_agent,
    processor_bench,
    python_probe,
    report,
    unwind_cost,
    watch_latency,
    windows,
)
from .fleet import FleetSpec
from .kafka_io import dedicated_broker
from .procs import flags_offered
from .synthetic import Dataset

REPO = Path(__file__).resolve().parent.parent
STAGES = ("probe_agent", "unwind", "hot", "processor", "latency", "watch", "python_probe", "windows", "fleet")
log = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Plan:
    probe: probe_agent.ProbeAgentPlan
    hot: hot.HotPlan
    processor: processor_bench.ProcessorPlan
    latency_rates_per_s: list[int]
    latency_seconds_per_rate: float
    watch_rate_per_s: int = 100
    watch_seconds: float = 5.0
    python_probe: python_probe.PythonProbePlan = field(default_factory=python_probe.PythonProbePlan)
    # Window attribution: paced calls (count, one every interval µs) across window boundaries.
    windows_calls: int = 20_000
    windows_interval_us: int = 1000
    windows_window_ms: int = 5000
    unwind: unwind_cost.UnwindPlan = field(
        default_factory=lambda: unwind_cost.UnwindPlan(calls=2_000, repeats=1, rule_figures=False))
    fleet: fleet_bench.FleetPlan = field(default_factory=lambda: fleet_bench.FleetPlan(specs=()))


# Sizes for the 2-core VM the figures in docs/benchmarks.md come from: 5 to 8 minutes.
FULL = Plan(
    probe=probe_agent.ProbeAgentPlan(sizes=[5_000, 15_000, 45_000], repeats=3, leaf_calls=5_000),
    hot=hot.HotPlan(paths=16, run_s=3.0),
    processor=processor_bench.ProcessorPlan(
        throughput=[Dataset(20_000, 8, 16, 10), Dataset(60_000, 8, 16, 10), Dataset(180_000, 8, 16, 10)],
        containers=[Dataset(40_000, 1, 16, 10), Dataset(40_000, 10, 16, 10), Dataset(40_000, 100, 16, 10)],
        # 10,000 calls per window; distinct paths per window = containers x paths: 100 (then
        # 10x the events), 1,000, 10,000. Ascending, so a stage's peak is not an earlier one's.
        memory=[Dataset(20_000, 4, 25, 2), Dataset(200_000, 4, 25, 20), Dataset(20_000, 4, 250, 2),
                Dataset(20_000, 20, 500, 2)],
    ),
    latency_rates_per_s=[10, 100, 1000],
    latency_seconds_per_rate=4.0,
    unwind=unwind_cost.UnwindPlan(calls=200_000, repeats=3),
    # 8 containers with many calls each, 1,000 containers (500 nodes) on 12 partitions, and
    # 8 containers at the processor's default 60 s window (two windows: stacks recur).
    fleet=fleet_bench.FleetPlan(specs=(FleetSpec(nodes=4, containers_per_node=2, mean_calls_per_interval=2000),
                                       FleetSpec(),
                                       FleetSpec(nodes=4, containers_per_node=2, mean_calls_per_interval=100,
                                                 intervals=240, window_ms=60_000))),
)

# Every code path at toy sizes, for tests/test_benchmarks_smoke.py: figures mean nothing.
QUICK = Plan(
    probe=probe_agent.ProbeAgentPlan(sizes=[300, 600, 900], repeats=1, leaf_calls=200, drain_timeout_s=120),
    hot=hot.HotPlan(paths=4, run_s=0.5, extra_flags=("--budget-quiet-s=1",)),
    processor=processor_bench.ProcessorPlan(
        throughput=[Dataset(400, 4, 4, 2)], containers=[Dataset(200, 8, 2, 2)],
        memory=[Dataset(200, 2, 8, 2)],
    ),
    latency_rates_per_s=[50],
    latency_seconds_per_rate=1.0,
    watch_rate_per_s=50,
    watch_seconds=1.0,
    python_probe=python_probe.PythonProbePlan(calls=2_000, repeats=1),
    windows_calls=600,
    windows_interval_us=2000,
    windows_window_ms=1000,
    fleet=fleet_bench.FleetPlan(specs=(FleetSpec(nodes=20, containers_per_node=2, stacks_per_image=200,
                                                 intervals=4, partitions=4),), worker_counts=(1,)),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmarks of runtime-signals, each against a floor measured in the same run.",
        epilog="examples:\n  python -m benchmarks                  # the suite; figures in benchmarks/ and docs/\n"
               "  python -m benchmarks --only processor  # one stage\n"
               "  python -m benchmarks --quick --out /tmp/b   # toy sizes, for the smoke test\n"
               "Needs root (uprobes), a C compiler, java and mvn (the dedicated broker) or --bootstrap.")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that every stage runs")
    parser.add_argument("--only", action="append", choices=STAGES, help="run only this stage (repeatable)")
    parser.add_argument("--bootstrap", help="use this broker instead of starting a dedicated one")
    parser.add_argument("--out", type=Path,
                        help="directory for results.json, results.md and the plot (default: benchmarks/ "
                             "for the results, docs/benchmarks-scaling.png for the plot)")
    parser.add_argument("--work-dir", type=Path, help="keep binaries and logs here (default: a temp dir)")
    return parser


def _keep_last_good(results: dict[str, Any], results_path: Path, stages: list[str]) -> dict[str, Any]:
    """A stage that failed this time keeps the figures it had (marked with this run's
    error), so one broken stage does not erase the recorded results of the last good run."""
    try:
        previous = json.loads(results_path.read_text())
    except (OSError, ValueError):
        return results
    merged = dict(results)
    for stage in stages:
        if "error" in results.get(stage, {}) and stage in previous and "error" not in previous[stage]:
            merged[stage] = {**previous[stage], "stale": True, "last_error": results[stage]["error"]}
    return merged


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.out:
        results_path, table_path, plot_path = (args.out / "results.json", args.out / "results.md",
                                               args.out / "benchmarks-scaling.png")
    else:
        results_path, table_path = REPO / "benchmarks" / "results.json", REPO / "benchmarks" / "results.md"
        plot_path = REPO / "docs" / "benchmarks-scaling.png"
    plan = QUICK if args.quick else FULL
    stages = args.only or list(STAGES)
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as temp:
        work_dir = args.work_dir or Path(temp)
        results = run_suite(plan, stages, args.bootstrap, work_dir, quick=args.quick,
                            command=" ".join(["python -m benchmarks", *map(shlex.quote, argv or sys.argv[1:])]))
    results = _keep_last_good(results, results_path, stages)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    table_path.write_text(report.markdown(results))
    written = [results_path, table_path]
    try:
        report.plot(results, plot_path)
        written.append(plot_path)
    except ImportError:
        log.warning("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    print(report.markdown(results))
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 1 if any("error" in results[s] or results[s].get("stale") for s in stages) else 0


def run_suite(plan: Plan, stages: list[str], bootstrap: str | None, work_dir: Path, quick: bool,
              command: str) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"meta": machine(command, quick)}
    with dedicated_broker(bootstrap) as broker:
        offered = flags_offered("agent")
        results["meta"]["agent_flags_offered"] = sorted(offered)
        # The full probe: every call through the ring buffer, never detached.
        full_probe_flags: list[str] = [f for f in ("--no-dedup", "--no-budget") if f in offered]
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "probe_agent": lambda: probe_agent.run(broker, work_dir, plan.probe, full_probe_flags),
            "unwind": lambda: unwind_cost.run(broker, work_dir, plan.unwind),
            "hot": lambda: hot.run(broker, work_dir, plan.hot, offered),
            "processor": lambda: processor_bench.run(broker, work_dir, plan.processor,
                                                     flags_offered("processor")),
            "latency": lambda: latency.run(broker, work_dir, plan.latency_rates_per_s,
                                           plan.latency_seconds_per_rate),
            "watch": lambda: watch_latency.run(broker, work_dir, plan.watch_rate_per_s, plan.watch_seconds),
            "python_probe": lambda: python_probe.run(plan.python_probe),
            "windows": lambda: windows.run(broker, work_dir, plan.windows_calls, plan.windows_interval_us,
                                           plan.windows_window_ms),
            "fleet": lambda: fleet_bench.run(broker, work_dir, plan.fleet),
        }
        for stage in stages:
            log.info("stage %s ...", stage)
            stage_started = time.monotonic()
            try:
                results[stage] = runners[stage]()
            except Exception as exc:  # one broken stage must not cost the others their figures
                log.error("stage %s failed: %s", stage, exc)
                results[stage] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            results[stage]["stage_seconds"] = time.monotonic() - stage_started
            log.info("stage %s done in %.0fs", stage, results[stage]["stage_seconds"])
    results["meta"]["duration_s"] = time.monotonic() - started
    results["meta"]["load_average_end"] = os.getloadavg()
    return results


def machine(command: str, quick: bool) -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command, "quick": quick,
        "cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"), "tree_dirty": bool(_git("status", "--porcelain")),
        "load_average_start": os.getloadavg(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""
