"""Checkpoints: where a partition can restart exactly (docs/processor.md, "Exactness").

A checkpoint is a ProcessorCheckpoint record on the worker group's own compacted topic,
"<raw topic>.checkpoints.<app id>", whose partition p holds the checkpoints of raw
partition p, so the last record of a partition is its current checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime_signals.processor.errors import CheckpointError
from runtime_signals.processor.watermarks import AgentMark, ClockState
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError

CHECKPOINT = "io.runtimesignals.ProcessorCheckpoint"

# (close offset, window start, container): a window's place in a partition's emission order.
WindowMarker = tuple[int, int, str]


def checkpoint_topic(raw_topic: str, app_id: str) -> str:
    """The checkpoint topic of one worker group reading one raw topic."""
    return f"{raw_topic}.checkpoints.{app_id}"


@dataclass(frozen=True)
class Checkpoint:
    raw_topic: str
    partition: int
    replay_from_offset: int
    suppress_until_offset: int
    window: WindowSpec
    agent_idle_ms: int
    clock: ClockState            # at replay_from_offset
    emitted_through: WindowMarker | None

    def record(self) -> dict[str, Any]:
        marker = self.emitted_through
        return {
            "raw_topic": self.raw_topic,
            "partition": self.partition,
            "replay_from_offset": self.replay_from_offset,
            "suppress_until_offset": self.suppress_until_offset,
            "window_ms": self.window.size_ms,
            "allowed_lateness_ms": self.window.allowed_lateness_ms,
            "agent_idle_ms": self.agent_idle_ms,
            "watermark_us": self.clock.watermark_us,
            "agents": [{"agent_id": m.agent_id, "watermark_us": m.watermark_us, "sequence": m.sequence}
                       for m in self.clock.agents],
            "emitted_through": None if marker is None else {
                "close_offset": marker[0], "window_start_us": marker[1], "container_id": marker[2]},
        }

    def encode(self, registry: codec.SchemaRegistry) -> bytes:
        return codec.encode(self.record(), CHECKPOINT, registry)

    @classmethod
    def decode(cls, value: bytes, registry: codec.SchemaRegistry, where: str) -> Checkpoint:
        try:
            record = codec.decode(value, registry, CHECKPOINT).record
        except SchemaError as exc:
            raise CheckpointError(f"{where}: not a readable ProcessorCheckpoint ({exc}); delete the "
                                  f"checkpoint topic to reprocess from the committed offsets") from exc
        marker = record["emitted_through"]
        return cls(
            raw_topic=record["raw_topic"],
            partition=record["partition"],
            replay_from_offset=record["replay_from_offset"],
            suppress_until_offset=record["suppress_until_offset"],
            window=WindowSpec(record["window_ms"], record["allowed_lateness_ms"]),
            agent_idle_ms=record["agent_idle_ms"],
            clock=ClockState(record["watermark_us"], tuple(
                AgentMark(a["agent_id"], a["watermark_us"], a["sequence"]) for a in record["agents"])),
            emitted_through=None if marker is None else (
                marker["close_offset"], marker["window_start_us"], marker["container_id"]),
        )

    def check_settings(self, window: WindowSpec, agent_idle_ms: int, where: str) -> None:
        """A checkpoint only replays right under the settings that wrote it."""
        if (self.window, self.agent_idle_ms) != (window, agent_idle_ms):
            raise CheckpointError(
                f"{where}: written with --window-ms {self.window.size_ms} --allowed-lateness-ms "
                f"{self.window.allowed_lateness_ms} --agent-idle-ms {self.agent_idle_ms}; this worker has "
                f"{window.size_ms}/{window.allowed_lateness_ms}/{agent_idle_ms}. Start it with the same "
                f"settings, or with a new --app-id to reprocess the raw topic under the new ones")
