"""What the agent builds from its checked settings (runtime_signals.config.schema.AgentSettings):
the objects of its own modules, whose own checks therefore never fire at start."""

from __future__ import annotations

from runtime_signals.agent.budget import BudgetSettings
from runtime_signals.agent.probes import ProbeLimits, TracerSettings
from runtime_signals.config.schema import AgentSettings

_NS_PER_S = 1_000_000_000


def probe_limits(agent: AgentSettings) -> ProbeLimits:
    return ProbeLimits(dedup=agent.dedup, rate_per_cpu_s=agent.rate_limit_per_s, burst=agent.rate_burst)


def budget_settings(agent: AgentSettings) -> BudgetSettings:
    return BudgetSettings(enabled=agent.budget, quiet_ns=int(agent.budget_quiet_s * _NS_PER_S),
                          min_rate_per_s=agent.budget_min_rate_per_s,
                          backoff_ns=int(agent.budget_backoff_s * _NS_PER_S),
                          max_backoff_ns=int(agent.budget_max_backoff_s * _NS_PER_S))


def tracer_settings(agent: AgentSettings) -> TracerSettings:
    return TracerSettings(ringbuf_pages=agent.ringbuf_pages, dedup_entries=agent.dedup_entries,
                          unwind_rows=agent.unwind_rows)
