"""A container with many distinct call paths in one window: its summary and latest state
pass Kafka's default 1 MiB message size, and still arrive whole (the summaries and latest
topics accept 16 MiB and the worker's producer requests that much)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import latest_by_key, produce, read_all, wait_until
from tests.processor.raw_records import BASE_US, call_event, encode_call, encode_watermark

pytestmark = pytest.mark.broker

PATHS = 1200  # about 1.4 KB each in a summary: well past 1 MiB


def _distinct_path(index: int) -> dict[str, object]:
    """A call whose stack differs from every other by its caller frames (unresolved
    addresses, so no symbol table has to arrive)."""
    frames = [0x1000 + index * 16 + depth for depth in range(8)]
    record = call_event("c1", BASE_US + 10 + index, symbol="parse_image_header")
    record["stack_trace"] = frames
    record["stack_frames"] = [{"address": a, "binary_digest": None, "binary_offset": None, "library": None}
                              for a in frames]
    return record


def test_a_summary_larger_than_one_mebibyte_arrives_whole(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"large-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    records = [(b"c1", encode_call(_distinct_path(i)), 0) for i in range(PATHS)]
    records.append((b"agent-1", encode_watermark(BASE_US + 5_000_000, 1), 0))
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor(extra_args=["--symbol-wait-ms", "0"], wait_ready_s=60)
        produce(kafka_bootstrap, names.raw, records)
        summaries = wait_until(lambda: latest_by_key(read_all(kafka_bootstrap, names.summaries)), 60,
                               "the window's summary")
        latest = wait_until(lambda: latest_by_key(read_all(kafka_bootstrap, names.latest)), 30, "latest state")
        assert pipeline.stop_processor() == 0, pipeline.log("processor")
    (summary,) = summaries.values()
    assert summary["total_events"] == PATHS and len(summary["call_paths"]) == PATHS
    assert max(len(v[-1] or b"") for v in _values(read_all(kafka_bootstrap, names.summaries))) > 1 << 20
    assert list(latest) == [b"c1"]


def _values(records: list) -> list[list[bytes | None]]:  # type: ignore[type-arg]
    from tests.processor.harness import values_by_key

    return list(values_by_key(records).values())
