"""An agent killed while its spool drains resends what it could not know was delivered; the
processor counts each call once. Real spool files, the agent's real publisher, a real
broker and the real `signals processor`: the kill is the spool abandoned without its
cursor written, as SIGKILL leaves it (it is saved every 100 records)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from runtime_signals.agent.publisher import ProducerSettings, Publisher
from runtime_signals.agent.spool import Spool, SpoolRecord
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import latest_by_key, produce, read_all, wait_until
from tests.processor.raw_records import BASE_US, REGISTRY, call_event, encode_call, encode_watermark

pytestmark = pytest.mark.broker

RECORDS = 50
DELIVERED_BEFORE_THE_KILL = 30


def _drain(spool: Spool, bootstrap: str, records: int) -> None:
    publisher = Publisher(ProducerSettings(bootstrap), spool)
    assert publisher.pump(max_records=records) == records
    deadline = time.monotonic() + 30
    while publisher.delivered < records and time.monotonic() < deadline:
        publisher.poll(0.5)  # acknowledgements only: flush() would drain the whole spool
    assert publisher.delivered == records and publisher.in_flight == 0


def test_records_a_killed_agent_resends_from_its_spool_are_counted_once(kafka_bootstrap: str,
                                                                       tmp_path: Path) -> None:
    prefix = f"resend-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    spool = Spool(tmp_path / "spool", max_bytes=16 << 20)
    calls = 0
    for index in range(RECORDS):
        count = 1 + index % 3
        calls += count
        event = call_event("c1", BASE_US + 1_000 * index, count=count, path=index % 3)
        assert spool.append(SpoolRecord(names.raw, b"c1", encode_call(event), 0, count))
    # Delivered, then killed before the cursor was saved: the next run holds them all again.
    _drain(spool, kafka_bootstrap, DELIVERED_BEFORE_THE_KILL)
    restarted = Spool(tmp_path / "spool", max_bytes=16 << 20)
    assert len(restarted) == RECORDS
    _drain(restarted, kafka_bootstrap, RECORDS)
    restarted.close()
    raw = read_all(kafka_bootstrap, names.raw)
    ids = Counter(codec.decode(r.value, REGISTRY).record["event_id"] for r in raw)  # type: ignore[arg-type]
    assert len(raw) == RECORDS + DELIVERED_BEFORE_THE_KILL and sum(n == 2 for n in ids.values()) == 30  # the premise

    produce(kafka_bootstrap, names.raw, [(b"agent-1", encode_watermark(BASE_US + 5_000_000, 1), 0)])
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor(extra_args=["--symbol-wait-ms", "0"], wait_ready_s=60)
        summaries = wait_until(lambda: latest_by_key(read_all(kafka_bootstrap, names.summaries)), 60,
                               "the window's summary")
        assert pipeline.stop_processor() == 0, pipeline.log("processor")
    (summary,) = summaries.values()
    assert (summary["total_events"], summary["raw_records"]) == (calls, RECORDS), summary
    assert sum(p["observation_count"] for p in summary["call_paths"]) == calls
