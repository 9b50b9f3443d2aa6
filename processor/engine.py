"""Raw records in, summary records out: the processor's logic for one worker, no I/O.

The faust app feeds it each raw record with its partition, and sends what it returns.
All state is per input partition, so a partition can move to another worker whole.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from schemas import codec
from schemas.errors import SchemaError

from .aggregate import WindowAggregate, micros, summary_record
from .symbolize import NoSymbols, SymbolSource
from .windows import PartitionWindows, WindowKey, WindowSpec

log = logging.getLogger(__name__)

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
CALL_PATH = "io.runtimesignals.ObservedCallPath"


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: `kind` is "summary" or "path"."""

    kind: str
    key: bytes
    value: bytes


def summary_key(container_id: str, window_start_us: int) -> bytes:
    """Key of a window's summary: one per container per window, so compaction keeps the
    latest emission of each window and a consumer can look one up."""
    return f"{container_id}|{window_start_us}".encode()


class Engine:
    """Windows and aggregates of the partitions this worker owns."""

    def __init__(self, spec: WindowSpec, registry: codec.SchemaRegistry | None = None,
                 symbols: SymbolSource | None = None) -> None:
        self.spec = spec
        self._registry = registry or codec.SchemaRegistry.default()
        self._symbols = symbols or NoSymbols()
        self._partitions: dict[int, PartitionWindows[WindowAggregate]] = {}
        self.counts: Counter[str] = Counter()

    def partition(self, partition: int) -> PartitionWindows[WindowAggregate]:
        windows = self._partitions.get(partition)
        if windows is None:
            windows = self._partitions[partition] = PartitionWindows(self.spec)
        return windows

    def open_windows(self) -> int:
        return sum(len(w) for w in self._partitions.values())

    def forget_partition(self, partition: int) -> None:
        """Drop a revoked partition's state; its next owner rebuilds it from the topic."""
        self._partitions.pop(partition, None)

    def handle(self, partition: int, value: bytes) -> list[Output]:
        """Process one raw record; returns the outputs of any windows it closed."""
        try:
            decoded = codec.decode(value, self._registry)
        except SchemaError as exc:
            self.counts["undecodable"] += 1
            log.warning("partition %d: undecodable record skipped: %s", partition, exc)
            return []
        if decoded.schema_name == WATERMARK:
            self.counts["watermarks"] += 1
            return self._advance(partition, micros(decoded.record["watermark_us"]))
        if decoded.schema_name == CALL_EVENT:
            self._add(partition, decoded.record)
            return []
        self.counts["unexpected_schema"] += 1
        log.warning("partition %d: record of schema %s is not expected on the raw topic",
                    partition, decoded.schema_name)
        return []

    def _add(self, partition: int, event: dict[str, Any]) -> None:
        windows = self.partition(partition)
        observed_us = micros(event["observed_at_us"])
        if windows.is_late(observed_us):
            self.counts["late_events"] += event["observation_count"]
            return
        spec = self.spec
        window = windows.window_for(
            event["container_id"], observed_us,
            lambda key: WindowAggregate(key, key.start_us + spec.size_us),
        )
        window.add(event)
        self.counts["events"] += event["observation_count"]

    def _advance(self, partition: int, watermark_us: int) -> list[Output]:
        outputs: list[Output] = []
        for key, window in self.partition(partition).advance(watermark_us):
            outputs.extend(self._emit(key, window))
        return outputs

    def _emit(self, key: WindowKey, window: WindowAggregate) -> list[Output]:
        summary, paths = summary_record(window, self._symbols)
        outputs = [Output("summary", summary_key(key.container_id, key.start_us),
                          codec.encode(summary, SUMMARY, self._registry))]
        for path in paths:
            path_key = f"{key.container_id}|{key.start_us}|{path['callstack_hash']}".encode()
            outputs.append(Output("path", path_key, codec.encode(path, CALL_PATH, self._registry)))
        self.counts["windows_closed"] += 1
        log.debug("window closed: container=%s start_us=%d paths=%d events=%d",
                  key.container_id, key.start_us, len(paths), window.total_events)
        return outputs
