"""Fuzzing the codec, the intake and the engine with Hypothesis: random bytes, valid
records with hostile field values, and random sequences of them. Whatever comes in, nothing
raises, every rejected record names a known reason, and accepted calls are counted exactly."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.intake import (
    REASONS,
    CallRecord,
    Rejected,
    WatermarkRecord,
    read_raw,
)
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError
from tests.processor.raw_records import (
    BASE_US,
    REGISTRY,
    call_event,
    encode_call,
    encode_watermark,
)

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.one_of(st.text(max_size=40), st.text(min_size=5000, max_size=5001), st.just("_Z" + "N1aI" * 2000))
DIGEST = st.one_of(st.none(), st.just("sha256:" + "ab" * 32), st.text(max_size=80))
FRAME = st.fixed_dictionaries({"address": LONG, "binary_digest": DIGEST,
                               "binary_offset": st.one_of(st.none(), LONG), "library": st.one_of(st.none(), TEXT)})
OVERRIDES = st.fixed_dictionaries({}, optional={
    "container_id": TEXT, "pid": st.integers(-(2**31), 2**31 - 1), "observation_count": LONG,
    "observed_at_us": LONG, "received_at_us": LONG, "symbol": st.one_of(st.none(), TEXT),
    "stack_trace": st.lists(LONG, max_size=300), "stack_frames": st.lists(FRAME, max_size=5),
    "agent_id": TEXT, "purl": st.one_of(st.none(), TEXT),
})


@st.composite
def raw_values(draw: st.DrawFn) -> bytes:
    """A raw-topic value: a call with hostile fields, a watermark with hostile fields, a
    valid record with a flipped byte or cut short, or plain random bytes."""
    kind = draw(st.sampled_from(["call", "watermark", "mutated", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "watermark":
        return encode_watermark(draw(LONG), draw(LONG), draw(TEXT))
    overrides: dict[str, Any] = draw(OVERRIDES)
    record = call_event("c1", BASE_US + draw(st.integers(0, 10_000_000)))
    record.update(overrides)
    try:
        value = encode_call(record)
    except SchemaError:
        value = encode_call(call_event("c1", BASE_US))
    if kind == "mutated" and value:
        position = draw(st.integers(0, len(value) - 1))
        if draw(st.booleans()):
            value = value[:position]
        else:
            value = value[:position] + bytes([value[position] ^ draw(st.integers(1, 255))]) + value[position + 1:]
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_the_codec_raises_only_schema_errors_on_random_bytes(value: bytes) -> None:
    try:
        codec.decode(value, REGISTRY)
    except SchemaError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw_values())
def test_the_intake_never_raises_and_every_rejection_has_a_known_reason(value: bytes) -> None:
    result = read_raw(value, REGISTRY)
    assert isinstance(result, (CallRecord, WatermarkRecord, Rejected))
    if isinstance(result, Rejected):
        assert result.reason in REASONS and result.error
    if isinstance(result, CallRecord):
        assert 1 <= result.observation_count <= 2**32 and 1 <= len(result.frames) <= 256
        assert len(result.container_id.encode()) <= 256


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(raw_values(), max_size=30))
def test_the_engine_takes_any_sequence_and_counts_accepted_calls_exactly(values: list[bytes]) -> None:
    engine = Engine(EngineSettings(WindowSpec(1000, 200), "raw", symbol_wait_ms=0), NoSymbols(), REGISTRY)
    engine.assign(0, None)
    broker_us = BASE_US + 60_000_000
    outputs = []
    accepted = 0
    for offset, value in enumerate(values):
        result = read_raw(value, REGISTRY)
        outputs += engine.handle(0, offset, b"c1", value, (), broker_us)
        if isinstance(result, CallRecord) and result.observed_at_us <= broker_us + 120_000_000:
            accepted += result.observation_count
    outputs += engine.handle(0, len(values), b"a", encode_watermark(2**62, 2**62, "closer"), (), 2**62)
    summaries = [codec.decode(o.value, REGISTRY).record for o in outputs if o.kind == "summary"]
    counted = sum(s["total_events"] + s["late_events"] for s in summaries)
    open_calls = sum(w.total_events + w.late_events for s in engine._states.values() for w in s.windows.states())
    # A value drawn twice is a record sent twice: its window adds it once, and counts the repeat.
    assert counted + open_calls + engine.counts["repeated_events"] == accepted
    assert engine.checkpoint(0) is not None and len(engine.checkpoint(0).encode(REGISTRY)) < 1_000_000  # type: ignore[union-attr]
