"""Summaries as records (decoded dicts): read, filtered and printed for `signals summaries`,
the demo and tests. Typed access is the consumer package's (consumer.SignalsClient)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from runtime_signals.consumer.display import PathFrames, path_labels, readable
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.consumer.models import Summary, Target
from runtime_signals.consumer.query import Matcher, in_time, resolve_container
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError

log = logging.getLogger(__name__)

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0,
               kafka_config: Mapping[str, str] | None = None) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) on the topic now (None values are tombstones), partition by
    partition, from the oldest record to the end the topic had when the read began, without
    joining a consumer group. kafka_config adds librdkafka settings (TLS, SASL)."""
    reader = TopicReader(bootstrap, kafka_config, timeout_s=timeout_s)
    return [(r.key, r.value) for r in reader.read(topic, reader.whole_topic(topic))]


def select_records(records: Iterable[dict[str, Any]], *, container: str | None = None,
                   since_us: int | None = None, until_us: int | None = None,
                   target: Target | None = None) -> list[dict[str, Any]]:
    """Decoded summaries of one container (or all) whose windows overlap [since_us, until_us);
    with a target, only the call paths holding it, and only summaries that have one."""
    matcher = Matcher(target) if target is not None else None
    records = list(records)
    if container is not None:
        container = resolve_container(container, {r["container_id"] for r in records})
    selected = []
    for record in records:
        summary = Summary.from_record(record)
        if container is not None and summary.container_id != container:
            continue
        if not in_time(summary, since_us, until_us):
            continue
        if matcher is not None:
            kept = [raw for raw, path in zip(record["call_paths"], summary.call_paths, strict=False) if matcher.match(path)]
            if not kept:
                continue
            record = dict(record, call_paths=kept)
        selected.append(record)
    return selected


def latest_summaries(records: Iterable[tuple[bytes | None, bytes | None]],
                     registry: codec.SchemaRegistry | None = None) -> list[dict[str, Any]]:
    """Decoded summaries, the latest per key (as compaction would keep; a tombstone deletes),
    in (window start, container) order. A record that does not decode is logged and skipped."""
    registry = registry or codec.SchemaRegistry.default()
    by_key: dict[bytes | None, dict[str, Any]] = {}
    for key, value in records:
        if value is None:
            by_key.pop(key, None)
            continue
        try:
            by_key[key] = codec.decode(value, registry, SUMMARY).record
        except SchemaError as exc:
            log.warning("summary with key %r skipped: %s", key, exc)
    return sorted(by_key.values(), key=lambda s: (s["started_at_us"], s["container_id"]))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return datetime.fromtimestamp(value / 1e6, UTC).isoformat(timespec="milliseconds")


def to_json(summaries: list[dict[str, Any]]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return _iso(value)
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    return json.dumps(summaries, default=default, indent=2, sort_keys=True)


def short_symbol(symbol: str) -> str:
    """A frame's name for people (consumer.display.readable): demangled, unresolved frames shortened."""
    return readable(symbol)


def path_rows(call_paths: Iterable[dict[str, Any]]) -> list[tuple[int, int, tuple[str, ...]]]:
    """(calls, stacks, frame labels) of a window's paths, most calls first. Labels are the
    demangled names, with the call site where paths that print alike differ (consumer.display);
    paths whose labels are still the same are one row, so no printed row repeats."""
    paths = list(call_paths)
    labels = path_labels([PathFrames(p["symbols"], p.get("function_signatures") or (),
                                     p.get("binary_offsets") or (), p.get("binary_digests") or ())
                          for p in paths])
    calls: dict[tuple[str, ...], list[int]] = {}
    for path, names in zip(paths, labels, strict=False):
        entry = calls.setdefault(tuple(names), [0, 0])
        entry[0] += path["observation_count"]
        entry[1] += 1
    return sorted(((c, n, names) for names, (c, n) in calls.items()), key=lambda row: (-row[0], row[2]))


def format_table(summaries: list[dict[str, Any]], limit: int | None = None) -> str:
    """A human table: one block per container window, one line per call path, most calls
    first; with a limit, at most that many paths per window and a line saying what was left out."""
    if not summaries:
        return "no summaries\n"
    lines = []
    for summary in summaries:
        lines.append(
            f"container {summary['container_id']}  window {_iso(summary['started_at_us'])} .. "
            f"{_iso(summary['stopped_at_us'])}  calls {summary['total_events']}  "
            f"paths {len(summary['call_paths'])}  runtimes {','.join(summary['detected_runtimes'])}"
        )
        lines.append(f"  {'calls':>8}  call path (entry point → probed function)")
        rows = path_rows(summary["call_paths"])
        for calls, stacks, symbols in rows[:limit]:
            note = f"  ({stacks} stacks)" if stacks > 1 else ""
            lines.append(f"  {calls:>8}  " + " → ".join(symbols) + note)
        hidden = rows[limit:] if limit is not None else []
        if hidden:
            lines.append(f"  … {len(hidden)} more path(s), {sum(r[0] for r in hidden)} calls: --limit 0 shows "
                         f"them all, --json gives every field")
        lines.append(f"  combined path hash {summary['combined_path_hash']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
