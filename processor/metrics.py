"""Prometheus metrics of one worker, rendered by prometheus-client for /metrics (served by
faust's web server, processor/app.py).

The worker publishes a Status snapshot once per checkpoint interval; /metrics renders the
latest snapshot, so it never reads the engine half-way through a change.
Counters count since the worker started and exclude records replayed after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime_signals.processor.intake import REASONS

PREFIX = "signals_processor_"
# engine counter -> (metric name without prefix and _total, help)
COUNTERS = {
    "raw_records": ("raw_records", "Raw-topic records handled (calls, watermarks, rejected)."),
    "events": ("events", "Calls counted into windows (the sum of observation_count)."),
    "watermarks": ("watermarks", "AgentWatermark records handled."),
    "late_records": ("late_records", "Raw records that arrived after their window closed (to the late topic)."),
    "late_events": ("late_events", "Calls in late records."),
    "windows_emitted": ("windows_emitted", "Windows emitted (one summary each)."),
    "windows_unresolved": ("windows_unresolved", "Windows emitted with at least one frame left unnamed."),
    "unresolved_frames": ("unresolved_frames", "Frames (per path, per window) emitted unnamed."),
    "windows_waited_out": ("windows_waited_out", "Windows emitted before all their symbol tables and module maps "
                           "arrived (the wait ran out, or too many windows waited)."),
    "windows_suppressed": ("windows_suppressed", "Windows rebuilt on replay but not emitted again (already were)."),
    "replayed_records": ("replayed_records", "Records re-read after a restart or rebalance to rebuild state."),
    "containers_forgotten": ("containers_forgotten", "Latest states dropped: the container's last window is older "
                             "than kafka.output_retention_ms before the watermark."),
}


@dataclass(frozen=True)
class Status:
    counts: Mapping[str, int] = field(default_factory=dict)
    events_per_second: float = 0.0
    open_windows: int = 0
    pending_windows: int = 0
    symbol_tables: int = 0
    lag_records: Mapping[int, int] = field(default_factory=dict)
    watermarks_us: Mapping[int, int] = field(default_factory=dict)
    caches: Mapping[str, int] = field(default_factory=dict)  # entries per long-lived cache
    feed_errors: Mapping[str, int] = field(default_factory=dict)  # symbols/modules consumer errors, by name


class StatusCollector(Collector):
    def __init__(self) -> None:
        self.status = Status()

    def collect(self) -> Iterator[Metric]:
        status = self.status
        for key, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=status.counts.get(key, 0))
        dlq = CounterMetricFamily(PREFIX + "dlq_records", "Raw records sent to the dead-letter topic.",
                                  labels=["reason"])
        for reason in REASONS:
            dlq.add_metric([reason], status.counts.get(f"dlq:{reason}", 0))
        yield dlq
        yield GaugeMetricFamily(PREFIX + "events_per_second", "Calls counted per second, over the last interval.",
                                value=status.events_per_second)
        yield GaugeMetricFamily(PREFIX + "open_windows", "Windows open (collecting calls).",
                                value=status.open_windows)
        yield GaugeMetricFamily(PREFIX + "pending_windows", "Closed windows waiting for symbol tables.",
                                value=status.pending_windows)
        yield GaugeMetricFamily(PREFIX + "symbol_tables", "Binaries with a symbol table loaded.",
                                value=status.symbol_tables)
        lag = GaugeMetricFamily(PREFIX + "consumer_lag_records", "Raw records not yet handled, per partition.",
                                labels=["partition"])
        for partition, records in sorted(status.lag_records.items()):
            lag.add_metric([str(partition)], records)
        yield lag
        watermark = GaugeMetricFamily(PREFIX + "watermark_seconds",
                                      "Event-time watermark per partition, seconds since the Unix epoch.",
                                      labels=["partition"])
        for partition, watermark_us in sorted(status.watermarks_us.items()):
            watermark.add_metric([str(partition)], watermark_us / 1e6)
        yield watermark
        caches = GaugeMetricFamily(PREFIX + "cache_entries", "Entries in each long-lived cache (symbol store).",
                                   labels=["cache"])
        for name, entries in sorted(status.caches.items()):
            caches.add_metric([name], entries)
        yield caches
        errors = CounterMetricFamily(PREFIX + "feed_errors", "Errors reading the symbols and modules topics, by "
                                     "librdkafka error name (retried by librdkafka; a fatal one stops the worker).",
                                     labels=["error"])
        for name, count in sorted(status.feed_errors.items()):
            errors.add_metric([name], count)
        yield errors


class Exposition:
    """The text of /metrics: a worker's StatusCollector in Prometheus' format."""

    # Prometheus' text format; aiohttp refuses a charset in the content type (it adds one).
    content_type = "text/plain; version=0.0.4"

    def __init__(self) -> None:
        self.collector = StatusCollector()
        self._registry = CollectorRegistry()
        self._registry.register(self.collector)
        # process_resident_memory_bytes and friends: the soak benchmark's processor figure.
        ProcessCollector(registry=self._registry)

    def render(self) -> bytes:
        return generate_latest(self._registry)
