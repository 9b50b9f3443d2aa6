"""Data written before contract v2 still reads (issue 13: "v1 data still reads").

An "old agent" and an "old processor" are registries whose current versions are the
schemas/history/*.v1.avsc files: what this project published before the per-frame
identity fields. Their messages, bare or inside a capture file, decode with today's
default registry, are processed, and their v1 hashes stay checkable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro

from runtime_signals.capture.file import FORMAT, PARSED_SCHEMA, metadata, read_capture
from runtime_signals.consumer.models import Summary
from runtime_signals.consumer.watched import watched
from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec, hashing
from runtime_signals.schemas.codec import SchemaRegistry, decode, encode

HISTORY = Path(codec.__file__).resolve().parent / "history"
DIGEST = "sha256:" + "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
T_US = 1_700_000_000_100_000


def old_registry() -> SchemaRegistry:
    registry = SchemaRegistry.default()
    for path in sorted(HISTORY.glob("*.v1.avsc")):
        registry.register(json.loads(path.read_text()), current=True)
    return registry


def v1_event() -> dict[str, Any]:
    return {
        "event_id": "6f1c1f4e-9a4b-4c55-8f0e-1f2a3b4c5d6e", "container_id": "c1", "pid": 42, "tid": 42,
        "timestamp_ns": 1_000, "symbol": "parse", "function_address": 0x401040,
        "stack_trace": [0x401200, 0x401040], "runtime_type": "NATIVE", "library": "/app/server", "purl": None,
        "received_at_us": T_US + 5, "function_signature": None, "binary_digest": DIGEST, "binary_offset": 0x1040,
        "node_hash": None, "callstack_hash": None, "observed_at_us": T_US, "host": "n", "agent_id": "a",
        "cgroup_id": 0, "probe_id": "/app/server:parse", "observation_count": 3, "last_timestamp_ns": 2_000,
        "stack_frames": [
            {"address": 0x401200, "binary_digest": DIGEST, "binary_offset": 0x1200, "library": "/app/server"},
            {"address": 0x401040, "binary_digest": DIGEST, "binary_offset": 0x1040, "library": "/app/server"},
        ],
        "stack_truncated": False,
    }


def test_every_history_file_is_an_older_version_the_default_registry_reads() -> None:
    files = sorted(p.name for p in HISTORY.glob("*.avsc"))
    assert files == ["ContainerState.v1.avsc", "ObservedCallPath.v1.avsc", "RuntimeCallEvent.v1.avsc",
                     "RuntimeSignalSummary.v1.avsc", "SignalStatistics.v1.avsc"]
    old, new = old_registry(), SchemaRegistry.default()
    for name in ("RuntimeCallEvent", "ObservedCallPath", "RuntimeSignalSummary", "ContainerState", "SignalStatistics"):
        assert old.fingerprint_hex(name) != new.fingerprint_hex(name)


def test_an_old_agents_statistics_read_and_their_watched_time_falls_back_to_the_wall_clock() -> None:
    probe = "/usr/lib/x86_64-linux-gnu/libz.so.1:deflate"
    reports = [decode(encode({"total_events": 0, "events_per_second": 0.0, "unique_call_paths": 0,
                              "buffer_utilization_percent": 0.0, "dropped_events": 0, "agent_id": "a", "host": "n",
                              "reported_at_us": T_US + at_s * 1_000_000, "detached_ns_by_probe": {probe: detached_ns}},
                             "SignalStatistics", old_registry()), SchemaRegistry.default()).record
               for at_s, detached_ns in ((0, 0), (10, 2_000_000_000))]
    assert [r["run_ns"] for r in reports] == [0, 0]
    assert watched("deflate", reports, T_US, T_US + 10_000_000).watched_us() == 8_000_000


def test_a_v1_raw_event_in_a_v1_capture_file_is_read_and_processed(tmp_path: Path) -> None:
    value = encode(v1_event(), "RuntimeCallEvent", old_registry())
    capture = tmp_path / "v1.avro"
    with capture.open("wb") as out:
        fastavro.writer(out, PARSED_SCHEMA, [{
            "partition": 0, "offset": 7, "timestamp_ms": T_US // 1000, "timestamp_type": "CREATE_TIME",
            "key": b"c1", "value": value, "headers": []}], codec="deflate",
            metadata=metadata({"format": FORMAT, "source.topic": "signals.raw.v1", "complete": True}))
    _, records = read_capture(capture)
    (record,) = records
    event = decode(record.value, SchemaRegistry.default()).record  # type: ignore[arg-type]
    assert event["stack_frames"][0]["purl"] is None and event["executable"] is None and event["comm"] == ""

    engine = Engine(EngineSettings(WindowSpec(1000), "signals.raw.v1"), NoSymbols())
    engine.assign(0, None)
    assert engine.handle(0, 7, record.key, record.value) == []
    watermark = encode({"agent_id": "a", "host": "n", "watermark_us": T_US + 5_000_000, "sequence": 1},
                       "AgentWatermark", SchemaRegistry.default())
    outputs = engine.handle(0, 8, b"a", watermark)
    summary = decode(next(o.value for o in outputs if o.kind == "summary"), SchemaRegistry.default()).record
    assert summary["total_events"] == 3 and summary["hash_recipe"] == hashing.RECIPE_V2
    (path,) = summary["call_paths"]
    assert path["purls"] == [f"pkg:generic/server?checksum={DIGEST}"] * 2
    assert path["executables"] == []  # a v1 agent did not say


def test_a_v1_summary_reads_and_its_v1_hashes_still_recompute() -> None:
    symbols = ["main", "parse"]
    node_hashes = [hashing.node_hash(None, s) for s in symbols]
    identities = [hashing.frame_identity(DIGEST, 0x1200, 0), hashing.frame_identity(DIGEST, 0x1040, 0)]
    path = {"symbols": symbols, "observation_count": 3, "purl": None, "runtime_type": "NATIVE",
            "first_observed_at_us": T_US, "last_observed_at_us": T_US + 1, "node_hashes": node_hashes,
            "path_hash": hashing.path_hash(node_hashes), "callstack_hash": hashing.callstack_hash(identities),
            "function_signatures": symbols, "binary_digests": [DIGEST, DIGEST], "binary_offsets": [0x1200, 0x1040],
            "container_id": "c1", "window_start_us": T_US, "window_end_us": T_US + 1_000_000,
            "libraries": ["/app/server", "/app/server"]}
    summary = {"container_id": "c1", "started_at_us": T_US, "stopped_at_us": T_US + 1_000_000, "total_events": 3,
               "call_paths": [path], "observed_symbols": sorted(symbols), "dropped_events": 0,
               "detected_runtimes": ["NATIVE"], "observed_node_hashes": sorted(node_hashes),
               "observed_path_hashes": [path["path_hash"]],
               "combined_path_hash": hashing.combined_path_hash([path["path_hash"]]), "raw_records": 1,
               "late_events": 0}
    message = encode(summary, "RuntimeSignalSummary", old_registry())
    record = decode(message, SchemaRegistry.default()).record
    assert record["hash_recipe"] == hashing.RECIPE_V1  # the default says which recipe to check with
    (read,) = Summary.from_record(record).call_paths
    assert read.hash_recipe == hashing.RECIPE_V1 and read.purls == (None, None)
    assert [hashing.node_hash(None, s) for s in read.function_signatures] == list(read.node_hashes)
    assert hashing.path_hash(list(read.node_hashes)) == read.path_hash
    assert hashing.combined_path_hash([read.path_hash or ""]) == record["combined_path_hash"]
