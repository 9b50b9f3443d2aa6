"""The adaptive budget's decisions over (time, calls, new paths) samples."""

from __future__ import annotations

from runtime_signals.agent.budget import Action, Budget, BudgetSettings

S = 1_000_000_000


def _budget() -> Budget:
    return Budget(BudgetSettings(quiet_ns=5 * S, min_rate_per_s=1000, backoff_ns=10 * S, max_backoff_ns=25 * S))


def _feed(budget: Budget, start_s: int, end_s: int, rate: int, calls: int, new_paths_at: tuple[int, ...] = ()
          ) -> tuple[list[tuple[int, Action]], int]:
    actions = []
    for second in range(start_s, end_s):
        calls += rate
        action = budget.observe(0, second * S, calls, 1 if second in new_paths_at else 0)
        if action:
            actions.append((second, action))
    return actions, calls


def test_a_hot_probe_without_new_paths_is_detached_and_rearmed_with_growing_backoff() -> None:
    budget = _budget()
    budget.track(0, 0)
    actions, _ = _feed(budget, 1, 70, rate=50_000, calls=0, new_paths_at=(1,))
    # Quiet for 5 s after the last new path -> detach; back after 10 s, then 20 s, then 25 s (the cap).
    assert actions == [(6, Action.DETACH), (16, Action.REARM), (21, Action.DETACH), (41, Action.REARM),
                       (46, Action.DETACH)]
    assert budget.detached_ns(0, 70 * S) == (10 + 20 + 24) * S


def test_a_new_path_keeps_the_probe_attached_and_resets_the_backoff() -> None:
    budget = _budget()
    budget.track(0, 0)
    actions, calls = _feed(budget, 1, 17, rate=50_000, calls=0)
    assert actions == [(5, Action.DETACH), (15, Action.REARM)]
    # Re-armed, it finds a new path: stays attached for a quiet period, backoff back to 10 s.
    actions, _ = _feed(budget, 17, 40, rate=50_000, calls=calls, new_paths_at=(17,))
    assert actions == [(22, Action.DETACH), (32, Action.REARM), (37, Action.DETACH)]


def test_a_cold_probe_stays_attached_and_disabled_budget_never_acts() -> None:
    budget = _budget()
    budget.track(0, 0)
    assert _feed(budget, 1, 60, rate=500, calls=0)[0] == []
    off = Budget(BudgetSettings(enabled=False))
    off.track(0, 0)
    assert _feed(off, 1, 60, rate=1_000_000, calls=0)[0] == []


def test_a_failed_rearm_stays_detached_and_keeps_counting_the_time() -> None:
    budget = _budget()
    budget.track(0, 0)
    actions, calls = _feed(budget, 1, 16, rate=50_000, calls=0)
    assert actions[-1] == (15, Action.REARM)
    budget.rearm_failed(0, 15 * S)
    assert budget.detached_ns(0, 20 * S) == 15 * S
    assert budget.observe(0, 20 * S, calls, 0) is None
