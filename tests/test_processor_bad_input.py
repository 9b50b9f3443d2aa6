"""Bad, late and unnamed input against the real worker: dead-letter and late topics with
their headers, late counts in the summaries, and the /metrics endpoint that shows it all."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import (
    Record,
    free_port,
    latest_by_key,
    produce,
    publish_binaries,
    read_all,
    scrape,
    wait_until,
)
from tests.processor.raw_records import (
    BASE_US,
    call_event,
    encode_call,
    encode_watermark,
)

pytestmark = pytest.mark.broker

UNKNOWN_DIGEST = "sha256:" + "ef" * 32
# (key, value, headers, what it is): every container key is "c1" so all land on one partition.
FEED: list[tuple[bytes, bytes, list[tuple[str, bytes]], str]] = [
    (b"c1", encode_call(call_event("c1", BASE_US + 10, count=2)), [], "good"),
    (b"c1", b"\x00 not an avro message", [("trace-id", b"t-1")], "undecodable"),
    (b"c1", b"\xc3\x01" + bytes(range(8)) + b"\x02\x04", [], "unknown_fingerprint"),
    (b"c1", encode_call(call_event("c1", BASE_US + 11, count=-1)), [], "out_of_range"),
    (b"c1", encode_call(call_event("c1", BASE_US + 20, count=3, path=1)), [], "good"),
    (b"c1", encode_call(call_event("c1", BASE_US + 21, pid=-7)), [], "out_of_range"),
    (b"c1", encode_call(call_event("c1", 0, received_at_us=0)), [], "out_of_range"),
]
AFTER_FIRST_WATERMARK = [
    (b"c1", encode_call(call_event("c1", BASE_US + 30, count=4)), [], "late"),
    (b"c1", encode_call(call_event("c1", BASE_US + 1_100_000, count=1)), [], "good"),
    # A frame in a binary whose symbol table never comes: the window waits, then goes out.
    (b"c1", encode_call(call_event("c1", BASE_US + 1_200_000, count=5, symbol=None, stack_frames=[
        {"address": 1, "binary_digest": UNKNOWN_DIGEST, "binary_offset": 0x40, "library": "/opt/x.so"}],
        stack_trace=[1])), [], "good"),
]



def _watermarks(at_us: int, sequence: int) -> list[tuple[bytes, bytes, int, list[Any]]]:
    return [(b"agent-1", encode_watermark(at_us, sequence), partition, []) for partition in range(3)]


def test_bad_and_late_records_are_routed_counted_and_processing_goes_on(kafka_bootstrap: str,
                                                                       tmp_path: Path) -> None:
    prefix = f"bad-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=3)
    publish_binaries(kafka_bootstrap, names)
    port = free_port()
    records = [(k, v, None, h) for k, v, h, _ in FEED] + _watermarks(BASE_US + 1_500_000, 1)
    records += [(k, v, None, h) for k, v, h, _ in AFTER_FIRST_WATERMARK] + _watermarks(BASE_US + 5_000_000, 2)
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor(extra_args=["--metrics-port", str(port), "--symbol-wait-ms", "500"],
                                 wait_ready_s=60)
        produce(kafka_bootstrap, names.raw, records)
        summaries = wait_until(lambda: (found := latest_by_key(read_all(kafka_bootstrap, names.summaries)))
                               and len(found) == 2 and found, 30, "both windows summarized")
        metrics = wait_until(lambda: (m := scrape(port)).get("runtime_signals_processor_windows_emitted_total") == 2
                             and m, 10, "metrics of both windows")
        assert pipeline.stop_processor() == 0

    raw = {(r.partition, r.offset): r for r in read_all(kafka_bootstrap, names.raw)}
    calls = [r for r in raw.values() if r.key == b"c1"]
    kinds = dict(zip((r.value for r in calls), (kind for *_, kind in FEED + AFTER_FIRST_WATERMARK), strict=False))

    dead = read_all(kafka_bootstrap, names.dlq)
    assert sorted(r.headers["signals.dlq.reason"].decode() for r in dead) == sorted(
        kind for *_, kind in FEED if kind not in ("good", "late"))
    for record in dead:
        original = _original(raw, record, names.raw)
        assert (record.key, record.value) == (original.key, original.value)
        assert kinds[record.value] == record.headers["signals.dlq.reason"].decode()
        assert record.headers["signals.dlq.error"]
    assert next(r for r in dead if r.headers["signals.dlq.reason"] == b"undecodable").headers["trace-id"] == b"t-1"

    [late] = read_all(kafka_bootstrap, names.late)
    assert kinds[_original(raw, late, names.raw).value] == "late" and late.value == AFTER_FIRST_WATERMARK[0][1]
    assert late.headers["signals.late.window_start_us"] == str(BASE_US).encode()

    first, second = sorted(summaries.values(), key=lambda s: s["started_at_us"])
    assert (first["total_events"], first["late_events"]) == (5, 0)
    # The late call is counted in the window that held the watermark when it arrived.
    assert (second["started_at_us"], second["total_events"], second["late_events"]) == (BASE_US + 1_000_000, 6, 4)
    unnamed = [p for p in second["call_paths"] if p["binary_digests"] == [UNKNOWN_DIGEST]]
    assert unnamed and unnamed[0]["symbols"] == [f"{UNKNOWN_DIGEST}+0x40"]

    for reason, count in (("undecodable", 1), ("unknown_fingerprint", 1), ("out_of_range", 3)):
        assert metrics[f'runtime_signals_processor_dlq_records_total{{reason="{reason}"}}'] == count
    assert metrics["runtime_signals_processor_late_records_total"] == 1
    assert metrics["runtime_signals_processor_late_events_total"] == 4
    assert metrics["runtime_signals_processor_events_total"] == 11
    assert metrics["runtime_signals_processor_windows_unresolved_total"] == 1
    assert metrics["runtime_signals_processor_unresolved_frames_total"] == 1
    assert metrics["runtime_signals_processor_open_windows"] == 0
    partition = next(iter(calls)).partition
    assert metrics[f'runtime_signals_processor_consumer_lag_records{{partition="{partition}"}}'] == 0
    assert "runtime_signals_processor_events_per_second" in metrics


def _original(raw: dict[tuple[int, int], Record], routed: Record, raw_topic: str) -> Record:
    assert routed.headers["signals.source.topic"] == raw_topic.encode()
    return raw[(int(routed.headers["signals.source.partition"]), int(routed.headers["signals.source.offset"]))]
