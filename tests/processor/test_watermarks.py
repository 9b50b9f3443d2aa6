"""The partition's event clock: the slowest live agent sets it; silent agents stop holding it."""

from __future__ import annotations

import pytest

from runtime_signals.processor.errors import ConfigError
from runtime_signals.processor.watermarks import EventClock


def test_the_slowest_agent_sets_the_watermark_so_its_calls_are_not_late() -> None:
    clock = EventClock(agent_idle_ms=30_000)
    assert clock.apply("a", 10_000_000, 1)
    assert not clock.apply("b", 8_000_000, 1)  # b is behind: the watermark may not pass it
    assert clock.watermark_us == 10_000_000     # but it never goes back either
    assert not clock.apply("a", 12_000_000, 2)
    assert clock.apply("b", 11_000_000, 2) and clock.watermark_us == 11_000_000


def test_duplicated_and_reordered_watermarks_never_lower_an_agent_and_are_counted() -> None:
    clock = EventClock(agent_idle_ms=30_000)
    clock.apply("a", 5_000_000, 7)
    assert not clock.apply("a", 5_000_000, 7)   # a duplicate changes nothing
    assert not clock.apply("a", 4_000_000, 6)   # a reordered older copy cannot lower the promise
    assert clock.watermark_us == 5_000_000 and clock.sequence_regressions == 2


def test_a_forged_huge_sequence_does_not_silence_the_real_agent() -> None:
    clock = EventClock(agent_idle_ms=30_000)
    clock.apply("agent-1", 5_000_000, 1)
    clock.apply("agent-1", 5_000_001, 2**63 - 1)  # someone else claiming agent-1
    assert clock.apply("agent-1", 9_000_000, 2)   # the real agent still moves the clock
    assert clock.watermark_us == 9_000_000 and clock.sequence_regressions == 1


def test_an_agent_that_went_silent_is_forgotten_after_the_idle_limit_in_event_time() -> None:
    clock = EventClock(agent_idle_ms=3_000)
    clock.apply("a", 1_000_000, 1)
    clock.apply("gone", 1_000_000, 1)
    clock.apply("a", 4_000_000, 2)        # 3 s ahead of "gone": still within the limit
    assert clock.watermark_us == 1_000_000
    assert clock.apply("a", 4_000_001, 3)  # now beyond it: "gone" no longer holds windows open
    assert clock.watermark_us == 4_000_001 and len(clock) == 1


def test_state_round_trips() -> None:
    clock = EventClock(agent_idle_ms=3_000)
    clock.apply("b", 2_000_000, 4)
    clock.apply("a", 2_500_000, 9)
    again = EventClock(3_000, clock.state())
    assert again.state() == clock.state() and again.watermark_us == 2_000_000
    assert not again.apply("a", 2_600_000, 9)


def test_the_idle_limit_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--agent-idle-ms"):
        EventClock(agent_idle_ms=0)
