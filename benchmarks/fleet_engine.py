"""The processor's own logic on a fleet recording, in this process: CPU per record class,
output volume, and byte-identical outputs across runs. No broker.

Why beside fleet_bench.py: on a shared broker and a loaded machine, a worker run measures
the machine as much as the worker; the Engine's CPU per record is what the capacity model
(benchmarks/capacity.py) needs, and it is measured here against its own floor (decoding the
same records with schemas.codec) in the same process, one after the other.

    python -m benchmarks.fleet_engine RECORDING [RECORDING ...]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from runtime_signals.capture.file import read_capture
from runtime_signals.consumer.kafka import KafkaRecord, TimestampType
from runtime_signals.processor.app import GC_THRESHOLDS
from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec

from .fleet import Fleet, FleetSpec, load_manifest

RAW_TOPIC = "fleet.signals.raw.v1"


def _symbols(recording: Path, registry: codec.SchemaRegistry) -> SymbolStore:
    store = SymbolStore()
    for kind, schema in (("symbols", "io.runtimesignals.SymbolTable"), ("modules", "io.runtimesignals.ModuleMap")):
        _header, records = read_capture(recording / f"{kind}.capture")
        for record in records:
            decoded = codec.decode(record.value or b"", registry, schema).record
            if kind == "symbols":
                store.add(decoded, "fleet")
            else:
                store.add_module_map(decoded, "fleet")
    return store


def run_engine(recording: Path, records: list[KafkaRecord], window_ms: int) -> dict[str, Any]:
    registry = codec.SchemaRegistry.default()
    engine = Engine(EngineSettings(WindowSpec(window_ms, 0), RAW_TOPIC, symbol_wait_ms=0),
                    _symbols(recording, registry), registry)
    for partition in sorted({r.partition for r in records}):
        engine.assign(partition, None)
    digest = hashlib.sha256()
    outputs: dict[str, list[int]] = {}
    cpu_s = 0.0
    for index, record in enumerate(records):
        began = time.process_time()
        produced = engine.handle(record.partition, record.offset, record.key, record.value, (),
                                 record.timestamp_ms * 1000)
        if index % 500 == 499:  # the worker releases on a timer; here every 500 records
            produced += engine.release()
        cpu_s += time.process_time() - began
        for output in produced:
            sizes = outputs.setdefault(output.kind, [0, 0])
            sizes[0] += 1
            sizes[1] += len(output.value) + len(output.key or b"")
            digest.update(output.kind.encode() + b"\0" + (output.key or b"") + b"\0" + output.value)
    began = time.process_time()
    tail = engine.release()
    cpu_s += time.process_time() - began
    for output in tail:
        digest.update(output.kind.encode() + b"\0" + (output.key or b"") + b"\0" + output.value)
    return {"cpu_s": cpu_s, "outputs": outputs, "outputs_sha256": digest.hexdigest(),
            "counts": dict(engine.counts)}


def decode_floor(records: list[KafkaRecord]) -> float:
    registry = codec.SchemaRegistry.default()
    began = time.process_time()
    for record in records:
        codec.decode(record.value or b"", registry)
    return time.process_time() - began


def measure(recording: Path) -> dict[str, Any]:
    manifest = load_manifest(recording)
    spec, expected = manifest["spec"], manifest["expected"]
    _header, records = read_capture(recording / "raw.capture")
    # In each partition's order, partitions interleaved as the capture read them.
    floor_s = decode_floor(records)
    first = run_engine(recording, records, spec["window_ms"])
    second = run_engine(recording, records, spec["window_ms"])
    # Windows longer than the recording: nothing closes, nothing is emitted, so this is the
    # intake alone (decode, check, aggregate, event clock); the difference is the emission.
    intake = run_engine(recording, records, 3_600_000)
    summaries = first["outputs"].get("summary", [0, 0])[0]
    calls, watermarks = expected["call_records"], expected["watermark_records"]
    return {
        "recording": str(recording), "nodes": spec["nodes"], "containers": spec["nodes"] * spec["containers_per_node"],
        "partitions": spec["partitions"], "records": len(records), "call_records": calls,
        "watermark_records": watermarks, "summaries": summaries, "summaries_expected": expected["summaries"],
        "engine_cpu_s_per_million": min(first["cpu_s"], second["cpu_s"]) / len(records) * 1e6,
        "decode_cpu_s_per_million": floor_s / len(records) * 1e6,
        "engine_vs_decode": floor_s / min(first["cpu_s"], second["cpu_s"]),
        "intake_cpu_s_per_million": intake["cpu_s"] / len(records) * 1e6,
        "emission_cpu_us_per_path": (min(first["cpu_s"], second["cpu_s"]) - intake["cpu_s"])
        / max(1, first["outputs"].get("path", [1])[0]) * 1e6,
        "output_bytes_per_path": sum(b for _n, b in first["outputs"].values())
        / max(1, first["outputs"].get("path", [1])[0]),
        "outputs": first["outputs"],
        "output_bytes_per_call_record": sum(b for _n, b in first["outputs"].values()) / max(1, calls),
        "byte_identical": first["outputs_sha256"] == second["outputs_sha256"],
        "outputs_sha256": first["outputs_sha256"],
        "rejected": {k: v for k, v in first["counts"].items() if k.startswith("rejected")},
    }


def generated(spec: FleetSpec) -> list[KafkaRecord]:
    """A spec's raw records made in this process, without a broker or a capture: call
    records go to crc32(key) % partitions (not the agent's murmur2; only the spread matters
    here)."""
    records: list[KafkaRecord] = []
    offsets = [0] * spec.partitions
    for _modules, raw in Fleet(spec).intervals():
        for partition, key, value in raw:
            chosen = zlib.crc32(key) % spec.partitions if partition is None else partition
            records.append(KafkaRecord(RAW_TOPIC, chosen, offsets[chosen], 0, TimestampType.NOT_AVAILABLE, key, value))
            offsets[chosen] += 1
    return records


def watermark_cost(spec: FleetSpec) -> dict[str, Any]:
    """CPU per watermark record: a fleet that sends watermarks only."""
    records = generated(spec)
    registry = codec.SchemaRegistry.default()
    engine = Engine(EngineSettings(WindowSpec(spec.window_ms, 0), RAW_TOPIC, symbol_wait_ms=0), SymbolStore(),
                    registry)
    for partition in range(spec.partitions):
        engine.assign(partition, None)
    began = time.process_time()
    for record in records:
        engine.handle(record.partition, record.offset, record.key, record.value, (), None)
    cpu_s = time.process_time() - began
    return {"nodes": spec.nodes, "partitions": spec.partitions, "watermark_records": len(records),
            "engine_cpu_us_per_watermark": cpu_s / len(records) * 1e6,
            "decode_cpu_us_per_watermark": decode_floor(records) / len(records) * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", type=Path, nargs="*")
    parser.add_argument("--watermarks-of", type=int, metavar="NODES",
                        help="also measure a fleet of NODES nodes that sends watermarks only (12 partitions)")
    parser.add_argument("--out", type=Path, help="append each row as a JSON line here")
    args = parser.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)  # as a worker collects (processor/app.py)
    rows = [measure(recording) for recording in args.recordings]
    if args.watermarks_of:
        rows.append(watermark_cost(FleetSpec(nodes=args.watermarks_of, mean_calls_per_interval=0, intervals=4)))
    for row in rows:
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
