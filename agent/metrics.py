"""HTTP endpoints for operators: Prometheus /metrics, and /healthz and /readyz for
Kubernetes probes.

/metrics shows the figures of the latest statistics Snapshot (agent/stats.py), the same
numbers the agent publishes as SignalStatistics. /healthz answers 200 while the event
pump keeps turning (a stuck pump fails the liveness probe and the pod restarts);
/readyz answers 200 once at least one probe is attached and the producer has the raw
topic's metadata (the broker answered at least once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime_signals import METRIC_NAMESPACE
from runtime_signals.agent.errors import ConfigError
from runtime_signals.agent.stats import Snapshot

log = logging.getLogger(__name__)

PREFIX = f"{METRIC_NAMESPACE}_agent"


_UNWIND_HELP = {
    "rows_used": "Unwind rule rows loaded (all binaries)",
    "rows_capacity": "Unwind rule rows the map holds (unwind_rows)",
    "row_map_bytes": "Kernel memory of the unwind rows map",
    "table_map_bytes": "Kernel memory of the unwind tables map",
    "process_map_bytes": "Kernel memory of the per-process mapping tables",
    "binaries_loaded": "Binaries whose unwind rules are loaded",
    "binaries_building": "Binaries whose unwind rules are being built",
    "binaries_without_rules": "Binaries without CFI: walked by frame pointers",
    "binaries_not_fitting": "Binaries whose rules did not fit the rows map: walked by frame pointers",
    "processes_loaded": "Processes with a mapping table in the kernel",
    "processes_over_mapping_limit": "Processes with more executable mappings than max_mappings",
    "rules_cache_hits": "Binaries whose unwind rules came from the on-disk cache (unwind_cache_dir)",
    "rules_cache_misses": "Binaries whose unwind rules were not cached and were built",
    "rules_cache_bytes": "Bytes of the on-disk unwind rules cache (bounded by unwind_cache_max_bytes)",
    # Python frames in native paths (agent/pyframes.py)
    "python_code_map_bytes": "Kernel memory of the code names map (py_codes, LRU)",
    "python_paths_spliced": "Paths whose evaluation loop frames were replaced by their Python frames",
    "python_frames_cut": "Spliced paths whose Python walk stopped before the outermost frame",
    "python_frames_not_lined_up": "Paths of Python processes left native: loop calls and Python calls differ",
    "python_frames_not_code": "Paths of Python processes left native: a frame's code object was of another type",
    "python_debug_offsets_differ": "Interpreters not walked: the offsets they publish (3.13+) differ from the table",
    "python_no_thread": "Calls in a Python process whose thread state was not found (not a Python thread)",
    "python_not_walked": "Calls in a Python process whose frames could not be read",
    "python_codes_unread": "Python code objects whose names could not be read (process gone, not ASCII)",
    "python_named_evicted": "Named Python code objects dropped from the agent's bounded cache",
    "python_version_not_described": "Interpreters of a CPython version the agent has no layout for",
    "python_interpreter_without_symbols": "Interpreter files without _PyRuntime or the evaluation loop",
    "python_thread_unknown_libc": "CPython < 3.11 processes on a libc that does not describe struct pthread",
    "python_describe_failed": "Python processes whose description could not be written to the kernel",
}


class SnapshotCollector(Collector):
    """Exposes the latest Snapshot; nothing until the first one is taken."""

    def __init__(self, latest: Callable[[], Snapshot | None]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        snapshot = self._latest()
        if snapshot is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}_report_timestamp_seconds",
                                "When these figures were taken (SignalStatistics.reported_at_us)",
                                value=snapshot.reported_at_us / 1e6)
        yield CounterMetricFamily(f"{PREFIX}_calls", "Calls that hit the probes (kernel count)",
                                  value=snapshot.total_events)
        yield CounterMetricFamily(f"{PREFIX}_delivered_calls", "Calls whose records Kafka acknowledged",
                                  value=snapshot.delivered_events)
        dropped = CounterMetricFamily(f"{PREFIX}_dropped_calls", "Calls lost, by reason", labels=["reason"])
        for reason, calls in sorted(snapshot.dropped_by_reason.items()):
            dropped.add_metric([reason], calls)
        yield dropped
        gauges = [
            ("pending_calls", "Calls held in the producer queue or the spool", snapshot.pending_events),
            ("calls_per_second", "Observed calls per second over the last report interval",
             snapshot.events_per_second),
            ("unique_call_paths", "Distinct call paths seen since start", snapshot.unique_call_paths),
            ("ringbuf_utilization_percent", "Highest ring buffer fill since the previous report",
             snapshot.buffer_utilization_percent),
            ("cpu_overhead_percent", "Agent CPU plus BPF program run time, % of one core",
             snapshot.cpu_overhead_percent),
            ("memory_bytes", "Agent resident memory plus BPF map memory", snapshot.memory_usage_bytes),
            ("spool_bytes", "Bytes held in the on-disk spool", snapshot.spool_bytes),
        ]
        for name, text, value in gauges:
            yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)
        yield CounterMetricFamily(f"{PREFIX}_cpu_seconds", "Agent process CPU time",
                                  value=snapshot.agent_cpu_ns / 1e9)
        yield CounterMetricFamily(f"{PREFIX}_bpf_run_seconds", "BPF program run time (kernel BPF stats)",
                                  value=snapshot.bpf_run_time_ns / 1e9)
        attached = GaugeMetricFamily(f"{PREFIX}_probe_attached", "1 while the probe is attached",
                                     labels=["probe"])
        probe_calls = CounterMetricFamily(f"{PREFIX}_probe_calls", "Calls observed per probe", labels=["probe"])
        detached = CounterMetricFamily(f"{PREFIX}_probe_detached_seconds",
                                       "Time the adaptive budget kept the probe detached", labels=["probe"])
        for probe in snapshot.probes:
            attached.add_metric([probe.probe_id], 1.0 if probe.attached else 0.0)
            probe_calls.add_metric([probe.probe_id], probe.calls)
            detached.add_metric([probe.probe_id], probe.detached_ns / 1e9)
        yield attached
        yield probe_calls
        yield detached
        caches = GaugeMetricFamily(f"{PREFIX}_cache_entries",
                                   "Entries in each long-lived cache or queue (each is bounded)", labels=["cache"])
        for name, entries in sorted(snapshot.caches.items()):
            caches.add_metric([name], entries)
        yield caches
        for name, value in sorted(snapshot.unwind.items()):
            yield GaugeMetricFamily(f"{PREFIX}_unwind_{name}", _UNWIND_HELP.get(name, name), value=value)


class CountersCollector(Collector):
    """A part's own counters (dict name -> count) as one labelled counter family."""

    def __init__(self, name: str, documentation: str, read: Callable[[], dict[str, int]]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(f"{PREFIX}_{self._name}", self._documentation, labels=["counter"])
        for counter, value in sorted(self._read().items()):
            family.add_metric([counter], value)
        yield family


class HealthServer:
    """Serves /metrics, /healthz and /readyz on a background thread."""

    def __init__(self, address: str, port: int, latest: Callable[[], Snapshot | None],
                 healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        registry = self._registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(latest))
        checks = {"/healthz": healthy, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in checks:
                    ok = checks[path]()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self._send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a scrape every few seconds is not worth a log line

        try:
            self._server = ThreadingHTTPServer((address, port), Handler)
        except OSError as exc:
            raise ConfigError(f"agent.metrics_port (--metrics-port) {port}: cannot listen on {address}:{port}: "
                              f"{exc.strerror}") from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def add_counters(self, name: str, documentation: str, read: Callable[[], dict[str, int]]) -> None:
        """Expose a part's counters as runtime_signals_agent_<name>{counter="..."}."""
        self._registry.register(CountersCollector(name, documentation, read))

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (/healthz, /readyz)", *self._server.server_address[:2])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
