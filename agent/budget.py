"""The adaptive probe budget: detach a probe whose calls are well known, re-arm it later.

A uprobe hit costs the workload a trap into the kernel (about 1 µs on bare metal, 15 µs
and more under some hypervisors) whether or not the program does anything, so dedup and
rate limits cannot make a hot function cheap: only removing the probe can. A probe that
is called often and has shown no new call path for `quiet_ns` is detached; it is
re-armed after a back-off, which doubles each time nothing new turns up (up to
`max_backoff_ns`) and resets when a re-armed probe finds a new path. While detached,
calls are not observed at all: the time spent detached is reported per probe.

Pure logic over (time, cumulative calls, new paths) samples; the collector applies the
decisions to the tracer.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from runtime_signals.agent.errors import ConfigError

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class BudgetSettings:
    enabled: bool = True
    quiet_ns: int = 5 * _NS_PER_S        # no new call path for this long...
    min_rate_per_s: float = 1000.0       # ...while called at least this often: detach
    backoff_ns: int = 60 * _NS_PER_S     # first detached spell
    max_backoff_ns: int = 600 * _NS_PER_S

    def __post_init__(self) -> None:
        if self.quiet_ns <= 0 or self.backoff_ns <= 0 or self.max_backoff_ns < self.backoff_ns:
            raise ConfigError(f"budget quiet={self.quiet_ns}ns backoff={self.backoff_ns}ns "
                              f"max_backoff={self.max_backoff_ns}ns: all must be positive and "
                              "max_backoff >= backoff")
        if self.min_rate_per_s < 0:
            raise ConfigError(f"budget min rate {self.min_rate_per_s}/s must be >= 0")


class Action(enum.Enum):
    DETACH = "detach"
    REARM = "rearm"


@dataclass
class ProbeBudget:
    """One probe's state; times are monotonic nanoseconds."""

    armed: bool
    armed_since_ns: int
    last_new_path_ns: int
    backoff_ns: int
    rearm_at_ns: int = 0
    detached_since_ns: int = 0
    detached_total_ns: int = 0
    detach_count: int = 0
    samples: deque[tuple[int, int]] = field(default_factory=deque)  # (time, cumulative calls)

    def detached_ns(self, now_ns: int) -> int:
        """Time spent detached so far, the current spell included."""
        return self.detached_total_ns + (0 if self.armed else now_ns - self.detached_since_ns)


class Budget:
    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self._probes: dict[int, ProbeBudget] = {}

    def track(self, probe_index: int, now_ns: int) -> None:
        """Start watching a probe that has just been attached."""
        self._probes[probe_index] = ProbeBudget(armed=True, armed_since_ns=now_ns, last_new_path_ns=now_ns,
                                                backoff_ns=self.settings.backoff_ns)

    def state(self, probe_index: int) -> ProbeBudget | None:
        return self._probes.get(probe_index)

    def detached_ns(self, probe_index: int, now_ns: int) -> int:
        probe = self._probes.get(probe_index)
        return probe.detached_ns(now_ns) if probe else 0

    def observe(self, probe_index: int, now_ns: int, calls_total: int, new_paths: int) -> Action | None:
        """Feed one sample; returns what to do to the probe now, if anything."""
        probe = self._probes.get(probe_index)
        if probe is None or not self.settings.enabled:
            return None
        if not probe.armed:
            if now_ns >= probe.rearm_at_ns:
                probe.armed = True
                probe.armed_since_ns = probe.last_new_path_ns = now_ns
                probe.detached_total_ns += now_ns - probe.detached_since_ns
                probe.samples.clear()
                probe.samples.append((now_ns, calls_total))
                return Action.REARM
            return None
        if new_paths:
            if probe.detach_count and now_ns > probe.armed_since_ns:
                # A re-armed probe found something new: its paths are not all known yet.
                probe.backoff_ns = self.settings.backoff_ns
            probe.last_new_path_ns = now_ns
        probe.samples.append((now_ns, calls_total))
        window_start = now_ns - self.settings.quiet_ns
        while len(probe.samples) > 1 and probe.samples[1][0] <= window_start:
            probe.samples.popleft()
        if now_ns - probe.last_new_path_ns < self.settings.quiet_ns:
            return None
        first_ns, first_calls = probe.samples[0]
        elapsed_ns = now_ns - first_ns
        if elapsed_ns <= 0:
            return None
        rate_per_s = (calls_total - first_calls) * _NS_PER_S / elapsed_ns
        if rate_per_s < self.settings.min_rate_per_s:
            return None
        probe.armed = False
        probe.detached_since_ns = now_ns
        probe.rearm_at_ns = now_ns + probe.backoff_ns
        probe.backoff_ns = min(probe.backoff_ns * 2, self.settings.max_backoff_ns)
        probe.detach_count += 1
        return Action.DETACH

    def rearm_failed(self, probe_index: int, now_ns: int) -> None:
        """The probe could not be attached again (its file is gone?): stay detached, retry later."""
        probe = self._probes.get(probe_index)
        if probe is None:
            return
        probe.detached_total_ns -= now_ns - probe.detached_since_ns  # undo the spell's closing
        probe.armed = False
        probe.rearm_at_ns = now_ns + probe.backoff_ns
