"""The hostile records of issue 12 against the real `signals processor` (faust) and the
real broker, all at once: the worker neither dies nor stalls, every bad raw record is in the
dead-letter topic with its reason, the good calls are counted exactly and named by the real
symbol tables and packages, and /metrics shows the attacks it resisted."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import (
    free_port,
    latest_by_key,
    produce,
    publish_binaries,
    read_all,
    scrape,
    wait_until,
)
from tests.processor.raw_records import (
    APP_DIGEST,
    APP_PURL,
    REGISTRY,
    call_event,
    encode_call,
    encode_watermark,
    module_map,
    symbol_tables,
)

pytestmark = pytest.mark.broker

TEN_YEARS_US = 10 * 365 * 86_400 * 1_000_000
DECODE = "_ZN5image6Parser6decodeERKSt6vectorIhSaIhEE"



def _hostile_tables() -> list[tuple[bytes, bytes, int | None]]:
    """A chunk claiming 1000 chunks, a forged complete table renaming every function of the
    app binary, and a module map giving it the PURL that sorts first."""
    real = symbol_tables()[0]
    many = dict(real, chunk_count=1000, chunk_index=5)
    forged = dict(real, symbols=[dict(s, name="alias_z") for s in real["symbols"]])
    return [(f"{APP_DIGEST}/5".encode(), codec.encode(many, "SymbolTable", REGISTRY), None),
            (f"{APP_DIGEST}/0".encode(), codec.encode(forged, "SymbolTable", REGISTRY), None)]


def _hostile_module_map() -> list[tuple[bytes, bytes, int | None]]:
    forged = module_map(pid=666)
    forged["modules"][0]["purl"] = "pkg:a/a@0"
    return [(b"evil/666/1", codec.encode(forged, "ModuleMap", REGISTRY), None)]


def test_hostile_records_neither_stop_nor_freeze_nor_falsify_the_worker(kafka_bootstrap: str,
                                                                        tmp_path: Path) -> None:
    prefix = f"hostile-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    publish_binaries(kafka_bootstrap, names)
    port = free_port()
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor(extra_args=["--metrics-port", str(port), "--symbol-wait-ms", "5000",
                                             "--inflight-dir", str(tmp_path / "inflight")], wait_ready_s=60)
        # Event times of a live pipeline: just behind the broker's clock (log-append time),
        # taken once the worker is up, as a live agent's would be.
        now_us = time.time_ns() // 1000
        t0 = now_us - now_us % 1_000_000 - 10_000_000

        def call(at_us: int, count: int = 1, **overrides: Any) -> bytes:
            return encode_call(call_event("c1", at_us, count=count, **overrides))

        def mark(at_us: int, sequence: int, agent: str = "agent-1") -> tuple[bytes, bytes, int, list[Any]]:
            return (agent.encode(), encode_watermark(at_us, sequence, agent), 0, [])

        bad: list[tuple[bytes, str]] = [
            (call(t0 + 300, symbol="_ZN" + "1aI" * 27_000 + "i" + "E" * 27_000 + "1bEv"), "over_limit"),
            (call(t0 + 310, count=2**62), "over_limit"),
            (call(t0 + 320, count=2**62), "over_limit"),
            (call(t0 + 330, stack_trace=list(range(1, 50_001)), stack_frames=[]), "over_limit"),
            (call(t0 + TEN_YEARS_US), "clock_skew"),
            (b"\x00 not avro", "undecodable"),
        ]
        huge_ids = [(f"{n}".encode(), encode_watermark(t0, 1, f"{n}" + "a" * 120_000), 0, [])
                    for n in range(24)]
        records: list[tuple[Any, ...]] = [
            mark(t0 - 1_000_000, 2**63 - 1),                    # not the real agent-1
            mark(t0 + TEN_YEARS_US, 1, agent="evil-future"),    # a promise ten years ahead
            mark(now_us + 40_000_000, 1, agent="fast-clock"),   # a node whose clock runs 40 s fast
            (b"c1", call(t0 + 100, count=2), 0),
            (b"c1", call(t0 + 200, count=3, path=1), 0),
            *[(b"c1", value, 0) for value, _ in bad],
            *huge_ids,
            mark(t0 + 5_000_000, 1),                            # the real agent-1, sequence 1
            (b"c1", call(t0 + 6_000_000, count=4, path=2), 0),
            mark(t0 + 9_000_000, 2),
            mark(now_us + 60_000_000, 2, agent="fast-clock"),
            mark(t0 + TEN_YEARS_US, 2, agent="evil-future"),
        ]
        produce(kafka_bootstrap, names.symbols, _hostile_tables())
        produce(kafka_bootstrap, names.modules, _hostile_module_map())
        produce(kafka_bootstrap, names.raw, records)
        summaries = wait_until(lambda: (found := latest_by_key(read_all(kafka_bootstrap, names.summaries)))
                               and len(found) == 2 and found, 60, "both windows summarized")
        metrics = wait_until(lambda: (m := scrape(port)).get("runtime_signals_processor_windows_emitted_total") == 2
                             and m.get("runtime_signals_processor_module_purl_conflicts_total", 0) >= 1 and m,
                             20, "metrics of both windows")
        assert pipeline.stop_processor() == 0, pipeline.log("processor")[-3000:]

    dead = read_all(kafka_bootstrap, names.dlq)
    by_value = {r.value: r.headers["signals.dlq.reason"].decode() for r in dead}
    expected = dict(bad)
    expected.update({value: "over_limit" for _, value, _, _ in huge_ids})
    assert by_value == expected
    assert all(r.headers["signals.dlq.error"] for r in dead)
    assert read_all(kafka_bootstrap, names.late) == []

    first, second = sorted(summaries.values(), key=lambda s: s["started_at_us"])
    assert (first["started_at_us"], first["total_events"], first["late_events"]) == (t0, 5, 0)
    assert (second["started_at_us"], second["total_events"], second["late_events"]) == (t0 + 6_000_000, 4, 0)
    symbols = {s for summary in (first, second) for s in summary["observed_symbols"]}
    assert DECODE in symbols and "main" in symbols and "alias_z" not in symbols
    assert {p["purl"] for s in (first, second) for p in s["call_paths"]} == {APP_PURL}

    assert metrics["runtime_signals_processor_events_total"] == 9
    assert metrics["runtime_signals_processor_watermarks_clamped_total"] >= 2
    assert metrics["runtime_signals_processor_watermark_sequence_regressions_total"] >= 1
    assert metrics["runtime_signals_processor_symbol_table_conflicts_total"] >= 1
    assert metrics['runtime_signals_processor_dlq_records_total{reason="over_limit"}'] == 28
    assert metrics['runtime_signals_processor_dlq_records_total{reason="clock_skew"}'] == 1


def test_a_record_that_killed_two_workers_goes_to_the_dlq_on_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    from runtime_signals.processor.inflight import InflightLog

    prefix = f"poison-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    publish_binaries(kafka_bootstrap, names)
    now_us = time.time_ns() // 1000
    t0 = now_us - now_us % 1_000_000 - 10_000_000
    records = [(b"c1", encode_call(call_event("c1", t0 + 100 + n, count=n + 1)), 0) for n in range(3)]
    records.append((b"agent-1", encode_watermark(t0 + 5_000_000, 1), 0))
    produce(kafka_bootstrap, names.raw, records)
    app_id = f"{prefix}processor"
    # What two workers that died handling offset 1 of the partition left in the in-flight
    # directory: the slot is the worker's own, written as it writes it.
    directory = tmp_path / "inflight" / app_id
    for _ in range(2):
        dying = InflightLog(directory, names.raw)
        dying.open(0)
        dying.begin(0, 1)
        dying.close()
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=app_id) as pipeline:
        pipeline.start_processor(extra_args=["--inflight-dir", str(tmp_path / "inflight"), "--symbol-wait-ms",
                                             "1000"], wait_ready_s=60)
        summaries = wait_until(lambda: latest_by_key(read_all(kafka_bootstrap, names.summaries)), 60,
                               "the window summarized")
        assert pipeline.stop_processor() == 0
    [dead] = read_all(kafka_bootstrap, names.dlq)
    assert dead.headers["signals.dlq.reason"] == b"killed_worker" and dead.headers["signals.source.offset"] == b"1"
    assert dead.value == records[1][1]
    [summary] = summaries.values()
    assert summary["total_events"] == 1 + 3   # offsets 0 and 2; offset 1 (2 calls) is in the DLQ
