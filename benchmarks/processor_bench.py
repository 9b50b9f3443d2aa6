"""Benchmark 3: processor throughput and memory.

A group of `signals processor` workers (1, then 2) reads a raw topic that the benchmark
fills with synthetic records (benchmarks/synthetic.py), stage after stage. A stage's time
runs from the first record produced to the arrival of its last window's summary; the
records are encoded beforehand, so producing them takes a fraction of that time.

Floors, over the same offsets: as many plain confluent-kafka consumers as workers, that
only consume and decode (benchmarks/floors.py); and, for one worker, processor.engine.Engine
fed in-process (decode, window, aggregate, encode the outputs; no Kafka).

Memory: each worker's peak RSS during the stage (VmHWM, reset before it). Throughput stages
produce as fast as they can, so the worker's consumer holds a backlog: their peak includes
it. Memory stages hold the state apart from the backlog: they produce one window at a time
(10,000 calls) and wait for its summaries, so the peak is the state of the paths a window
holds, plus one window of records.

The workers run with --symbol-wait-ms 0 when they offer it: the synthetic topic carries
symbol tables but no module maps, and a window must not wait for what will never come.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime_signals.schemas import codec

from .floors import finish_floor_process, range_args, start_floor_process
from .kafka_io import Offsets, OffsetWatch, Tail, fast_producer, pipeline_topics, produce_all
from .procs import BenchmarkError, Child, cpu_seconds, memory_bytes, reset_peak_rss, signals_argv
from .synthetic import Dataset, RawTopicWriter, symbol_tables

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class ProcessorPlan:
    throughput: list[Dataset]                                  # with every worker count
    containers: list[Dataset] = field(default_factory=list)   # one worker
    memory: list[Dataset] = field(default_factory=list)       # one worker, in growing order
    worker_counts: tuple[int, ...] = (1, 2)
    window_ms: int = 1000
    partitions: int = 4


def run(bootstrap: str, work_dir: Path, plan: ProcessorPlan, offered: set[str]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    flags = ["--symbol-wait-ms", "0"] if "--symbol-wait-ms" in offered else []
    groups: list[tuple[int, list[tuple[str, Dataset]]]] = []
    for workers in plan.worker_counts:
        stages = [("throughput", d) for d in plan.throughput]
        if workers == 1:
            stages += [("containers", d) for d in plan.containers]
        groups.append((workers, stages))
    if plan.memory:
        # A fresh worker: memory an earlier backlog made the allocator keep would hide the paths' own.
        groups.append((1, [("memory", d) for d in plan.memory]))
    for workers, stages in groups:
        rows += _Group(bootstrap, work_dir, plan, workers, flags).run(stages)
    return {"rows": rows, "window_ms": plan.window_ms, "partitions": plan.partitions, "worker_flags": flags}


class _Group:
    """One consumer group of workers on its own topics."""

    def __init__(self, bootstrap: str, work_dir: Path, plan: ProcessorPlan, workers: int,
                 flags: list[str]) -> None:
        self.bootstrap, self.work_dir, self.plan, self.workers = bootstrap, work_dir, plan, workers
        self.tag = uuid.uuid4().hex[:8]
        prefix = f"bench-proc{workers}-{self.tag}."
        self.names = pipeline_topics(bootstrap, prefix, plan.partitions)
        self.writer = RawTopicWriter(plan.partitions, plan.window_ms, time.time_ns() // 1000 - DAY_US)
        self.producer = fast_producer(bootstrap)
        self.watch = OffsetWatch(bootstrap)
        datasets = plan.throughput + plan.containers + plan.memory
        self.max_paths = max([d.paths for d in datasets] + [1])
        self.argv = signals_argv("processor", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                                 "--window-ms", str(plan.window_ms), "--allowed-lateness-ms", "0",
                                 "--app-id", f"{prefix}app", "--loglevel", "info", *flags)

    def run(self, stages: list[tuple[str, Dataset]]) -> list[dict[str, Any]]:
        produce_all(self.producer, [(self.names.symbols, p, k, v)
                                    for p, k, v in self.writer.symbol_records(self.max_paths)])
        rows = []
        with contextlib.ExitStack() as stack:
            children = [stack.enter_context(Child(f"processor-{self.workers}w-{self.tag}-{i}", self.argv,
                                                  self.work_dir / "logs")) for i in range(self.workers)]
            for child in children:
                child.wait_for("processor ready", 120)
                child.wait_for("assigned ", 120)
            # Warm-up, not counted: one call per partition, so every worker has read and
            # written before the clock runs.
            warm_up = Dataset(self.plan.partitions, self.plan.partitions, 1, 1)
            self._stage(children, "warm-up", warm_up)
            for kind, dataset in stages:
                rows.append(self._stage(children, kind, dataset))
            for child in children:
                if child.stop() != 0:
                    raise BenchmarkError(f"{child.name} exited with {child.process.returncode}; "
                                         f"see {child.log_path}")
        self.watch.close()
        return rows

    def _stage(self, children: list[Child], kind: str, dataset: Dataset) -> dict[str, Any]:
        windows = self.writer.build_windows(dataset)
        records = [record for window in windows for record in window]
        paced = kind == "memory"
        start = self.watch.ends(self.names.raw)
        for child in children:
            reset_peak_rss(child.pid)
        cpu_before_s = sum(cpu_seconds(c.pid) for c in children)
        tail = Tail(self.bootstrap, self.names.summaries)
        try:
            began_s = time.monotonic()
            timeout_s = 120 + dataset.events / 500
            if paced:
                expected = 0
                for index, window in enumerate(windows):
                    produce_all(self.producer, [(self.names.raw, p, k, v) for p, k, v in window])
                    expected += min(dataset.calls_in_window(index), dataset.containers)
                    tail.wait_for(expected, timeout_s)
            else:
                produce_all(self.producer, [(self.names.raw, p, k, v) for p, k, v in records])
            produced_s = time.monotonic() - began_s
            arrivals = tail.wait_for(dataset.summaries_expected(), timeout_s)
        finally:
            tail.close()
        seconds = max(a.at_monotonic_s for a in arrivals) - began_s
        cpu_s = sum(cpu_seconds(c.pid) for c in children) - cpu_before_s
        memory = [memory_bytes(c.pid) for c in children]
        end = self.watch.ends(self.names.raw)
        registry = codec.SchemaRegistry.default()
        summarized = sum(codec.decode(a.value, registry, SUMMARY).record["total_events"] for a in arrivals)
        if summarized != dataset.events:
            raise BenchmarkError(f"{kind} stage: the summaries count {summarized} calls, "
                                 f"{dataset.events} were produced to {self.names.raw}")
        row: dict[str, Any] = {
            "kind": kind, "workers": self.workers, "events": dataset.events,
            "containers": dataset.containers, "paths": dataset.paths, "windows": dataset.windows,
            "distinct_paths_per_window": dataset.containers * dataset.paths,
            "seconds": seconds, "produce_seconds": produced_s, "events_per_s": dataset.events / seconds,
            "worker_cpu_s_per_million": cpu_s / dataset.events * 1e6,
            "peak_rss_bytes": max(m["peak_rss_bytes"] for m in memory),
            "rss_bytes": max(m["rss_bytes"] for m in memory),
        }
        if kind in ("warm-up", "memory"):
            return row
        floor = self._floor(start, end)
        row["floor_events_per_s"] = dataset.events / floor["seconds"]
        row["worker_vs_floor"] = row["events_per_s"] / row["floor_events_per_s"]
        row["floor_cpu_s_per_million"] = floor["cpu_s"] / dataset.events * 1e6
        if self.workers == 1:
            row["engine_events_per_s"] = dataset.events / _engine_seconds(
                records, self.names.raw, self.plan.window_ms, self.max_paths)
        return row

    def _floor(self, start: Offsets, end: Offsets) -> dict[str, float]:
        """As many consume-and-decode processes as workers, each on its share of partitions."""
        shares = [sorted(end)[i::self.workers] for i in range(self.workers)]
        processes = [start_floor_process(["consume", "--bootstrap", self.bootstrap, "--topic", self.names.raw,
                                          *range_args({p: start[p] for p in share}, {p: end[p] for p in share})])
                     for share in shares if share]
        results = [finish_floor_process(p) for p in processes]
        return {"seconds": max(r["seconds"] for r in results), "records": sum(r["records"] for r in results),
                "cpu_s": sum(r["cpu_s"] for r in results)}


def _engine_seconds(records: list[tuple[int, bytes | None, bytes]], raw_topic: str, window_ms: int,
                    max_paths: int) -> float:
    """The same records through processor.engine.Engine in this process: the processor's own
    logic without Kafka."""
    from runtime_signals.processor.engine import Engine, EngineSettings
    from runtime_signals.processor.symbol_store import SymbolStore
    from runtime_signals.processor.windows import WindowSpec

    symbols = SymbolStore()
    for table in symbol_tables(max_paths):
        symbols.add(table)
    engine = Engine(EngineSettings(WindowSpec(window_ms, 0), raw_topic, symbol_wait_ms=0), symbols)
    offsets: dict[int, int] = {}
    for partition in sorted({p for p, _k, _v in records}):
        engine.assign(partition, None)
        offsets[partition] = 0
    began_s = time.monotonic()
    for index, (partition, key, value) in enumerate(records):
        engine.handle(partition, offsets[partition], key, value)
        offsets[partition] += 1
        if index % 500 == 499:  # the worker releases once per consumed batch
            engine.release()
    engine.release()
    return time.monotonic() - began_s
