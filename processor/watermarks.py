"""A partition's event-time clock, from the AgentWatermark records on it. No I/O.

Every agent sends its promise ("no later call of mine is older than T") to every
partition. The partition's watermark is the smallest promise among the agents that are
still sending, so one agent that lags (clock skew, a slow drain) does not make another
agent's calls late. An agent that stops sending (it was stopped, its node died) would
hold every window open for ever; it is forgotten once the most advanced agent is more
than agent_idle_ms of *event time* ahead of it. Both rules depend on the order of records
in the partition only, never on the wall clock, so a replay computes the same watermarks.
The watermark never goes back.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime_signals.processor.errors import ConfigError


@dataclass(frozen=True, slots=True, order=True)
class AgentMark:
    """The last promise applied from one agent."""

    agent_id: str
    watermark_us: int
    sequence: int


@dataclass(frozen=True, slots=True)
class ClockState:
    """Everything an EventClock knows; checkpoints store it (processor/checkpoint.py)."""

    watermark_us: int
    agents: tuple[AgentMark, ...]


class EventClock:
    def __init__(self, agent_idle_ms: int, state: ClockState | None = None) -> None:
        if agent_idle_ms <= 0:
            raise ConfigError(f"agent_idle_ms={agent_idle_ms}: must be positive (--agent-idle-ms)")
        self._idle_us = agent_idle_ms * 1000
        self.watermark_us = state.watermark_us if state else 0
        self._agents: dict[str, AgentMark] = {m.agent_id: m for m in state.agents} if state else {}

    def __len__(self) -> int:
        return len(self._agents)

    def apply(self, agent_id: str, watermark_us: int, sequence: int) -> bool:
        """Take one AgentWatermark; True when the partition watermark rose. A promise whose
        sequence is not above the agent's last applied one is a duplicate or reordered
        copy and is ignored."""
        known = self._agents.get(agent_id)
        if known is not None and sequence <= known.sequence:
            return False
        self._agents[agent_id] = AgentMark(agent_id, watermark_us, sequence)
        newest_us = max(m.watermark_us for m in self._agents.values())
        idle = [a for a, m in self._agents.items() if m.watermark_us < newest_us - self._idle_us]
        for gone in idle:
            del self._agents[gone]
        candidate_us = min(m.watermark_us for m in self._agents.values())
        if candidate_us > self.watermark_us:
            self.watermark_us = candidate_us
            return True
        return False

    def state(self) -> ClockState:
        return ClockState(self.watermark_us, tuple(sorted(self._agents.values())))
