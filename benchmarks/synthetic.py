"""A synthetic raw topic: RuntimeCallEvent and AgentWatermark records built with schemas.codec,
shaped like the agent's (six frames in two binaries), with symbol tables for both binaries
so that the processor names every frame and never waits for a table.

Each dataset covers `windows` consecutive event-time windows. Call k of a window belongs to
container k % containers and path (k // containers) % paths, so every container and every
path appears once the window has enough calls. After each window's calls one watermark per
partition closes it (the processor runs with no allowed lateness). A later dataset on the
same topic continues after the last window of the one before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from runtime_signals.schemas import codec

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
SYMBOL_TABLE = "io.runtimesignals.SymbolTable"
BINARY_DIGEST = "sha256:" + "b1" * 32
LIBC_DIGEST = "sha256:" + "c1" * 32
BINARY_PATH = "/srv/bench/hot"
LIBC_PATH = "/usr/lib/x86_64-linux-gnu/libc.so.6"
AGENT_ID = "bench-node/1"
# (digest, file offset, library, symbol): entry point first, probed function last; the
# caller at index 3 is where paths differ (via_NNNN at VIA_BASE + index * VIA_SIZE).
_COMMON_FRAMES = [(LIBC_DIGEST, 0x2724A, LIBC_PATH, "__libc_start_call_main"),
                  (BINARY_DIGEST, 0x9010, BINARY_PATH, "main"),
                  (BINARY_DIGEST, 0xA010, BINARY_PATH, "run_timed")]
_TARGET = (BINARY_DIGEST, 0x8000, BINARY_PATH, "bench_target")
VIA_BASE, VIA_SIZE = 0x100000, 0x20
_LOAD_BASE = 0x5600_0000_0000


@dataclass(frozen=True)
class Dataset:
    events: int
    containers: int
    paths: int
    windows: int

    def calls_in_window(self, window: int) -> int:
        return self.events // self.windows + (1 if window < self.events % self.windows else 0)

    def summaries_expected(self) -> int:
        return sum(min(self.calls_in_window(w), self.containers) for w in range(self.windows))


def container_id(index: int) -> str:
    return f"bench-container-{index:05d}"


def symbol_tables(max_paths: int) -> list[dict[str, Any]]:
    """One single-chunk SymbolTable per binary, naming every frame the events use."""
    # Callers are looked up at their return address - 1: each function starts below it.
    binary = [{"file_offset": offset & ~0xFF, "size_bytes": 0x100, "name": name}
              for digest, offset, _path, name in [*_COMMON_FRAMES[1:], _TARGET]]
    binary += [{"file_offset": VIA_BASE + i * VIA_SIZE, "size_bytes": VIA_SIZE, "name": f"via_{i:04d}"}
               for i in range(max_paths)]
    libc = [{"file_offset": 0x27200, "size_bytes": 0x100, "name": "__libc_start_call_main"}]
    return [{"binary_digest": digest, "build_id": None, "source": "benchmarks", "chunk_index": 0,
             "chunk_count": 1, "symbol_count": len(symbols), "symbols": sorted(symbols, key=lambda s: s["file_offset"])}
            for digest, symbols in ((BINARY_DIGEST, binary), (LIBC_DIGEST, libc))]


def call_event(container: int, path: int, observed_at_us: int) -> dict[str, Any]:
    """A RuntimeCallEvent as the agent writes it for one call."""
    via = (BINARY_DIGEST, VIA_BASE + path * VIA_SIZE + 0x10, BINARY_PATH, f"via_{path:04d}")
    frames = [{"address": _LOAD_BASE + offset, "binary_digest": digest, "binary_offset": offset, "library": library}
              for digest, offset, library, _name in [*_COMMON_FRAMES, via, _TARGET]]
    return {
        "event_id": str(uuid.uuid4()), "container_id": container_id(container),
        "pid": 1000 + container, "tid": 1000 + container, "timestamp_ns": observed_at_us * 1000,
        "symbol": _TARGET[3], "function_address": frames[-1]["address"],
        "stack_trace": [f["address"] for f in frames], "runtime_type": "NATIVE",
        "library": BINARY_PATH, "purl": None, "received_at_us": observed_at_us,
        "function_signature": None, "binary_digest": BINARY_DIGEST, "binary_offset": _TARGET[1],
        "node_hash": None, "callstack_hash": None, "observed_at_us": observed_at_us,
        "host": "bench-node", "agent_id": AGENT_ID, "cgroup_id": 1 + container,
        "probe_id": f"{BINARY_PATH}:{_TARGET[3]}", "observation_count": 1, "last_timestamp_ns": None,
        "stack_frames": frames, "stack_truncated": False,
    }


Record = tuple[int, bytes | None, bytes]  # (partition, key, value)

# An encoded RuntimeCallEvent: the 10-byte single-object header, then event_id, its first
# field: a length byte (36, zigzag: 72) and the 36 characters of the uuid.
_EVENT_ID_AT = slice(11, 47)


def with_event_id(value: bytes, event_id: str) -> bytes:
    """value (an encoded RuntimeCallEvent) with another event id, without encoding it again."""
    assert value[10] == 72 and len(event_id) == 36, "event_id is not a canonical uuid in the first field"
    return value[:_EVENT_ID_AT.start] + event_id.encode() + value[_EVENT_ID_AT.stop:]


class RawTopicWriter:
    """Builds datasets for one raw topic, keeping its event time and watermark sequence."""

    def __init__(self, partitions: int, window_ms: int, first_window_start_us: int) -> None:
        self.partitions = partitions
        self.window_us = window_ms * 1000
        self.next_window_start_us = first_window_start_us - first_window_start_us % self.window_us
        self.sequence = 0
        self.events = 0
        self.registry = codec.SchemaRegistry.default()

    def symbol_records(self, max_paths: int) -> list[Record]:
        return [(0, f"{t['binary_digest']}/0".encode(), codec.encode(t, SYMBOL_TABLE, self.registry))
                for t in symbol_tables(max_paths)]

    def build(self, dataset: Dataset) -> list[Record]:
        """Every record of the dataset in produce order."""
        return [record for window in self.build_windows(dataset) for record in window]

    def build_windows(self, dataset: Dataset) -> list[list[Record]]:
        """The records of each window, its closing watermarks last. A (container, path) is
        encoded once per window; each call gets its own event id, written into those bytes
        (the processor adds a record whose event id its window holds once, as a resend)."""
        windows: list[list[Record]] = []
        for window in range(dataset.windows):
            start_us = self.next_window_start_us
            encoded: dict[tuple[int, int], bytes] = {}
            records: list[Record] = []
            for call in range(dataset.calls_in_window(window)):
                container = call % dataset.containers
                path = (call // dataset.containers) % dataset.paths
                value = encoded.get((container, path))
                if value is None:
                    observed_us = start_us + 1 + (container * dataset.paths + path) % (self.window_us - 2)
                    value = codec.encode(call_event(container, path, observed_us), CALL_EVENT, self.registry)
                    encoded[(container, path)] = value
                records.append((container % self.partitions, container_id(container).encode(),
                                with_event_id(value, self.next_event_id())))
            self.next_window_start_us = start_us + self.window_us
            records.extend(self.watermarks(self.next_window_start_us))
            windows.append(records)
        return windows

    def next_event_id(self) -> str:
        self.events += 1
        return str(uuid.UUID(int=self.events, version=4))

    def watermarks(self, watermark_us: int) -> list[Record]:
        """One AgentWatermark on every partition, as an agent sends them."""
        self.sequence += 1
        value = codec.encode({"agent_id": AGENT_ID, "host": "bench-node", "watermark_us": watermark_us,
                              "sequence": self.sequence}, WATERMARK, self.registry)
        return [(partition, AGENT_ID.encode(), value) for partition in range(self.partitions)]
