"""Benchmark: processor workers on a fleet recording (benchmarks/fleet.py), 1, 2, 4 workers.

Per worker count: fresh topics with the recording's partition count; the symbol tables and
module maps are replayed first (a worker reads them to their end before it joins), the
workers start and take their partitions, then the raw recording is replayed as fast as the
broker takes it. A run's time is from the start of that replay to the arrival of the last
summary; the summaries must count every call of the recording. CPU seconds are the
workers' (utime + stime of every thread), per million raw records: machine-independent
where events/s on a shared 2-core machine is not.

Floor, over the same offsets: as many consume-and-decode processes as workers, each on its
share of the partitions (benchmarks/floors.py), started after the workers have finished.
Beside it, one process reading all of them through faust's own per-record path, decoding
and doing nothing else (floors.faust_consume_floor): what that path alone costs per record,
which the worker avoids by taking its records from faust's fetch loop.

    python -m benchmarks.fleet_bench --bootstrap 127.0.0.1:19092 --recording DIR --workers 1,2,4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from runtime_signals.schemas import codec

from .fleet import FleetSpec, load_manifest, record, replay_into
from .floors import finish_floor_process, range_args, start_floor_process
from .kafka_io import OffsetWatch, Tail, pipeline_topics
from .procs import BenchmarkError, Child, cpu_seconds, memory_bytes, signals_argv

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"


def run_workers(bootstrap: str, recording: Path, workers: int, log_dir: Path,
                extra_flags: list[str] | None = None) -> dict[str, Any]:
    manifest = load_manifest(recording)
    spec, expected = manifest["spec"], manifest["expected"]
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-fleet{workers}-{tag}."
    names = pipeline_topics(bootstrap, prefix, spec["partitions"])
    for kind in ("symbols", "modules"):
        _replay_one(bootstrap, recording, names, kind)
    argv = signals_argv("processor", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                        "--window-ms", str(spec["window_ms"]), "--allowed-lateness-ms", "0",
                        "--app-id", f"{prefix}app", "--loglevel", "info", *(extra_flags or []))
    watch = OffsetWatch(bootstrap)
    with contextlib.ExitStack() as stack:
        children = [stack.enter_context(Child(f"fleet-{workers}w-{tag}-{i}", argv, log_dir))
                    for i in range(workers)]
        for child in children:
            child.wait_for("processor ready", 180)
            child.wait_for("assigned ", 180)
        start = watch.ends(names.raw)
        cpu_before_s = sum(cpu_seconds(c.pid) for c in children)
        tail = Tail(bootstrap, names.summaries)
        try:
            began_s = time.monotonic()
            produced = _replay_one(bootstrap, recording, names, "raw")
            produced_s = time.monotonic() - began_s
            arrivals = tail.wait_for(expected["summaries"], 600 + produced / 200)
            if expected["summaries"]:
                done_s = max(a.at_monotonic_s for a in arrivals)
            else:  # watermarks alone: done when the workers' checkpoints reach the end
                done_s = _wait_committed(bootstrap, f"{prefix}app", names.raw, watch.ends(names.raw), 600)
            time.sleep(0.5)  # anything beyond the expected count would be a defect: look for it
            arrivals = list(tail.arrivals)
        finally:
            tail.close()
        seconds = done_s - began_s
        cpu_s = sum(cpu_seconds(c.pid) for c in children) - cpu_before_s
        peak_rss = max(memory_bytes(c.pid)["peak_rss_bytes"] for c in children)
        for child in children:
            if child.stop() != 0:
                raise BenchmarkError(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
    end = watch.ends(names.raw)
    watch.close()
    registry = codec.SchemaRegistry.default()
    calls = sum(codec.decode(a.value, registry, SUMMARY).record["total_events"] for a in arrivals)
    if len(arrivals) != expected["summaries"] or calls != expected["calls"]:
        raise BenchmarkError(f"{names.summaries}: {len(arrivals)} summaries counting {calls} calls; the recording "
                             f"expects {expected['summaries']} counting {expected['calls']}")
    floor = _floor(bootstrap, names.raw, start, end, workers)
    faust_floor = finish_floor_process(start_floor_process(["consume-faust", "--bootstrap", bootstrap,
                                                            "--topic", names.raw, *range_args(start, end)]))
    records = sum(end[p] - start[p] for p in end)
    return {
        "workers": workers, "partitions": spec["partitions"], "containers": spec["nodes"] * spec["containers_per_node"],
        "nodes": spec["nodes"], "records": records, "calls": calls, "summaries": len(arrivals),
        "seconds": seconds, "replay_seconds": produced_s, "records_per_s": records / seconds,
        "worker_cpu_s_per_million": cpu_s / records * 1e6, "peak_rss_bytes": peak_rss,
        "floor_records_per_s": records / floor["seconds"],
        "floor_cpu_s_per_million": floor["cpu_s"] / records * 1e6,
        "worker_vs_floor": floor["seconds"] / seconds,
        "cpu_floor_vs_worker": floor["cpu_s"] / cpu_s,
        "faust_floor_cpu_s_per_million": faust_floor["cpu_s"] / records * 1e6,
        "cpu_floor_vs_faust_floor": floor["cpu_s"] / faust_floor["cpu_s"],
        "load_average": os.getloadavg(),
    }


def _wait_committed(bootstrap: str, group: str, topic: str, end: dict[int, int], timeout_s: float) -> float:
    """Wait until the group's committed offsets reach end; returns the monotonic time they did
    (within the checkpoint interval: the workers commit after each checkpoint)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            committed = consumer.committed([TopicPartition(topic, p) for p in end], timeout=10)
            if all(tp.offset >= end[tp.partition] for tp in committed):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"group {group}: committed {[(tp.partition, tp.offset) for tp in committed]}, "
                                     f"not the end {end} of {topic} within {timeout_s:.0f}s")
            time.sleep(0.05)
    finally:
        consumer.close()


