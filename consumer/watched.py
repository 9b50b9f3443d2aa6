"""How long a function was actually watched: from the agents' SignalStatistics, the time each
probe on it was attached while its agent ran, within a span. What makes "not observed" mean
something: "not observed while watched 43.7 s of 180 s" is a different claim from a full watch.

Each agent reports, every statistics interval, per probe, the time it was not watched in this
run of the agent (`detached_ns_by_probe`: detached by the adaptive budget, plus the agent's own
absence when its pinned probes did not survive it). Between two consecutive reports of one agent
both listing a probe, the probe was watched for the time between them minus the growth of that
figure; "the time between them" is the growth of the agent's monotonic run time (`run_ns`, read at
the same instant as the figure) where the reports carry it, the wall clock's otherwise.
Everything else counts as not watched, so the figure is a lower bound:
- time before an agent's first report or after its last one in the span (a report covers
  the interval it closes; an agent that died and never came back reported nothing after);
- an interval in which the agent restarted (its run time, `run_ns`, or the figure went down:
  both are per run), since how much of the interval it was down is not known;
- an interval that straddles an end of the span counts only as far as its watched time
  cannot have fallen outside the span (its unwatched time is placed inside).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runtime_signals.schemas.demangle import demangle, without_generics, without_parameters


@dataclass(frozen=True, slots=True)
class ProbeWatch:
    """One probe of one agent on the function asked about."""

    probe_id: str
    agent_id: str
    host: str
    watched_us: int       # attached while its agent ran, within the span (a lower bound)


@dataclass(frozen=True, slots=True)
class Watch:
    """How long a function was watched within [start_us, end_us), per probe of each agent."""

    function: str
    start_us: int
    end_us: int
    probes: tuple[ProbeWatch, ...] = ()
    reports: int = 0      # statistics records of the agents asked about, within the span

    @property
    def span_us(self) -> int:
        return max(0, self.end_us - self.start_us)

    def watched_us(self) -> int:
        """The longest any one agent watched the function (its probes on it are alternatives:
        an inlined copy, a second library holding it)."""
        by_agent: dict[str, int] = defaultdict(int)
        for probe in self.probes:
            by_agent[probe.agent_id] = max(by_agent[probe.agent_id], probe.watched_us)
        return max(by_agent.values(), default=0)


def probe_symbol(probe_id: str) -> str:
    """The function part of a probe id "BINARY:SYMBOL" (split at the first lone ':', as the
    agent names probes), or the dotted name of a Python probe "python:MODULE:QUALNAME"."""
    if probe_id.startswith("python:"):
        return probe_id[len("python:"):].replace(":", ".", 1)
    index = 0
    while True:
        index = probe_id.find(":", index)
        if index < 0:
            return probe_id
        if probe_id[index + 1:index + 2] == ":":
            index += 2
            continue
        return probe_id[index + 1:]


def names_of(symbol: str) -> set[str]:
    """Every name a user may give for a probed symbol: as probed, demangled, without its
    parameters, without generic arguments."""
    text = demangle(symbol) or symbol
    return {symbol, text, without_parameters(text), without_generics(without_parameters(text))}


def _restarted(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return int(after.get("run_ns", 0)) < int(before.get("run_ns", 0))


def _watched_between(before: Mapping[str, Any], after: Mapping[str, Any], detached_ns: int, inside_us: int) -> int:
    """Watched time between two reports of one run, of which ``inside_us`` lies in the span.
    Measured on the agent's monotonic clock when both carry it (run_ns), since wall-clock
    report times and detached times are read at one instant but the wall clock may be slewed
    or stepped; else on the wall clock. The unwatched time and the part outside the span are
    placed inside it, and everything is rounded down: the figure stays a lower bound."""
    interval_us = int(after["reported_at_us"]) - int(before["reported_at_us"])
    if int(before.get("run_ns", 0)) > 0:
        attached_us = (int(after["run_ns"]) - int(before["run_ns"]) - detached_ns) // 1000
    else:
        attached_us = interval_us - -(-detached_ns // 1000)
    return max(0, min(inside_us, attached_us - (interval_us - inside_us)))


def watched(function: str, reports: Iterable[Mapping[str, Any]], start_us: int, end_us: int,
            agents: set[str] | None = None) -> Watch:
    """How long the probes on ``function`` were watched within [start_us, end_us), from the
    SignalStatistics records of the agents (all, or those in ``agents``)."""
    by_agent: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for report in reports:
        if agents is None or report["agent_id"] in agents:
            by_agent[report["agent_id"]].append(report)
    probes: list[ProbeWatch] = []
    in_span = sum(1 for listed in by_agent.values() for r in listed if start_us <= r["reported_at_us"] <= end_us)
    for agent_id, listed in sorted(by_agent.items()):
        listed.sort(key=lambda r: r["reported_at_us"])
        wanted = sorted({p for r in listed for p in r["detached_ns_by_probe"] if function in names_of(probe_symbol(p))})
        if not wanted:
            continue
        for probe_id in wanted:
            total = 0
            for before, after in zip(listed, listed[1:], strict=False):
                first, last = before["detached_ns_by_probe"].get(probe_id), after["detached_ns_by_probe"].get(probe_id)
                if first is None or last is None or last < first or _restarted(before, after):
                    continue  # not attached yet, let go, or the agent restarted in between
                low, high = max(before["reported_at_us"], start_us), min(after["reported_at_us"], end_us)
                if high > low:
                    total += _watched_between(before, after, last - first, high - low)
            probes.append(ProbeWatch(probe_id, agent_id, listed[-1]["host"], total))
    return Watch(function, start_us, end_us, tuple(probes), in_span)
