"""The latest state of a container: every window summary of it, folded into one record.

Folding is in window start order and skips a window not after the last one folded, so
a window emitted again after a restart (docs/processor.md) is never counted twice, and
the state restored from the compacted latest topic continues exactly where it stopped.
Memory: one entry per distinct call stack ever seen in the container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime_signals.processor.aggregate import MAX_EXECUTABLES_PER_PATH
from runtime_signals.processor.intake import Executable
from runtime_signals.schemas.codec import RuntimeType

# Taken from the latest window that saw a stack (a later window may name more frames).
_PATH_FIELDS = ("path_hash", "symbols", "function_signatures", "node_hashes", "binary_digests",
                "binary_offsets", "libraries", "purl", "runtime_type", "purls", "addresses", "hash_recipe")
# Executables listed per stack: the first this many in sort order, as a window's path keeps them.
MAX_EXECUTABLES_PER_STACK = MAX_EXECUTABLES_PER_PATH


@dataclass
class ContainerState:
    """One container's union over its windows; record() is the ContainerState Avro record."""

    container_id: str
    source_partition: int
    total_events: int = 0
    raw_records: int = 0
    late_events: int = 0
    windows: int = 0
    first_window_start_us: int = 0
    last_window_start_us: int = -1
    runtimes: set[str] = field(default_factory=set)
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)  # by callstack_hash

    def fold(self, summary: dict[str, Any]) -> bool:
        """Add one window summary of this container; False (and no change) when the window
        is not after the last one folded."""
        start_us = summary["started_at_us"]
        if start_us <= self.last_window_start_us:
            return False
        if self.windows == 0:
            self.first_window_start_us = start_us
        self.last_window_start_us = start_us
        self.windows += 1
        self.total_events += summary["total_events"]
        self.raw_records += summary["raw_records"]
        self.late_events += summary["late_events"]
        self.runtimes.update(summary["detected_runtimes"])
        for path in summary["call_paths"]:
            known = self.paths.get(path["callstack_hash"])
            entry = {name: path[name] for name in _PATH_FIELDS}
            entry["callstack_hash"] = path["callstack_hash"]
            entry["executables"] = _union_of_executables(known["executables"] if known else [],
                                                         path["executables"])
            if known is None:
                entry.update(observation_count=path["observation_count"], windows=1,
                             first_observed_at_us=path["first_observed_at_us"],
                             last_observed_at_us=path["last_observed_at_us"])
            else:
                entry.update(observation_count=known["observation_count"] + path["observation_count"],
                             windows=known["windows"] + 1,
                             first_observed_at_us=min(known["first_observed_at_us"], path["first_observed_at_us"]),
                             last_observed_at_us=max(known["last_observed_at_us"], path["last_observed_at_us"]))
            self.paths[path["callstack_hash"]] = entry
        return True

    def record(self) -> dict[str, Any]:
        paths = sorted(self.paths.values(), key=lambda p: (p["path_hash"], p["callstack_hash"]))
        return {
            "container_id": self.container_id,
            "source_partition": self.source_partition,
            "first_observed_at_us": min((p["first_observed_at_us"] for p in paths), default=0),
            "last_observed_at_us": max((p["last_observed_at_us"] for p in paths), default=0),
            "total_events": self.total_events,
            "raw_records": self.raw_records,
            "late_events": self.late_events,
            "windows": self.windows,
            "first_window_start_us": self.first_window_start_us,
            "last_window_start_us": self.last_window_start_us,
            "detected_runtimes": sorted(self.runtimes, key=lambda name: RuntimeType[name].value),
            "observed_symbols": sorted({s for p in paths for s in p["symbols"]}),
            "call_paths": [dict(p) for p in paths],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ContainerState:
        """The state a ContainerState record describes (restoring after a restart)."""
        return cls(
            container_id=record["container_id"],
            source_partition=record["source_partition"],
            total_events=record["total_events"],
            raw_records=record["raw_records"],
            late_events=record["late_events"],
            windows=record["windows"],
            first_window_start_us=record["first_window_start_us"],
            last_window_start_us=record["last_window_start_us"],
            runtimes=set(record["detected_runtimes"]),
            paths={p["callstack_hash"]: dict(p) for p in record["call_paths"]},
        )


def _union_of_executables(known: list[dict[str, Any]], seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Both lists' distinct executables in ObservedCallPath's order, the first
    MAX_EXECUTABLES_PER_STACK of them: the same windows give the same list in any run."""
    distinct = {Executable(e["path"], e["binary_digest"], e["purl"], e["comm"]) for e in (*known, *seen)}
    return [e.record() for e in sorted(distinct, key=Executable.sort_key)[:MAX_EXECUTABLES_PER_STACK]]
