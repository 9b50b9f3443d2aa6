"""Reading summaries back from their topic: for `signals summaries`, the demo and tests."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas import codec

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) on the topic now, partition by partition, read from the beginning
    without joining a consumer group (nothing is committed)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "runtime-signals-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise LookupError(f"topic {topic!r} not found on {bootstrap}")
        partitions = sorted(described.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining = set(partitions)
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise RuntimeError(f"reading {topic}[{message.partition()}]: {message.error()}")
            records.append((message.key(), message.value()))
        return records
    finally:
        consumer.close()


def latest_summaries(records: Iterable[tuple[bytes | None, bytes]],
                     registry: codec.SchemaRegistry | None = None) -> list[dict[str, Any]]:
    """Decoded summaries, the latest per key (as compaction would keep), in
    (window start, container) order."""
    registry = registry or codec.SchemaRegistry.default()
    by_key: dict[bytes | None, dict[str, Any]] = {}
    for key, value in records:
        by_key[key] = codec.decode(value, registry, SUMMARY).record
    return sorted(by_key.values(), key=lambda s: (s["started_at_us"], s["container_id"]))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return datetime.fromtimestamp(value / 1e6, timezone.utc).isoformat(timespec="milliseconds")


def to_json(summaries: list[dict[str, Any]]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return _iso(value)
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    return json.dumps(summaries, default=default, indent=2, sort_keys=True)


def _short(symbol: str) -> str:
    # Unresolved frames are "<sha256:digest>+0x<offset>": keep them readable.
    if symbol.startswith("sha256:") and "+" in symbol:
        digest, offset = symbol.split("+", 1)
        return f"{digest[:15]}…+{offset}"
    return symbol


def format_table(summaries: list[dict[str, Any]]) -> str:
    """A human table: one block per container window, one line per call path."""
    if not summaries:
        return "no summaries yet"
    lines = []
    for summary in summaries:
        lines.append(
            f"container {summary['container_id']}  window {_iso(summary['started_at_us'])} .. "
            f"{_iso(summary['stopped_at_us'])}  calls {summary['total_events']}  "
            f"paths {len(summary['call_paths'])}  runtimes {','.join(summary['detected_runtimes'])}"
        )
        lines.append(f"  {'calls':>8}  call path (entry point → probed function)")
        for path in summary["call_paths"]:
            lines.append(f"  {path['observation_count']:>8}  " + " → ".join(_short(s) for s in path["symbols"]))
        lines.append(f"  combined path hash {summary['combined_path_hash']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