def _replay_one(bootstrap: str, recording: Path, names: Any, kind: str) -> int:
    return replay_into(bootstrap, recording, names, kinds=(kind,))[kind]


def _floor(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int], workers: int) -> dict[str, float]:
    shares = [sorted(end)[i::workers] for i in range(workers)]
    processes = [start_floor_process(["consume", "--bootstrap", bootstrap, "--topic", topic,
                                      *range_args({p: start[p] for p in share}, {p: end[p] for p in share})])
                 for share in shares if share]
    results = [finish_floor_process(p) for p in processes]
    return {"seconds": max(r["seconds"] for r in results), "cpu_s": sum(r["cpu_s"] for r in results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--recording", type=Path, required=True)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--out", type=Path, help="append each row as a JSON line here")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/rs-fleet-bench-logs"))
    args = parser.parse_args(argv)
    for workers in (int(w) for w in args.workers.split(",")):
        row = run_workers(args.bootstrap, args.recording, workers, args.log_dir)
        row["recording"] = str(args.recording)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())


@dataclass(frozen=True)
class FleetPlan:
    """The `fleet` stage of `python -m benchmarks`: record each spec once, then run it with
    every worker count. A recording given by path (--fleet-recording) is replayed as is."""

    specs: tuple[FleetSpec, ...]
    worker_counts: tuple[int, ...] = (1, 2, 4)


def run(bootstrap: str, work_dir: Path, plan: FleetPlan) -> dict[str, Any]:
    rows = []
    for index, spec in enumerate(plan.specs):
        recording = work_dir / f"fleet-{index}"
        manifest = record(bootstrap, recording, spec)
        for workers in plan.worker_counts:
            row = run_workers(bootstrap, recording, workers, work_dir / "logs")
            row["raw_sha256"] = manifest["captures"]["raw"]["records_sha256"]
            rows.append(row)
    return {"rows": rows}


def markdown(section: dict[str, Any]) -> list[str]:
    lines = ["## Fleet: processor workers on a simulated fleet (floor: consume + decode, as many processes "
             "as workers)", "",
             "| nodes | containers | partitions | workers | raw records | events/s | floor events/s | ratio | "
             "worker CPU s per M | floor CPU s per M | CPU ratio | faust + decode alone, CPU s per M | load |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['nodes']:,} | {r['containers']:,} | {r['partitions']} | {r['workers']} | "
                     f"{r['records']:,} | {r['records_per_s']:,.0f} | {r['floor_records_per_s']:,.0f} | "
                     f"{r['worker_vs_floor']:.2f} | {r['worker_cpu_s_per_million']:,.0f} | "
                     f"{r['floor_cpu_s_per_million']:,.0f} | {r['cpu_floor_vs_worker']:.2f} | "
                     f"{r.get('faust_floor_cpu_s_per_million', float('nan')):,.0f} | {r['load_average'][0]:.0f} |" for r in section.get("rows", [])]
    return [*lines, ""]
