"""Hostile raw records against the engine, without a broker: each case of issue 12 that a
single writer could use to crash, freeze or falsify the processor, with the fix removed the
test fails (it was written against the behaviour the issue describes)."""

from __future__ import annotations

import sys

from runtime_signals.processor.engine import Engine, EngineSettings, Output
from runtime_signals.processor.intake import DEFAULT_LIMITS
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec
from tests.processor.raw_records import (
    REGISTRY,
    call_event,
    encode_call,
    encode_watermark,
)

SPEC = WindowSpec(size_ms=1000, allowed_lateness_ms=200)
SETTINGS = EngineSettings(SPEC, raw_topic="raw", agent_idle_ms=30_000, symbol_wait_ms=0)
TEN_YEARS_US = 10 * 365 * 86_400 * 1_000_000
# "Now" for the broker: event times of a live pipeline sit just below it.
NOW_US = 1_790_000_000_000_000
T0_US = NOW_US - 20_000_000


class Feed:
    """One partition's records with broker timestamps, handed to an engine in order."""

    def __init__(self, settings: EngineSettings = SETTINGS) -> None:
        self.engine = Engine(settings, NoSymbols(), REGISTRY)
        self.engine.assign(0, None)
        self.offset = 0
        self.outputs: list[Output] = []

    def send(self, value: bytes, key: bytes = b"c1", broker_us: int = NOW_US) -> list[Output]:
        out = self.engine.handle(0, self.offset, key, value, (), broker_us)
        self.offset += 1
        self.outputs += out
        return out

    def call(self, at_us: int, count: int = 1, broker_us: int = NOW_US, **overrides: object) -> list[Output]:
        return self.send(encode_call(call_event("c1", at_us, count=count, **overrides)), broker_us=broker_us)

    def mark(self, at_us: int, sequence: int, agent: str = "agent-1", broker_us: int = NOW_US) -> list[Output]:
        return self.send(encode_watermark(at_us, sequence, agent), agent.encode(), broker_us)

    def kinds(self, kind: str) -> list[Output]:
        return [o for o in self.outputs if o.kind == kind]

    def reasons(self) -> list[str]:
        return [dict(o.headers)["signals.dlq.reason"].decode() for o in self.kinds("dlq")]

    def summaries(self) -> list[dict[str, object]]:
        return [codec.decode(o.value, REGISTRY).record for o in self.kinds("summary")]


def test_observation_counts_near_two_to_the_62_are_rejected_and_the_window_still_encodes() -> None:
    feed = Feed()
    feed.call(T0_US + 10, count=2**62)
    feed.call(T0_US + 20, count=2**62)
    feed.call(T0_US + 30, count=3)
    feed.mark(T0_US + 5_000_000, 1)  # closes the window: its sums must encode
    assert feed.reasons() == ["over_limit", "over_limit"]
    [summary] = feed.summaries()
    assert summary["total_events"] == 3


def test_a_50000_frame_stack_and_huge_strings_are_dead_lettered_naming_the_limit() -> None:
    feed = Feed()
    feed.call(T0_US + 10, stack_trace=list(range(1, 50_001)), stack_frames=[])
    feed.call(T0_US + 20, symbol="_Z1f" + "P" * 80_000 + "i")
    feed.call(T0_US + 30, container_id="c" * 10_000)
    feed.call(T0_US + 40, count=2)
    feed.mark(T0_US + 5_000_000, 1)
    assert feed.reasons() == ["over_limit"] * 3
    errors = [dict(o.headers)["signals.dlq.error"].decode() for o in feed.kinds("dlq")]
    assert "50000 stack frames" in errors[0] and "symbol is 80005 bytes" in errors[1]
    assert "container_id" in errors[2]
    assert [s["total_events"] for s in feed.summaries()] == [2]


def test_huge_agent_ids_are_rejected_so_the_checkpoint_stays_small() -> None:
    feed = Feed()
    for n in range(24):
        feed.mark(T0_US, 1, agent=f"{n}" + "a" * 120_000)
    feed.mark(T0_US, 1)
    assert feed.reasons() == ["over_limit"] * 24
    checkpoint = feed.engine.checkpoint(0)
    assert checkpoint is not None and len(checkpoint.encode(REGISTRY)) < 1024


def test_a_watermark_ten_years_ahead_from_a_fake_agent_does_not_make_real_calls_late() -> None:
    feed = Feed()
    feed.mark(T0_US, 1)
    feed.mark(T0_US + TEN_YEARS_US, 1, agent="evil")
    feed.call(T0_US + 2_000_000, count=2)
    feed.mark(T0_US + 5_000_000, 2)
    assert feed.kinds("late") == [] and feed.engine.counts["watermarks_clamped"] == 1
    assert [s["total_events"] for s in feed.summaries()] == [2]
    assert feed.engine.watermarks_us()[0] <= NOW_US


def test_an_agent_forty_seconds_fast_does_not_make_the_others_idle() -> None:
    feed = Feed()
    feed.mark(NOW_US - 1_000_000, 1, broker_us=NOW_US)
    for step in range(8):
        broker_us = NOW_US + step * 1_000_000
        feed.mark(broker_us + 40_000_000, step + 1, agent="fast-clock", broker_us=broker_us)
        feed.call(broker_us - 500_000, broker_us=broker_us)     # agent-1's calls: in sync with the broker
        feed.mark(broker_us, step + 2, broker_us=broker_us)
    feed.mark(NOW_US + 60_000_000, 99, agent="fast-clock", broker_us=NOW_US + 20_000_000)
    feed.mark(NOW_US + 20_000_000, 99, broker_us=NOW_US + 20_000_000)
    assert feed.kinds("late") == []
    assert sum(s["total_events"] for s in feed.summaries()) == 8  # type: ignore[misc]


