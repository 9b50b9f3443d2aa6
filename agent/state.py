"""What survives an agent restart beside the spool: its identity, its cumulative figures and
what its probes and pinned maps were (agent-state.json in agent.spool_dir).

A restarted agent keeps its agent_id (the processor's watermark clock and every statistic
are per agent id), continues its watermark sequence, and continues its figures from where
the last state said they were, so that SignalStatistics keep
    total_events = delivered_events + dropped_events + pending_events (+ calls in the kernel)
across restarts. Written with write-then-rename at every watermark tick and at stop: a
crash leaves the previous complete state, at most one tick old.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime_signals.agent.spool import write_atomically

log = logging.getLogger(__name__)

STATE_FILE = "agent-state.json"


@dataclass
class ProbeSite:
    """One probe of the program: what it is called and where it is attached."""

    probe_id: str
    symbol: str
    path: str
    file_offset: int


@dataclass
class AgentState:
    agent_id: str
    restarts: int = 0
    watermark_sequence: int = 0
    written_at_us: int = 0
    clean_stop: bool = False
    # Figures since the identity was created, as of written_at_us (calls, never records).
    total_calls: int = 0
    delivered_calls: int = 0
    dropped_calls: dict[str, int] = field(default_factory=dict)
    pending_calls: int = 0
    # The program of the run that wrote this: its pin directory, record layout and probes,
    # and its kernel counters as of written_at_us (the base a successor's reading adds to).
    pin_dir: str | None = None
    max_frames: int = 0
    record_bytes: int = 0  # sizeof(struct call_event): 0 in states written before it was kept
    probes: dict[int, ProbeSite] = field(default_factory=dict)
    kernel_counters: dict[int, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def new(cls, host: str | None = None) -> AgentState:
        return cls(agent_id=f"{host or socket.gethostname()}/{uuid.uuid4().hex[:12]}")

    @classmethod
    def load(cls, directory: Path) -> AgentState | None:
        """The state in directory, or None when there is none (first start). An unreadable
        one is set aside (renamed, logged): the agent then starts as a new identity."""
        path = directory / STATE_FILE
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            aside = path.with_suffix(f".unreadable-{int(time.time())}")
            path.replace(aside)
            log.error("agent state %s is unreadable (%s): kept as %s; starting as a new agent identity", path, exc,
                      aside)
            return None
        probes = {int(k): ProbeSite(**v) for k, v in data.pop("probes", {}).items()}
        counters = {int(k): dict(v) for k, v in data.pop("kernel_counters", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known}, probes=probes, kernel_counters=counters)

    def save(self, directory: Path) -> None:
        self.written_at_us = time.time_ns() // 1000
        data = asdict(self)
        write_atomically(directory / STATE_FILE, json.dumps(data, sort_keys=True).encode())
