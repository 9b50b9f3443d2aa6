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

from runtime_signals import METRIC_NAMESPACE
from runtime_signals.processor.intake import REASONS

PREFIX = f"{METRIC_NAMESPACE}_processor_"
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
    "executables_omitted": ("executables_omitted", ("Records whose executable was not listed on their path "
                                                    "(more distinct executables than a path keeps per window).")),
    "records_spanning_windows": ("records_spanning_windows", ("Folded raw records whose first and last calls lie "
                                                              "in different windows: counted wholly in the first "
                                                              "call's window (the window is not a multiple of the "
                                                              "agents' flush interval).")),
    "calls_spanning_windows": ("calls_spanning_windows", "Calls in records_spanning_windows."),
    "repeated_records": ("repeated_records", "Raw call records whose event id their window had already counted: "
                         "sent twice (an agent's spool resends what a killed agent could not know was delivered); "
                         "counted once."),
    "repeated_events": ("repeated_events", "Calls in repeated_records (not added again)."),
    "windows_event_ids_full": ("windows_event_ids_full", "Windows that held more records than event ids they "
                               "remember (processor limits): a repeat past that is not recognised."),
    "replayed_records": ("replayed_records", "Records re-read after a restart or rebalance to rebuild state."),
    "containers_forgotten": ("containers_forgotten", "Latest states dropped: the container's last window is older "
                             "than kafka.output_retention_ms before the watermark."),
    "latest_states_evicted": ("latest_states_evicted", "Container latest states moved from memory to the "
                              "worker's file (more than processor.latest_states_in_memory, or more than "
                              "processor.latest_paths_in_memory paths, held)."),
    "latest_states_read_back": ("latest_states_read_back", "Container latest states read back from the worker's "
                                "file when their container's next window closed."),
    "latest_records_skipped": ("latest_records_skipped", "Latest-topic records that did not decode when a "
                               "partition was restored (the container's state starts again from its next window)."),
    "watermarks_clamped": ("watermarks_clamped", "Agent watermarks ahead of their record's broker timestamp, "
                           "taken as the broker timestamp."),
    "watermark_sequence_regressions": ("watermark_sequence_regressions", "Agent watermarks whose sequence was not "
                                       "above the agent's last: duplicates, or two writers using one agent id."),
    "records_without_timestamp": ("records_without_timestamp", "Raw records without a broker timestamp (event "
                                  "times not bounded)."),
    "paths_unnamed_oversize": ("paths_unnamed_oversize", "Path records too large for the paths topic, sent "
                               "unnamed (frame identities only)."),
    "summary_paths_dropped_oversize": ("summary_paths_dropped_oversize", "Call paths left out of summaries too "
                                       "large for their topic (their calls are in dropped_events)."),
    "latest_oversize": ("latest_oversize", "Container states too large for the latest topic, not sent."),
    "worker_deaths_in_flight": ("worker_deaths_in_flight", "Partitions restored with a record found in flight: "
                                "a worker died while processing it."),
}
# symbol store counter -> (metric name without prefix and _total, help)
STORE_COUNTERS = {
    "symbol_table_conflicts": ("symbol_table_conflicts", "Symbol-table chunks that disagreed with the table "
                               "taken first for their binary (kept aside, never applied)."),
    "module_purl_conflicts": ("module_purl_conflicts", "Module-map PURLs that disagreed with the first one "
                              "given for their binary (never applied)."),
    "symbol_tables_evicted": ("symbol_tables_evicted", "Symbol tables evicted from memory (least recently used)."),
    "symbol_table_reloads": ("symbol_table_reloads", "Re-reads of the symbols topic for evicted tables."),
    "symbols_oversize": ("symbols_oversize", "Symbols not kept: names longer than 4 KiB."),
    "unauthenticated_records": ("unauthenticated_tables", "Symbol-table chunks and module maps refused: not "
                                "signed by an agent of processor.agent_ca_file (kept aside, never applied)."),
}


@dataclass(frozen=True)
class Status:
    counts: Mapping[str, int] = field(default_factory=dict)
    events_per_second: float = 0.0
    open_windows: int = 0
    pending_windows: int = 0
    output_queue_records: int = 0  # handed to the producer, not yet acknowledged
    symbol_tables: int = 0
    symbols_held: int = 0
    store_counts: Mapping[str, int] = field(default_factory=dict)
    lag_records: Mapping[int, int] = field(default_factory=dict)
    watermarks_us: Mapping[int, int] = field(default_factory=dict)
    caches: Mapping[str, int] = field(default_factory=dict)  # entries per long-lived cache
    feed_errors: Mapping[str, int] = field(default_factory=dict)  # symbols/modules consumer errors, by name
    provenance: Mapping[str, int] = field(default_factory=dict)  # record signature checks, by outcome


class StatusCollector(Collector):
    def __init__(self) -> None:
        self.status = Status()

    def collect(self) -> Iterator[Metric]:
        status = self.status
        for key, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=status.counts.get(key, 0))
        for key, (name, doc) in STORE_COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=status.store_counts.get(key, 0))
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
        yield GaugeMetricFamily(PREFIX + "output_queue_records", "Records written and not yet acknowledged by the "
                                "broker (bounded by the producer's queue, 256 MiB).", value=status.output_queue_records)
        yield GaugeMetricFamily(PREFIX + "symbol_tables", "Binaries with a symbol table loaded.",
                                value=status.symbol_tables)
        yield GaugeMetricFamily(PREFIX + "symbols_held", "Symbols held in memory over all tables (bounded).",
                                value=status.symbols_held)
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
        yield _labelled(GaugeMetricFamily, "cache_entries", "Entries in each long-lived cache (symbol store, "
                        "record-signature sessions, containers' latest states in memory and on disk).", "cache",
                        status.caches)
        yield _labelled(CounterMetricFamily, "record_signatures", "Signature checks of input records "
                        "(processor.agent_ca_file), by outcome: verified, or why refused.", "outcome",
                        status.provenance)
        yield _labelled(CounterMetricFamily, "feed_errors", "Errors reading the symbols and modules topics, by "
                        "librdkafka error name (retried by librdkafka; a fatal one stops the worker).", "error",
                        status.feed_errors)


def _labelled(family: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str, label: str,
              values: Mapping[str, int]) -> Metric:
    """One family with a sample per label value, in label order."""
    metric = family(PREFIX + name, doc, labels=[label])
    for value, count in sorted(values.items()):
        metric.add_metric([value], count)
    return metric


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
