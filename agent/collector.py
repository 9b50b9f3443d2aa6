"""The agent's event pump: ring buffer -> RuntimeCallEvent -> Kafka, with watermarks.

Ordering promise to the processor: before each AgentWatermark(T) is produced, the ring
buffer has been drained of every call made before T, so every RuntimeCallEvent produced
after it has observed_at_us >= T. The processor closes event-time windows on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from schemas import codec
from schemas.topics import TopicNames

from .clock import BootClock
from .probes import FLAG_STACK_TRUNCATED, AttachedProbe, CallTracer, RawCall
from .processes import ProcessTable
from .publisher import Publisher
from .symbols_publisher import SymbolTablePublisher

log = logging.getLogger(__name__)

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
# Calls stamped just before a drain started may still be in flight to the ring buffer;
# the watermark stays this far behind the drain's start.
WATERMARK_SAFETY_NS = 5_000_000


@dataclass
class CollectorSettings:
    topics: TopicNames = field(default_factory=TopicNames)
    agent_id: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}")
    host: str = field(default_factory=socket.gethostname)
    watermark_interval_ms: int = 500
    poll_timeout_ms: int = 100
    process_sweep_interval_ms: int = 10_000
    shutdown_flush_timeout_s: float = 30.0


class Collector:
    """Reads calls from a CallTracer and publishes them; counts everything it handles."""

    def __init__(self, settings: CollectorSettings, tracer: CallTracer, publisher: Publisher,
                 registry: codec.SchemaRegistry | None = None) -> None:
        self.settings = settings
        self._tracer = tracer
        self._publisher = publisher
        self._registry = registry or codec.SchemaRegistry.default()
        self._clock = BootClock()
        self._probes_by_location: dict[tuple[str | None, int], AttachedProbe] = {}
        self._watermark_sequence = 0
        self.events_published = 0
        self.unmatched_probe_events = 0
        self._symbol_tables = SymbolTablePublisher(publisher, settings.topics.symbols, self._registry)
        self._processes = ProcessTable(on_new_binary=self._symbol_tables.offer)
        tracer.on_event(self._handle)

    def register_probe(self, probe: AttachedProbe) -> None:
        """Learn where an attached probe sits, to name the symbol of the calls it reports."""
        digest = self._processes.digests.digest(probe.path)
        self._probes_by_location[(digest, probe.file_offset)] = probe
        self._probes_by_location.setdefault((None, probe.file_offset), probe)

    def _find_probe(self, digest: str | None, offset: int | None) -> AttachedProbe | None:
        if offset is None:
            return None
        return self._probes_by_location.get((digest, offset)) or self._probes_by_location.get((None, offset))

    def _handle(self, call: RawCall) -> None:
        frames = self._processes.resolve_frames(call.pid, call.frames)
        process = self._processes.describe(call.pid)
        top = frames[0]
        probe = self._find_probe(top.binary_digest, top.binary_offset)
        if probe is None:
            self.unmatched_probe_events += 1
        container_id = process.container_id
        now_us = time.time_ns() // 1000
        bottom_to_top = list(reversed(frames))
        record = {
            "event_id": str(uuid.uuid4()),
            "container_id": container_id,
            "pid": call.pid,
            "tid": call.tid,
            "timestamp_ns": call.boot_ns,
            "symbol": probe.spec.symbol if probe else None,
            "function_address": call.function_address,
            "stack_trace": [f.address for f in bottom_to_top],
            "runtime_type": process.runtime_type,
            "library": top.path,
            "purl": None,
            "received_at_us": now_us,
            "function_signature": None,
            "binary_digest": top.binary_digest,
            "binary_offset": top.binary_offset,
            "node_hash": None,
            "callstack_hash": None,
            "observed_at_us": self._clock.wall_us(call.boot_ns),
            "host": self.settings.host,
            "agent_id": self.settings.agent_id,
            "cgroup_id": call.cgroup_id,
            "probe_id": probe.spec.probe_id if probe else "",
            "observation_count": 1,
            "last_timestamp_ns": None,
            "stack_frames": [
                {"address": f.address, "binary_digest": f.binary_digest,
                 "binary_offset": f.binary_offset, "library": f.path}
                for f in bottom_to_top
            ],
            "stack_truncated": bool(call.flags & FLAG_STACK_TRUNCATED),
        }
        value = codec.encode(record, CALL_EVENT, self._registry)
        self._publisher.produce(self.settings.topics.raw, container_id.encode(), value)
        self.events_published += 1

    def publish_watermark(self) -> None:
        """Drain the ring buffer, then promise the processor no earlier call will follow."""
        drain_started_boot_ns = BootClock.now_boot_ns()
        self._tracer.drain()
        watermark_us = self._clock.wall_us(drain_started_boot_ns - WATERMARK_SAFETY_NS)
        self._watermark_sequence += 1
        value = codec.encode({
            "agent_id": self.settings.agent_id,
            "host": self.settings.host,
            "watermark_us": watermark_us,
            "sequence": self._watermark_sequence,
        }, WATERMARK, self._registry)
        topic = self.settings.topics.raw
        for partition in range(self._publisher.partition_count(topic)):
            self._publisher.produce(topic, self.settings.agent_id.encode(), value, partition=partition)


    def run(self, stop: threading.Event) -> None:
        """Pump until stop is set, then drain the ring buffer and flush everything read."""
        interval_s = self.settings.watermark_interval_ms / 1000
        sweep_s = self.settings.process_sweep_interval_ms / 1000
        next_watermark = time.monotonic()
        next_sweep = time.monotonic() + sweep_s
        while not stop.is_set():
            self._tracer.poll(self.settings.poll_timeout_ms)
            self._publisher.poll(0)
            now = time.monotonic()
            if now >= next_watermark:
                self.publish_watermark()
                next_watermark = now + interval_s
            if now >= next_sweep:
                self._processes.forget_exited()
                next_sweep = now + sweep_s
        self.shutdown()

    def shutdown(self) -> None:
        """Publish everything still in the ring buffer and wait for Kafka to take it."""
        self.publish_watermark()
        self._symbol_tables.close()
        remaining = self._publisher.flush(self.settings.shutdown_flush_timeout_s)
        if remaining:
            log.error("shutdown: %d records still undelivered after %.0fs", remaining,
                      self.settings.shutdown_flush_timeout_s)
        log.info("agent stopped: %d events published, %d delivered, failures %s, kernel counters %s",
                 self.events_published, self._publisher.delivered,
                 dict(self._publisher.failed_by_reason), self._tracer.counters())
