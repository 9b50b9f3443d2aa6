"""The agent's health figures: one Snapshot per report, published as SignalStatistics and
served on /metrics (agent/metrics.py), so both always show the same numbers.

Every figure counts calls, never records: a folded record of 1,000 calls delivered is
1,000 delivered. At any moment
    total_events = delivered_events + dropped_events + pending_events + (calls still in the
                   kernel's dedup map or ring buffer, collected at the next tick)
and after a clean shutdown the last term is 0.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime_signals.agent.bpfsys import ProgramStats

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProbeFigures:
    probe_id: str
    attached: bool
    calls: int
    detached_ns: int
    detach_count: int


@dataclass(frozen=True)
class Snapshot:
    reported_at_us: int
    total_events: int
    events_per_second: float
    unique_call_paths: int
    buffer_utilization_percent: float
    dropped_by_reason: Mapping[str, int]
    delivered_events: int
    pending_events: int
    spool_bytes: int
    cpu_overhead_percent: float
    agent_cpu_ns: int
    bpf_run_time_ns: int
    memory_usage_bytes: int
    probes: tuple[ProbeFigures, ...] = field(default_factory=tuple)
    caches: Mapping[str, int] = field(default_factory=dict)  # entries per long-lived cache/queue
    # Unwind maps (agent/unwind.py): rows used and capacity, map bytes, binaries by state.
    # On /metrics; their memory is in memory_usage_bytes with the other maps.
    unwind: Mapping[str, int] = field(default_factory=dict)
    # How long this run of the agent had lasted (monotonic), read at the instant the probes'
    # detached figures were: the clock a consumer measures watched time in.
    run_ns: int = 0

    @property
    def dropped_events(self) -> int:
        return sum(self.dropped_by_reason.values())

    def record(self, agent_id: str, host: str) -> dict[str, Any]:
        """The SignalStatistics record (schemas/SignalStatistics.avsc)."""
        return {
            "total_events": self.total_events,
            "events_per_second": self.events_per_second,
            "unique_call_paths": self.unique_call_paths,
            "buffer_utilization_percent": self.buffer_utilization_percent,
            "dropped_events": self.dropped_events,
            "cpu_overhead_percent": self.cpu_overhead_percent,
            "memory_usage_bytes": self.memory_usage_bytes,
            "agent_id": agent_id,
            "host": host,
            "reported_at_us": self.reported_at_us,
            "dropped_by_reason": dict(self.dropped_by_reason),
            "delivered_events": self.delivered_events,
            "pending_events": self.pending_events,
            "spool_bytes": self.spool_bytes,
            "detached_ns_by_probe": {p.probe_id: p.detached_ns for p in self.probes},
            "run_ns": self.run_ns,
        }


def agent_cpu_ns() -> int:
    """User + system CPU time of every thread of this process (librdkafka's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def resident_bytes() -> int:
    try:
        return int(open("/proc/self/statm").read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True)
class KernelFigures:
    """What the BPF side reports (agent/probes.py CallTracer)."""

    counters: Mapping[str, int]  # summed over probes, names of wire.COUNTER_NAMES
    program: ProgramStats
    ringbuf_peak_bytes: int
    ringbuf_size_bytes: int
    map_memory_bytes: int


@dataclass(frozen=True)
class DeliveryFigures:
    """What the Kafka side reports (agent/publisher.py Publisher)."""

    delivered_calls: int
    pending_calls: int
    dropped_calls_by_reason: Mapping[str, int]
    spool_bytes: int


@dataclass(frozen=True)
class BaseFigures:
    """Figures earlier runs of this agent identity reached (agent/state.py): added to this
    run's, so the statistics continue across restarts instead of starting from 0."""

    total_calls: int = 0
    delivered_calls: int = 0
    dropped_calls: Mapping[str, int] = field(default_factory=dict)


def account(counters: Mapping[str, int], delivery: DeliveryFigures, agent_dropped_calls: Mapping[str, int],
            base: BaseFigures) -> tuple[int, int, dict[str, int]]:
    """(total, delivered, dropped by reason) since the identity began, from this run's kernel
    counters (summed over probes), delivery figures and agent drops, plus the base."""
    calls = counters.get("calls", 0)
    total = max(counters.get("hits", calls), calls)
    dropped: dict[str, int] = {
        # Trapped into the uprobe without the program running: mostly while a probe was
        # being attached or detached (agent/tracefs.py), or skipped by the kernel.
        "probe_transition": total - calls,
        "ringbuf_full": counters.get("drop_ringbuf_full", 0),
        "rate_limited": counters.get("drop_rate_limited", 0),
        "nested": counters.get("drop_nested", 0),
    }
    for source in (delivery.dropped_calls_by_reason, agent_dropped_calls, base.dropped_calls):
        for reason, lost in source.items():
            dropped[reason] = dropped.get(reason, 0) + lost
    return total + base.total_calls, delivery.delivered_calls + base.delivered_calls, dropped


class StatsTracker:
    """Turns cumulative figures into a Snapshot, with rates over the interval since the
    previous one."""

    def __init__(self) -> None:
        self._previous: tuple[int, int, int, int] | None = None  # (monotonic ns, total, cpu ns, bpf ns)
        self._started = (time.monotonic_ns(), 0, agent_cpu_ns(), 0)

    def take(self, kernel: KernelFigures, delivery: DeliveryFigures, unique_call_paths: int,
             agent_dropped_calls: Mapping[str, int], probes: tuple[ProbeFigures, ...],
             caches: Mapping[str, int] | None = None, base: BaseFigures | None = None,
             unwind: Mapping[str, int] | None = None, taken_at: tuple[int, int] | None = None) -> Snapshot:
        """``taken_at``: (monotonic ns, wall-clock µs) read together at the instant the probe
        figures were, so that the report's time, its run time and its detached times agree."""
        now_ns, wall_us = taken_at or (time.monotonic_ns(), time.time_ns() // 1000)
        cpu_ns = agent_cpu_ns()
        total, delivered, dropped = account(kernel.counters, delivery, agent_dropped_calls, base or BaseFigures())
        before_ns, before_total, before_cpu, before_bpf = self._previous or self._started
        if self._previous is None:  # the rate of this run: earlier runs' calls are not in it
            before_total = (base or BaseFigures()).total_calls
        elapsed_ns = max(1, now_ns - before_ns)
        bpf_ns = kernel.program.run_time_ns
        self._previous = (now_ns, total, cpu_ns, bpf_ns)
        return Snapshot(
            reported_at_us=wall_us,
            total_events=total,
            events_per_second=(total - before_total) * 1e9 / elapsed_ns,
            unique_call_paths=unique_call_paths,
            buffer_utilization_percent=100.0 * kernel.ringbuf_peak_bytes / max(1, kernel.ringbuf_size_bytes),
            dropped_by_reason=dropped,
            delivered_events=delivered,
            pending_events=delivery.pending_calls,
            spool_bytes=delivery.spool_bytes,
            cpu_overhead_percent=100.0 * ((cpu_ns - before_cpu) + (bpf_ns - before_bpf)) / elapsed_ns,
            agent_cpu_ns=cpu_ns,
            bpf_run_time_ns=bpf_ns,
            memory_usage_bytes=resident_bytes() + kernel.map_memory_bytes,
            probes=probes,
            caches=dict(caches or {}),
            run_ns=now_ns - self._started[0],
            unwind=dict(unwind or {}),
        )
