"""The latest state of a container: the union of its windows, each folded in once."""

from __future__ import annotations

from typing import Any

from runtime_signals.processor.latest import ContainerState
from runtime_signals.schemas import codec

REGISTRY = codec.SchemaRegistry.default()


def _summary(start_us: int, paths: list[tuple[str, int, int, list[str]]], late: int = 0) -> dict[str, Any]:
    call_paths = [{"callstack_hash": stack, "path_hash": "sha256:" + stack[-1] * 64, "symbols": symbols,
                   "function_signatures": symbols, "node_hashes": [], "binary_digests": [], "binary_offsets": [],
                   "libraries": [], "purl": None, "runtime_type": "NATIVE", "observation_count": count,
                   "first_observed_at_us": at_us, "last_observed_at_us": at_us + 5}
                  for stack, count, at_us, symbols in paths]
    return {"started_at_us": start_us, "total_events": sum(p[1] for p in paths), "raw_records": len(paths),
            "late_events": late, "detected_runtimes": ["NATIVE"], "call_paths": call_paths}


def test_windows_fold_once_each_in_start_order_and_later_names_win() -> None:
    state = ContainerState("c1", source_partition=2)
    assert state.fold(_summary(1_000, [("s1", 3, 1_100, ["x+0x1", "parse"]), ("s2", 1, 1_200, ["main", "parse"])]))
    assert state.fold(_summary(2_000, [("s1", 4, 2_100, ["handle", "parse"])], late=2))
    assert not state.fold(_summary(2_000, [("s1", 4, 2_100, ["handle", "parse"])], late=2))  # emitted again
    assert not state.fold(_summary(1_000, [("s1", 3, 1_100, ["x+0x1", "parse"])]))

    record = state.record()
    assert (record["total_events"], record["late_events"], record["windows"]) == (8, 2, 2)
    assert (record["first_observed_at_us"], record["last_observed_at_us"]) == (1_100, 2_105)
    s1 = next(p for p in record["call_paths"] if p["callstack_hash"] == "s1")
    assert (s1["observation_count"], s1["windows"], s1["symbols"]) == (7, 2, ["handle", "parse"])
    assert record["observed_symbols"] == ["handle", "main", "parse"]

    encoded = codec.encode(record, "ContainerState", REGISTRY)
    restored = ContainerState.from_record(codec.decode(encoded, REGISTRY).record)
    assert codec.encode(restored.record(), "ContainerState", REGISTRY) == encoded
    assert not restored.fold(_summary(2_000, []))
