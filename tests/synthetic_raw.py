"""Raw-topic traffic without BPF: the records an agent would publish, encoded with schemas.codec.

Calls of ``parse_image_header`` through known call paths, in two containers, over two
event-time windows, with an AgentWatermark to every partition after each window and a final
one that closes everything. Record timestamps are the calls' event times, so time-range
captures select known records.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Producer

from runtime_signals.schemas import codec

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
# A minute ago, on a 10 s boundary: recent enough for the raw topic's retention (7 days) to
# keep the records, fixed for the session so every replay of them closes the same windows.
BASE_US = (int(time.time()) // 10 * 10 - 60) * 1_000_000
WINDOW_MS = 1000
LATENESS_MS = 200
AGENT_ID = "synthetic-node/1"
PROBED = "parse_image_header"
LIBRARY = "/usr/lib/libimage.so.1"
DIGEST = "sha256:" + "ab" * 32

# Return addresses of the callers (bottom first) and the probed function's entry, per path.
PATHS: dict[str, tuple[int, ...]] = {
    "upload": (0x401000, 0x401200, 0x401400, 0x7F0000001000),
    "preview": (0x401000, 0x401600, 0x7F0000001000),
    "serve": (0x402000, 0x402200, 0x7F0000001000),
}
# (container, path, calls) per window: what the summaries must count.
PLAN: tuple[tuple[tuple[str, str, int], ...], ...] = (
    (("ctr-a", "upload", 7), ("ctr-a", "preview", 5), ("ctr-b", "serve", 3)),
    (("ctr-a", "upload", 2), ("ctr-b", "serve", 4)),
)
TOTAL_CALLS = sum(calls for window in PLAN for _, _, calls in window)
HEADERS = [("trace", b"synthetic"), ("replayed-from", b"")]


@dataclass(frozen=True)
class Produced:
    raw_records: int
    calls: int
    partitions: int


def call_event(registry: codec.SchemaRegistry, container: str, path: str, observed_at_us: int) -> bytes:
    stack = PATHS[path]
    return codec.encode({
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{container}/{path}/{observed_at_us}")),
        "container_id": container,
        "pid": 4242, "tid": 4242,
        "timestamp_ns": observed_at_us * 1000 - 1_000_000_000,
        "symbol": PROBED,
        "function_address": stack[-1],
        "stack_trace": list(stack),
        "runtime_type": "NATIVE",
        "library": LIBRARY,
        "received_at_us": observed_at_us + 150,
        "observed_at_us": observed_at_us,
        "host": "synthetic-node",
        "agent_id": AGENT_ID,
        "probe_id": f"{LIBRARY}:{PROBED}",
        # Anonymous frames (no digest): the processor names them by address, so the
        # summaries do not depend on when a symbol table arrives.
        "stack_frames": [{"address": a, "binary_digest": None, "binary_offset": None, "library": None}
                         for a in stack],
    }, CALL_EVENT, registry)


def watermark(registry: codec.SchemaRegistry, watermark_us: int, sequence: int) -> bytes:
    return codec.encode({"agent_id": AGENT_ID, "host": "synthetic-node", "watermark_us": watermark_us,
                         "sequence": sequence}, WATERMARK, registry)


def produce_raw(bootstrap: str, topic: str, partitions: int,
                registry: codec.SchemaRegistry | None = None) -> Produced:
    """Produce PLAN to ``topic`` as an agent would (keys by container, murmur2_random)."""
    registry = registry or codec.SchemaRegistry.default()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "partitioner": "murmur2_random", "linger.ms": 5})
    failures: list[str] = []

    def delivered(err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            failures.append(str(err))

    records = sequence = 0
    for index, window in enumerate(PLAN):
        start_us = BASE_US + index * WINDOW_MS * 1000
        for container, path, calls in window:
            for call in range(calls):
                # After the previous window's watermark, as the agent's promise requires.
                observed_us = start_us + 300_000 + call * 1000
                producer.produce(topic, key=container.encode(), value=call_event(registry, container, path, observed_us),
                                 timestamp=observed_us // 1000, headers=HEADERS, on_delivery=delivered)
                records += 1
        # Past the window's end plus lateness: the window closes on every partition.
        sequence += 1
        mark_us = start_us + (WINDOW_MS + LATENESS_MS) * 1000 + 1000
        for partition in range(partitions):
            producer.produce(topic, key=AGENT_ID.encode(), value=watermark(registry, mark_us, sequence),
                             partition=partition, timestamp=mark_us // 1000, on_delivery=delivered)
            records += 1
    remaining = producer.flush(30)
    assert remaining == 0 and not failures, (remaining, failures)
    return Produced(records, TOTAL_CALLS, partitions)
