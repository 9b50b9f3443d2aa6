"""The latest state of a container: the union of its windows, each folded in once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime_signals.processor.latest import ContainerState
from runtime_signals.schemas import codec

REGISTRY = codec.SchemaRegistry.default()
HISTORY = Path(codec.__file__).resolve().parent / "history"


def _executable(name: str) -> dict[str, Any]:
    return {"path": f"/usr/bin/{name}", "binary_digest": "sha256:" + "ab" * 32, "purl": None, "comm": name}


def _summary(start_us: int, paths: list[tuple[str, int, int, list[str]]], late: int = 0,
             executables: tuple[str, ...] = ()) -> dict[str, Any]:
    call_paths = [{"callstack_hash": stack, "path_hash": "sha256:" + stack[-1] * 64, "symbols": symbols,
                   "function_signatures": symbols, "node_hashes": [], "binary_digests": [], "binary_offsets": [],
                   "libraries": [], "purl": None, "runtime_type": "NATIVE", "observation_count": count,
                   "first_observed_at_us": at_us, "last_observed_at_us": at_us + 5,
                   "purls": [f"pkg:generic/{s}" for s in symbols], "addresses": [None] * len(symbols),
                   "hash_recipe": "runtime-signals/v2", "executables": [_executable(e) for e in executables]}
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


def test_a_stack_keeps_its_frames_identities_and_the_union_of_its_programs() -> None:
    state = ContainerState("c1", source_partition=0)
    state.fold(_summary(1_000, [("s1", 1, 1_100, ["main", "parse"])], executables=("zsh", "curl")))
    state.fold(_summary(2_000, [("s1", 1, 2_100, ["main", "parse"])], executables=("curl", "apt")))
    (path,) = state.record()["call_paths"]
    assert path["purls"] == ["pkg:generic/main", "pkg:generic/parse"] and path["hash_recipe"] == "runtime-signals/v2"
    assert [e["comm"] for e in path["executables"]] == ["apt", "curl", "zsh"]

    many = tuple(f"p{i:03}" for i in range(40))  # beyond the bound: the first 32 in order, every run
    state.fold(_summary(3_000, [("s1", 1, 3_100, ["main", "parse"])], executables=many))
    (path,) = state.record()["call_paths"]
    assert [e["comm"] for e in path["executables"]] == ["apt", "curl", *many[:30]]


def test_a_state_written_before_contract_v2_is_restored_and_grows() -> None:
    old = codec.SchemaRegistry.default()
    old.register(json.loads((HISTORY / "ContainerState.v1.avsc").read_text()), current=True)
    v1_path = {"callstack_hash": "s1", "path_hash": "sha256:" + "1" * 64, "symbols": ["main", "parse"],
               "function_signatures": ["main", "parse"], "node_hashes": [], "binary_digests": [],
               "binary_offsets": [], "libraries": [], "purl": None, "runtime_type": "NATIVE",
               "observation_count": 5, "windows": 2, "first_observed_at_us": 10, "last_observed_at_us": 20}
    v1 = {"container_id": "c1", "source_partition": 0, "first_observed_at_us": 10, "last_observed_at_us": 20,
          "total_events": 5, "raw_records": 2, "late_events": 0, "windows": 2, "first_window_start_us": 0,
          "last_window_start_us": 500, "detected_runtimes": ["NATIVE"], "observed_symbols": ["main", "parse"],
          "call_paths": [v1_path]}
    read = codec.decode(codec.encode(v1, "ContainerState", old), REGISTRY).record
    (path,) = read["call_paths"]
    assert (path["purls"], path["executables"], path["hash_recipe"]) == ([], [], "runtime-signals/v1")

    state = ContainerState.from_record(read)
    assert state.fold(_summary(1_000, [("s1", 1, 1_100, ["main", "parse"])], executables=("curl",)))
    (path,) = state.record()["call_paths"]
    assert (path["observation_count"], path["windows"], path["hash_recipe"]) == (6, 3, "runtime-signals/v2")
    assert [e["comm"] for e in path["executables"]] == ["curl"]
