"""The fleet simulator (benchmarks/fleet.py) and the capacity model (benchmarks/capacity.py).

No broker: the simulator's records go straight into processor.engine.Engine. What a user of
the benchmarks relies on: one spec always gives the same bytes (so recordings compare), the
records are what the processor accepts and names, the manifest's promise (summaries, calls)
is what the processor emits, and the capacity model refuses to size a fleet past the point
where one partition's watermarks fill a worker.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import pytest

from benchmarks.capacity import SEGMENT_BYTES, Measured, max_nodes, plan, workers_needed
from benchmarks.capacity import Fleet as Deployment
from benchmarks.fleet import Fleet, FleetSpec
from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec

SPEC = FleetSpec(nodes=6, containers_per_node=2, stacks_per_image=300, mean_calls_per_interval=6, intervals=4,
                 partitions=3, process_churn=0.2, container_churn=0.1)
SUMMARY = "io.runtimesignals.RuntimeSignalSummary"


def _everything(spec: FleetSpec) -> tuple[Fleet, list[Any]]:
    fleet = Fleet(spec)
    symbols = list(fleet.symbol_records())
    intervals = list(fleet.intervals())
    return fleet, [symbols, intervals]


def test_one_spec_gives_the_same_bytes_and_another_seed_does_not() -> None:
    _, first = _everything(SPEC)
    _, again = _everything(SPEC)
    assert first == again
    _, other = _everything(FleetSpec(**{**SPEC.__dict__, "seed": SPEC.seed + 1}))
    assert other != first


def test_the_engine_emits_what_the_manifest_promises_with_every_frame_named() -> None:
    fleet, (symbols, intervals) = _everything(SPEC)
    registry = codec.SchemaRegistry.default()
    store = SymbolStore()
    for _key, value in symbols:
        store.add(codec.decode(value, registry).record)
    engine = Engine(EngineSettings(WindowSpec(SPEC.window_ms, 0), "fleet.raw", symbol_wait_ms=0), store, registry)
    for partition in range(SPEC.partitions):
        engine.assign(partition, None)
    offsets = [0] * SPEC.partitions
    summaries = []
    module_maps = 0
    for modules, raw in intervals:
        for _key, value in modules:
            store.add_module_map(codec.decode(value, registry).record)
            module_maps += 1
        for partition, key, value in raw:
            chosen = zlib.crc32(key) % SPEC.partitions if partition is None else partition
            outputs = engine.handle(chosen, offsets[chosen], key, value)
            offsets[chosen] += 1
            summaries += [codec.decode(o.value, registry, SUMMARY).record for o in outputs if o.kind == "summary"]
    summaries += [codec.decode(o.value, registry, SUMMARY).record for o in engine.release() if o.kind == "summary"]
    expected = fleet.expected
    assert not {k: v for k, v in engine.counts.items() if k.startswith("rejected")}
    assert expected.call_records > 0 and expected.module_maps == module_maps > 2 * SPEC.nodes  # churn: new processes
    assert expected.watermark_records == SPEC.nodes * SPEC.partitions * SPEC.intervals
    assert len(summaries) == expected.summaries
    assert sum(s["total_events"] for s in summaries) == expected.calls
    assert sum(s["raw_records"] for s in summaries) == expected.call_records
    symbols_seen = {symbol for s in summaries for symbol in s["observed_symbols"]}
    assert symbols_seen and not any(symbol.startswith(("sha256:", "unknown+")) for symbol in symbols_seen)


def test_capacity_refuses_a_fleet_whose_watermarks_fill_a_partition() -> None:
    measured = Measured(call_cpu_us=300, watermark_cpu_us=100, path_cpu_us=600, call_disk_bytes=130,
                        watermark_disk_bytes=30, path_output_disk_bytes=2900, path_retained_disk_bytes=1700)
    limit = max_nodes(measured, 0.5)
    assert round(limit) == 3500  # 0.7 CPU s/s * 0.5 s / 100 us
    below = workers_needed(measured, Deployment(int(limit * 0.5), 10, 0.5))
    assert below is not None and below > 1
    assert workers_needed(measured, Deployment(int(limit) + 1, 10, 0.5)) is None
    # A longer interval moves the limit: the same fleet fits again.
    assert workers_needed(measured, Deployment(int(limit) + 1, 10, 5.0)) is not None


def test_capacity_keeps_the_outputs_for_their_retention_and_no_longer() -> None:
    measured = Measured(call_cpu_us=70, watermark_cpu_us=15, path_cpu_us=200, call_disk_bytes=130,
                        watermark_disk_bytes=30, path_output_disk_bytes=1300, path_retained_disk_bytes=900)
    fleet = Deployment(1_000, 13, 0.5)
    month = plan(measured, fleet)
    week = plan(replace(measured, output_retention_days=7), fleet)
    # Summaries and paths: every window's records, kept for the retention, three replicas.
    assert month["outputs_storage_gb"] == pytest.approx(month["paths_per_s"] * 900 * 86_400 * 30 * 3 / 1e9)
    assert week["outputs_storage_gb"] == pytest.approx(month["outputs_storage_gb"] * 7 / 30)
    # Latest states: compacted, so what is kept is bounded by the segments compaction cannot touch.
    assert month["latest_dirty_gb"] == week["latest_dirty_gb"] <= month["workers"] * SEGMENT_BYTES * 3 / 1e9
