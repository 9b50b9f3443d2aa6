"""A partition's event-time clock, from the AgentWatermark records on it. No I/O.

Every agent sends its promise ("no later call of mine is older than T") to every
partition. The partition's watermark is the smallest promise among the agents that are
still sending, so one agent that lags (clock skew, a slow drain) does not make another
agent's calls late. An agent that stops sending (it was stopped, its node died) would
hold every window open for ever; it is forgotten once the most advanced agent is more
than agent_idle_ms of *event time* ahead of it. Both rules depend on the order of records
in the partition only, never on the wall clock, so a replay computes the same watermarks.
The watermark never goes back.

What no single writer can do here (docs/processor.md, "What the clock trusts"):
- silence an agent by forging its id with a huge sequence number: an agent's promise is
  the highest it has made, whatever the sequence says. A sequence that goes back is only
  counted (sequence_regressions): a duplicate, or two writers claiming one id;
- push the clock far ahead: the engine clamps every promise to its record's broker
  timestamp before it gets here, so the most advanced agent is never ahead of the broker,
  and the idle rule measures every other agent against a time no agent chose.
Cost: O(log n) per promise for n agents (a heap of marks, stale entries dropped lazily).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from runtime_signals.processor.errors import ConfigError


@dataclass(frozen=True, slots=True, order=True)
class AgentMark:
    """The highest promise, and the highest sequence, applied from one agent."""

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
        # (promise, agent id) of every promise applied; an entry is current when the agent's
        # mark still holds that promise. The smallest current entry is the clock's candidate.
        self._heap: list[tuple[int, str]] = [(m.watermark_us, m.agent_id) for m in self._agents.values()]
        heapq.heapify(self._heap)
        # The most advanced agent is never forgotten, so the maximum ever applied is the
        # maximum over the agents known now.
        self._newest_us = max((m.watermark_us for m in self._agents.values()), default=0)
        self.sequence_regressions = 0

    def __len__(self) -> int:
        return len(self._agents)

    def knows(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def apply(self, agent_id: str, watermark_us: int, sequence: int) -> bool:
        """Take one AgentWatermark; True when the partition watermark rose."""
        known = self._agents.get(agent_id)
        if known is None:
            mark = AgentMark(agent_id, watermark_us, sequence)
        else:
            if sequence <= known.sequence:
                self.sequence_regressions += 1
            mark = AgentMark(agent_id, max(known.watermark_us, watermark_us), max(known.sequence, sequence))
            if mark == known:
                return False
        self._agents[agent_id] = mark
        if known is None or mark.watermark_us != known.watermark_us:
            heapq.heappush(self._heap, (mark.watermark_us, agent_id))
            self._newest_us = max(self._newest_us, mark.watermark_us)
        self._forget_idle()
        if len(self._heap) > 2 * len(self._agents) + 64:
            self._heap = [(m.watermark_us, m.agent_id) for m in self._agents.values()]
            heapq.heapify(self._heap)
        candidate_us = self._heap[0][0]
        if candidate_us > self.watermark_us:
            self.watermark_us = candidate_us
            return True
        return False

    def _forget_idle(self) -> None:
        """Drop the agents trailing the most advanced by more than the idle limit, and the
        stale heap entries in front, so the heap's head is the smallest current promise."""
        heap, agents = self._heap, self._agents
        while heap:
            promise_us, agent_id = heap[0]
            mark = agents.get(agent_id)
            if mark is None or mark.watermark_us != promise_us:
                heapq.heappop(heap)  # superseded by a later promise, or already forgotten
            elif promise_us < self._newest_us - self._idle_us:
                heapq.heappop(heap)
                del agents[agent_id]
            else:
                return

    def state(self) -> ClockState:
        return ClockState(self.watermark_us, tuple(sorted(self._agents.values())))
