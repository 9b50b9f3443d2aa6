"""StepFirst.wait_first, which faust's fetch loop calls once per record
(processor/faust_config.py): a delivery that finishes at once runs in place, without a task;
one that has to wait still finishes, or is cut short by the flow's suspension, as in faust."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from runtime_signals.processor.faust_config import StepFirst


def _run(body: Any) -> Any:
    return asyncio.run(body())


def test_a_delivery_that_does_not_wait_runs_in_the_callers_task_and_wins() -> None:
    async def body() -> None:
        seen: dict[str, Any] = {}

        async def deliver() -> str:
            seen["task"] = asyncio.current_task()
            return "delivered"

        async def suspended() -> None:
            seen["suspend_waited"] = True

        other = suspended()
        results = await StepFirst().wait_first(deliver(), other)
        assert seen["task"] is asyncio.current_task()  # no task per record
        assert results.results == ["delivered"] and not results.stopped
        assert "suspend_waited" not in seen  # dropped unstarted,
        assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED  # and closed (no warning)

    _run(body)


def test_a_delivery_that_waits_is_finished_by_a_task() -> None:
    async def body() -> None:
        room = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("before")
            value = await room  # a full buffer: waits for room
            steps.append(f"after {value}")
            await asyncio.sleep(0)  # a bare yield on the way is handed up as well
            return "delivered"

        flow_suspended = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, room.set_result, "room")
        results = await StepFirst().wait_first(deliver(), flow_suspended.wait())
        assert steps == ["before", "after room"]
        assert results.results == ["delivered"] and not results.stopped

    _run(body)


def test_a_waiting_delivery_is_cancelled_when_the_flow_is_suspended() -> None:
    async def body() -> None:
        outcome: list[str] = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()  # blocked, e.g. on flow control
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        flow_suspended = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, flow_suspended.set)
        results = await StepFirst().wait_first(deliver(), flow_suspended.wait())
        await asyncio.sleep(0)  # let the cancellation reach the delivery
        assert len(results.done) == 1 and results.results == [True]  # the suspension won
        assert outcome == ["cancelled"]

    _run(body)


def test_an_error_raised_before_the_first_wait_reaches_the_fetch_loop() -> None:
    async def body() -> None:
        async def deliver() -> None:
            raise ValueError("undecodable")

        async def suspended() -> None:
            pass

        other = suspended()
        with pytest.raises(ValueError, match="undecodable"):
            await StepFirst().wait_first(deliver(), other)
        assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED  # not left to warn "never awaited"

    _run(body)
