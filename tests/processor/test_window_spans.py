"""A folded record that spans a window boundary is counted, logged and refused in config
(issue 13, point 5): the processor cannot split it, so it says so instead of silently
moving calls into another window."""

from __future__ import annotations

import logging

import pytest

from runtime_signals.config import ProcessorSection
from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec

REGISTRY = codec.SchemaRegistry.default()
T0_US = 1_700_000_000_000_000  # on a second boundary


def folded(first_us: int, span_us: int, count: int) -> bytes:
    return codec.encode({
        "event_id": "6f1c1f4e-9a4b-4c55-8f0e-1f2a3b4c5d6e", "container_id": "c1", "pid": 1, "tid": 1,
        "timestamp_ns": 5_000_000, "symbol": "f", "function_address": 0x1000, "stack_trace": [0x1000],
        "runtime_type": "NATIVE", "received_at_us": first_us, "observed_at_us": first_us,
        "observation_count": count, "last_timestamp_ns": 5_000_000 + span_us * 1000,
    }, "RuntimeCallEvent", REGISTRY)


def test_a_record_spanning_a_boundary_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(EngineSettings(WindowSpec(1000), "raw"), NoSymbols(), REGISTRY)
    engine.assign(0, None)
    engine.handle(0, 0, b"c1", folded(T0_US + 100_000, 800_000, 5))   # inside one window
    with caplog.at_level(logging.WARNING):
        engine.handle(0, 1, b"c1", folded(T0_US + 900_000, 200_000, 7))  # 0.9 s .. 1.1 s
    assert engine.counts["records_spanning_windows"] == 1
    assert engine.counts["calls_spanning_windows"] == 7
    assert "multiple of the agents' --watermark-interval-ms" in caplog.text


def test_window_lengths_that_break_attribution_are_refused() -> None:
    assert ProcessorSection(window_ms=60_000, agent_flush_interval_ms=500).problems() == []
    (field, message), = ProcessorSection(window_ms=1_250, agent_flush_interval_ms=500).problems()
    assert field == "window_ms" and "not a multiple of agent_flush_interval_ms 500" in message
