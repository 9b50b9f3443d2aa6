"""Event-time tumbling windows, closed by agent watermarks. No faust, no I/O.

Rules (docs/processor.md restates them for operators):
- A call belongs to the window [start, start + size) that holds its observed_at_us;
  start is a multiple of size since the epoch.
- A partition's watermark comes from the AgentWatermark records on it (processor/watermarks.py:
  the smallest promise of the agents still sending, never going back). Agents send one to
  every partition every few hundred ms, so an idle partition still advances.
- A window closes when watermark >= end + allowed lateness. A call that arrives for a
  window that has closed is late: counted, handed back to the caller, never merged.
Everything here depends only on the order of records within a partition, which Kafka
fixes, so reprocessing the same topic closes the same windows with the same content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from runtime_signals.processor.errors import ConfigError

State = TypeVar("State")


class WindowKey(NamedTuple):
    """A container's window, ordered by start then container. A tuple: one is made per raw
    record to find its window, and a tuple's hash and comparison run in C."""

    start_us: int
    container_id: str


@dataclass(frozen=True)
class WindowSpec:
    size_ms: int
    allowed_lateness_ms: int = 0
    # Derived once (asked several times per raw record): the size, and size plus lateness.
    size_us: int = field(init=False, repr=False, compare=False)
    _closes_after_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ConfigError(f"window size_ms={self.size_ms}: must be positive (--window-ms)")
        if self.allowed_lateness_ms < 0:
            raise ConfigError(f"allowed_lateness_ms={self.allowed_lateness_ms}: must not be negative "
                              f"(--allowed-lateness-ms)")
        object.__setattr__(self, "size_us", self.size_ms * 1000)
        object.__setattr__(self, "_closes_after_us", (self.size_ms + self.allowed_lateness_ms) * 1000)

    def start_of(self, observed_at_us: int) -> int:
        return observed_at_us - observed_at_us % self.size_us

    def closes_at_us(self, start_us: int) -> int:
        """The watermark at which the window starting at start_us closes."""
        return start_us + self._closes_after_us


class PartitionWindows(Generic[State]):
    """Open windows of one input partition, keyed by (start, container)."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.watermark_us = 0
        self._open: dict[WindowKey, State] = {}

    def __len__(self) -> int:
        return len(self._open)

    def is_late(self, observed_at_us: int) -> bool:
        return self.spec.closes_at_us(self.spec.start_of(observed_at_us)) <= self.watermark_us

    def find(self, container_id: str, observed_at_us: int) -> State | None:
        """The open window holding this call, if it is open."""
        return self._open.get(WindowKey(self.spec.start_of(observed_at_us), container_id))

    def window_for(self, container_id: str, observed_at_us: int,
                   create: Callable[[WindowKey], State]) -> State:
        """The open window holding this call, created with create(key) on first use.
        Callers check is_late() first: a closed window must not be reopened."""
        key = WindowKey(self.spec.start_of(observed_at_us), container_id)
        state = self._open.get(key)
        if state is None:
            state = self._open[key] = create(key)
        return state

    def advance(self, watermark_us: int) -> Iterator[tuple[WindowKey, State]]:
        """Raise the watermark (never lower it) and yield the windows it closes, in
        (start, container) order, removing them."""
        if watermark_us <= self.watermark_us:
            return
        self.watermark_us = watermark_us
        closing = sorted(k for k in self._open if self.spec.closes_at_us(k.start_us) <= watermark_us)
        for key in closing:
            yield key, self._open.pop(key)

    def open_keys(self) -> list[WindowKey]:
        return sorted(self._open)

    def states(self) -> Iterator[State]:
        return iter(self._open.values())
