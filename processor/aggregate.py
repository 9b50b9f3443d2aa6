"""Folding call events into per-window call paths and summary records. Pure functions.

List orders in the output (the contract's determinism rule, docs/contract.md):
- call_paths: by path_hash, then callstack_hash;
- observed_symbols, observed_node_hashes, observed_path_hashes: sorted, unique;
- detected_runtimes: by RuntimeType code;
- symbols and per-frame lists of a path: entry point first, probed function last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from schemas import hashing
from schemas.codec import RuntimeType

from .symbolize import Frame, SymbolSource, resolve_frames
from .windows import WindowKey

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class PathAggregate:
    """One distinct call stack within a window. Frames stay unsymbolized until the window
    closes, so symbol tables that arrive while it is open still name them."""

    frames: list[Frame]
    top_symbol: str | None
    runtime_type: str
    observation_count: int = 0
    first_observed_at_us: int = 0
    last_observed_at_us: int = 0

    def observe(self, count: int, first_us: int, last_us: int) -> None:
        if self.observation_count == 0 or first_us < self.first_observed_at_us:
            self.first_observed_at_us = first_us
        self.last_observed_at_us = max(self.last_observed_at_us, last_us)
        self.observation_count += count


@dataclass
class WindowAggregate:
    """Everything one container did in one window."""

    key: WindowKey
    end_us: int
    paths: dict[tuple[str, ...], PathAggregate] = field(default_factory=dict)
    total_events: int = 0
    raw_records: int = 0
    runtimes: set[str] = field(default_factory=set)

    def add(self, event: dict[str, Any]) -> None:
        frames = [Frame(f["address"], f["binary_digest"], f["binary_offset"], f["library"])
                  for f in event["stack_frames"]]
        if not frames:
            # An event from an agent that sent addresses only: frames without files.
            frames = [Frame(a, None, None, None) for a in event["stack_trace"]]
        identities = tuple(f.identity for f in frames)
        path = self.paths.get(identities)
        if path is None:
            path = PathAggregate(frames, event["symbol"], event["runtime_type"])
            self.paths[identities] = path
        count = event["observation_count"]
        observed_us = micros(event["observed_at_us"])
        path.observe(count, observed_us, observed_us)
        self.total_events += count
        self.raw_records += 1
        self.runtimes.add(event["runtime_type"])


def micros(value: int | datetime) -> int:
    """Microseconds since the epoch. fastavro decodes timestamp-micros to an aware
    datetime; windows work in integers, computed exactly (no float seconds)."""
    if isinstance(value, int):
        return value
    delta = value.astimezone(timezone.utc) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def path_record(window: WindowAggregate, path: PathAggregate, source: SymbolSource) -> dict[str, Any]:
    """The ObservedCallPath record of one path of a closed window."""
    frames = resolve_frames(path.frames, path.top_symbol, source)
    node_hashes = [hashing.node_hash(f.purl, f.signature) for f in frames]
    return {
        "symbols": [f.symbol for f in frames],
        "observation_count": path.observation_count,
        "purl": frames[-1].purl,
        "runtime_type": path.runtime_type,
        "first_observed_at_us": path.first_observed_at_us,
        "last_observed_at_us": path.last_observed_at_us,
        "node_hashes": node_hashes,
        "path_hash": hashing.path_hash(node_hashes),
        "callstack_hash": hashing.callstack_hash([f.identity for f in path.frames]),
        "function_signatures": [f.signature for f in frames],
        "binary_digests": [f.binary_digest for f in path.frames],
        "binary_offsets": [f.binary_offset for f in path.frames],
        "container_id": window.key.container_id,
        "window_start_us": window.key.start_us,
        "window_end_us": window.end_us,
        "libraries": [f.library for f in path.frames],
    }


def summary_record(window: WindowAggregate, source: SymbolSource, dropped_events: int = 0,
                   late_events: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The RuntimeSignalSummary of a closed window, and its paths in summary order."""
    paths = sorted((path_record(window, p, source) for p in window.paths.values()),
                   key=lambda r: (r["path_hash"], r["callstack_hash"]))
    node_hashes = sorted({h for p in paths for h in p["node_hashes"]})
    path_hashes = sorted({p["path_hash"] for p in paths})
    summary = {
        "container_id": window.key.container_id,
        "started_at_us": window.key.start_us,
        "stopped_at_us": window.end_us,
        "total_events": window.total_events,
        "call_paths": paths,
        "observed_symbols": sorted({s for p in paths for s in p["symbols"]}),
        "dropped_events": dropped_events,
        "detected_runtimes": sorted(window.runtimes, key=lambda name: RuntimeType[name].value),
        "observed_node_hashes": node_hashes,
        "observed_path_hashes": path_hashes,
        "combined_path_hash": hashing.combined_path_hash(path_hashes),
        "raw_records": window.raw_records,
        "late_events": late_events,
    }
    return summary, paths