def test_a_forged_agent_id_with_the_largest_sequence_does_not_stop_windows_closing() -> None:
    feed = Feed()
    feed.mark(T0_US - 1_000_000, 2**63 - 1)  # not the real agent-1
    feed.call(T0_US + 10, count=4)
    feed.mark(T0_US + 5_000_000, 1)          # the real agent-1, sequence 1
    assert [s["total_events"] for s in feed.summaries()] == [4]
    assert feed.engine.counts["watermark_sequence_regressions"] == 1


def test_a_call_ten_years_ahead_goes_to_the_dlq_and_does_not_pin_the_replay_point() -> None:
    feed = Feed()
    feed.mark(T0_US, 1)
    feed.call(T0_US + TEN_YEARS_US)
    for step in range(1, 200):
        feed.call(T0_US + step * 100_000)
        feed.mark(T0_US + step * 100_000, step + 1)
    assert feed.reasons() == ["clock_skew"]
    checkpoint = feed.engine.checkpoint(0)
    assert checkpoint is not None and checkpoint.replay_from_offset > 300


def test_watermarks_beyond_the_agent_limit_are_dead_lettered_and_known_agents_still_count() -> None:
    limits = DEFAULT_LIMITS.__class__(max_agents=3)
    feed = Feed(EngineSettings(SPEC, raw_topic="raw", agent_idle_ms=30_000, symbol_wait_ms=0, limits=limits))
    for agent in ("a", "b", "c", "d"):
        feed.mark(T0_US, 1, agent=agent)
    assert feed.reasons() == ["too_many_agents"]
    feed.call(T0_US + 10)
    for agent in ("a", "b", "c"):
        feed.mark(T0_US + 5_000_000, 2, agent=agent)
    assert [s["total_events"] for s in feed.summaries()] == [1]


def test_forty_thousand_agents_cost_linear_time() -> None:
    # Not a timing assertion (benchmarks/hostile.py times it): the work per watermark, counted as
    # the Python and C calls the engine makes, must not grow with the number of agents, so 4x the
    # agents may cost ~4x the calls, not 16x (the quadratic engine scanned every agent per mark).
    def calls(agents: int) -> int:
        feed = Feed()
        values = [encode_watermark(T0_US + n, 1, f"node-{n}") for n in range(agents)]
        counted = 0

        def count(frame: object, event: str, arg: object) -> None:
            nonlocal counted
            counted += event in ("call", "c_call")

        sys.setprofile(count)
        try:
            for n, value in enumerate(values):
                feed.engine.handle(0, n, b"k", value, (), NOW_US)
        finally:
            sys.setprofile(None)
        return counted

    small, large = calls(2_500), calls(10_000)
    assert small > 2_500
    assert large < 5 * small, (small, large)


def test_a_path_too_large_for_its_topic_goes_out_unnamed_and_a_huge_summary_is_trimmed_visibly() -> None:
    from runtime_signals.processor.symbol_store import SymbolStore
    from tests.processor.raw_records import APP_DIGEST

    store = SymbolStore()
    store.add({"binary_digest": APP_DIGEST, "chunk_index": 0, "chunk_count": 1, "symbol_count": 256,
               "symbols": [{"file_offset": 0x1000 * (i + 1), "size_bytes": 0x1000, "name": f"f{i}_" + "x" * 4000}
                           for i in range(256)]})
    store.add_module_map({"modules": [{"binary_digest": APP_DIGEST, "purl": "pkg:generic/app@1"}]})
    engine = Engine(EngineSettings(SPEC, raw_topic="raw", symbol_wait_ms=0, max_summary_bytes=200_000),
                    store, REGISTRY)
    engine.assign(0, None)
    frames = [{"address": 0x1000 * (i + 1) + 1, "binary_digest": APP_DIGEST, "binary_offset": 0x1000 * (i + 1) + 1,
               "library": "/" + "l" * 4000} for i in range(256)]
    huge = call_event("c1", T0_US + 10, count=7, symbol=None, stack_frames=frames,
                      stack_trace=[f["address"] for f in frames])
    outputs = engine.handle(0, 0, b"c1", encode_call(huge), (), NOW_US)
    for n in range(300):  # 300 small distinct paths: far more than 200 kB of summary
        small = call_event("c1", T0_US + 20 + n, count=1, stack_trace=[0x7000 + n], stack_frames=[])
        outputs += engine.handle(0, n + 1, b"c1", encode_call(small), (), NOW_US)
    outputs += engine.handle(0, 400, b"a", encode_watermark(T0_US + 5_000_000, 1), (), NOW_US)
    paths = [o for o in outputs if o.kind == "path"]
    assert len(paths) == 301 and max(len(o.value) for o in paths) < 1_000_000
    big = next(codec.decode(o.value, REGISTRY).record for o in paths
               if codec.decode(o.value, REGISTRY).record["observation_count"] == 7)
    assert big["symbols"][0] == f"{APP_DIGEST}+0x1001" and big["libraries"][0] is None
    [summary] = [codec.decode(o.value, REGISTRY).record for o in outputs if o.kind == "summary"]
    assert summary["total_events"] == 307
    assert summary["dropped_events"] + sum(p["observation_count"] for p in summary["call_paths"]) == 307
    assert summary["dropped_events"] > 0 and engine.counts["paths_unnamed_oversize"] == 1
