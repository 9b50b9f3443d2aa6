"""The latest state of a container: every window summary of it, folded into one record.

Folding is in window start order and skips a window not after the last one folded, so
a window emitted again after a restart (docs/processor.md) is never counted twice, and
the state restored from the compacted latest topic continues exactly where it stopped.
Memory: one entry per distinct call stack ever seen in the container. LatestStates keeps
a bounded number of them, with a bounded number of entries in all, decoded and the rest on
disk.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime_signals.processor.aggregate import MAX_EXECUTABLES_PER_PATH
from runtime_signals.processor.errors import ConfigError
from runtime_signals.processor.intake import Executable
from runtime_signals.schemas import codec
from runtime_signals.schemas.codec import RuntimeType
from runtime_signals.schemas.errors import SchemaError

CONTAINER_STATE = "io.runtimesignals.ContainerState"
# Taken from the latest window that saw a stack (a later window may name more frames).
_PATH_FIELDS = ("path_hash", "symbols", "function_signatures", "node_hashes", "binary_digests",
                "binary_offsets", "libraries", "purl", "runtime_type", "purls", "addresses", "hash_recipe")
# The fields of a state's path that are its latest window's named stack (aggregate.STACK_FIELDS).
STACK_ITEM_FIELDS = tuple(sorted({*_PATH_FIELDS, "callstack_hash"} - {"runtime_type"}))
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
    # record() as written to the latest topic since the last fold (the engine sets it): a
    # state moved to LatestStates' file is these bytes, not encoded a second time.
    encoded: bytes | None = field(default=None, compare=False, repr=False)
    # Each path's item in the encoded record, by callstack hash, until a fold changes it:
    # most of a long-lived container's paths are not in a given window.
    items: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def fold(self, summary: dict[str, Any]) -> bool:
        """Add one window summary of this container; False (and no change) when the window
        is not after the last one folded."""
        start_us = summary["started_at_us"]
        if start_us <= self.last_window_start_us:
            return False
        self.encoded = None
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
            self.items.pop(path["callstack_hash"], None)
        return True

    def encode(self, registry: codec.SchemaRegistry) -> bytes:
        """record() as a ContainerState message, the unchanged paths' items reused (and the
        paths not copied, as record() does for its callers)."""
        paths = self._sorted_paths()
        items = []
        for path in paths:
            item = self.items.get(path["callstack_hash"])
            if item is None:
                item = self.items[path["callstack_hash"]] = codec.encode_item(
                    path, CONTAINER_STATE, "call_paths", registry)
            items.append(item)
        return codec.encode_with_items(self._record(paths, []), CONTAINER_STATE, registry, "call_paths", items)

    def record(self) -> dict[str, Any]:
        paths = self._sorted_paths()
        return self._record(paths, [dict(p) for p in paths])

    def _sorted_paths(self) -> list[dict[str, Any]]:
        return sorted(self.paths.values(), key=lambda p: (p["path_hash"], p["callstack_hash"]))

    def _record(self, paths: list[dict[str, Any]], call_paths: list[dict[str, Any]]) -> dict[str, Any]:
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
            "call_paths": call_paths,
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


class LatestStates:
    """Every container's latest state of the partitions a worker owns: the most recently
    folded of them decoded, at most `in_memory` states and `paths_in_memory` paths in all
    (a state's memory is its paths, and one container may have thousands), the rest
    encoded and compressed in an SQLite file.

    A node that replaces its containers all day gives a partition thousands of them over
    the retention, most long gone: held in memory, the worker grew with every container it
    had seen (docs/benchmarks.md, Soak). The file is a cache, not a store of record: it is
    unlinked once open (nothing is left behind a crash) and rebuilt from the latest topic
    when a partition is assigned. A state has one home at a time, memory or file, and
    ContainerState.from_record(state.record()) is the same state, so outputs do not depend
    on where a state was kept."""

    def __init__(self, directory: Path, in_memory: int, paths_in_memory: int,
                 encode: Callable[[dict[str, Any]], bytes], decode: Callable[[bytes], dict[str, Any]],
                 counts: Counter[str]) -> None:
        self._in_memory, self._paths_in_memory = in_memory, paths_in_memory  # at least 1 (EngineSettings)
        self._encode, self._decode = encode, decode
        self._memory: OrderedDict[tuple[int, str], ContainerState] = OrderedDict()
        path = directory / f"latest-states-{os.getpid()}-{id(self):x}.sqlite3"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # No journal and no fsync: a crash loses the file, which is rebuilt anyway. The engine
            # moves between the event loop and worker threads, one at a time (the worker's lock).
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.executescript("""
                PRAGMA journal_mode = OFF;
                PRAGMA synchronous = OFF;
                PRAGMA cache_size = -4096;
                CREATE TABLE state (partition INTEGER NOT NULL, container TEXT NOT NULL,
                                    last_window_start_us INTEGER NOT NULL, record BLOB NOT NULL,
                                    PRIMARY KEY (partition, container));
                CREATE INDEX state_age ON state (partition, last_window_start_us);
            """)  # the file exists from here (SQLite creates it on the first write)
            path.unlink()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"latest states file {path}: cannot be created ({exc}); the directory "
                              f"(processor.data_dir) must be writable") from exc
        self.on_disk = 0
        self._counts = counts  # latest_states_evicted (to the file), latest_states_read_back

    def sizes(self) -> dict[str, int]:
        return {"latest_states_in_memory": len(self._memory), "latest_states_on_disk": self.on_disk,
                "latest_paths_in_memory": self._paths_held()}

    def get(self, partition: int, container: str) -> ContainerState | None:
        key = (partition, container)
        state = self._memory.get(key)
        if state is not None:
            self._memory.move_to_end(key)
            return state
        row = self._db.execute("SELECT record FROM state WHERE partition = ? AND container = ?", key).fetchone()
        if row is None:
            return None
        self._db.execute("DELETE FROM state WHERE partition = ? AND container = ?", key)
        self.on_disk -= 1
        self._counts["latest_states_read_back"] += 1
        encoded = zlib.decompress(row[0])
        state = ContainerState.from_record(self._decode(encoded))
        state.encoded = encoded  # until its next fold: pushed out again, it is these bytes
        self._hold(key, state)
        return state

    def put(self, partition: int, state: ContainerState) -> None:
        """Keep a state get() returned (changed since), or a new one where get() found none:
        either way the file holds no row of it (get() takes a state out of the file)."""
        self._hold((partition, state.container_id), state)

    def restore(self, partition: int, values: Iterable[bytes]) -> list[tuple[int, SchemaError]]:
        """Take the partition's ContainerState records read back from the latest topic, as
        written (straight to the file: memory fills as windows close), the latest of each
        container. Returns the records that do not decode, by position, for the caller to
        report; the others are taken."""
        self.drop_partition(partition)
        bad = []
        for position, value in enumerate(values):
            try:
                record = self._decode(value)
            except SchemaError as exc:
                bad.append((position, exc))
                continue
            if record["source_partition"] == partition:
                self._db.execute(
                    "INSERT INTO state VALUES (?, ?, ?, ?) ON CONFLICT (partition, container) DO UPDATE "
                    "SET last_window_start_us = excluded.last_window_start_us, record = excluded.record "
                    "WHERE excluded.last_window_start_us > state.last_window_start_us",
                    (partition, record["container_id"], record["last_window_start_us"], zlib.compress(value, 1)))
        self.on_disk = self._db.execute("SELECT COUNT(*) FROM state").fetchone()[0]
        return bad

    def forget_idle(self, partition: int, before_us: int) -> int:
        """Drop the partition's states whose last window started before before_us; how many."""
        idle = [key for key, state in self._memory.items()
                if key[0] == partition and state.last_window_start_us < before_us]
        for key in idle:
            del self._memory[key]
        gone = self._db.execute("DELETE FROM state WHERE partition = ? AND last_window_start_us < ?",
                                (partition, before_us)).rowcount
        self.on_disk -= gone
        return len(idle) + gone

    def drop_partition(self, partition: int) -> None:
        for key in [key for key in self._memory if key[0] == partition]:
            del self._memory[key]
        self.on_disk -= self._db.execute("DELETE FROM state WHERE partition = ?", (partition,)).rowcount

    def containers(self, partition: int) -> dict[str, ContainerState]:
        """Every state of a partition, decoded (for tests and inspection: it reads the file)."""
        found = {container: state for (p, container), state in self._memory.items() if p == partition}
        for container, record in self._db.execute("SELECT container, record FROM state WHERE partition = ?",
                                                  (partition,)):
            found[container] = ContainerState.from_record(self._decode(zlib.decompress(record)))
        return found

    def _hold(self, key: tuple[int, str], state: ContainerState) -> None:
        self._memory[key] = state
        self._memory.move_to_end(key)
        # Summed afresh: a state grows between get() and put(), when its window is folded.
        held = self._paths_held()
        # The state just held stays, whatever its size: the engine is about to fold it.
        while len(self._memory) > 1 and (len(self._memory) > self._in_memory or held > self._paths_in_memory):
            (partition, container), oldest = self._memory.popitem(last=False)
            held -= len(oldest.paths)
            record = zlib.compress(oldest.encoded or self._encode(oldest.record()), 1)
            self._db.execute("INSERT INTO state VALUES (?, ?, ?, ?)",
                             (partition, container, oldest.last_window_start_us, record))
            self.on_disk += 1
            self._counts["latest_states_evicted"] += 1

    def _paths_held(self) -> int:
        return sum(len(state.paths) for state in self._memory.values())
