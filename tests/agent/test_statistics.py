"""SignalStatistics on the statistics topic and the same figures on /metrics, from a real
agent observing a real workload; /healthz and /readyz answer as Kubernetes expects."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.localkafka import free_port_pair
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import STATISTICS, AgentProcess, decode_all, read_all
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

UPLOADS, PREVIEWS = 7, 5
PREFIX = "runtime_signals_agent_"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = _get(port, "/metrics")
    assert status == 200, text
    return {(sample.name.removeprefix(PREFIX), tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _wait(condition, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return build_workload(tmp_path_factory.mktemp("workload"))


def test_statistics_topic_and_metrics_endpoint_report_the_same_figures(kafka_bootstrap: str, workload: Path,
                                                                       tmp_path: Path) -> None:
    prefix = f"stats-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    probe_id = f"{workload}:{PROBED_SYMBOL}"
    # Set in the configuration file, as a DaemonSet's ConfigMap would.
    config = tmp_path / "signals.toml"
    config.write_text('[agent]\nmetrics_port = 0\nmetrics_address = "127.0.0.1"\nstatistics_interval_ms = 500\n')
    flags = ["--config", str(config)]
    with AgentProcess(kafka_bootstrap, prefix, [probe_id], tmp_path / "agent.log", flags) as agent:
        port = agent.metrics_port
        _wait(lambda: _get(port, "/readyz")[0] == 200, 30, "/readyz")
        assert _get(port, "/healthz")[0] == 200
        subprocess.run([str(workload), str(UPLOADS), str(PREVIEWS), "1500"], check=True, stdout=subprocess.DEVNULL)
        metrics = _wait(lambda: (m := _metrics(port)).get(("delivered_calls_total", ())) == UPLOADS + PREVIEWS
                        and m, 30, "the calls on /metrics")
        reports = decode_all(read_all(kafka_bootstrap, names.statistics), STATISTICS)
        assert agent.stop() == 0, agent.log()[-4000:]

    # /metrics serves the figures of a published report, unchanged.
    taken_us = metrics[("report_timestamp_seconds", ())] * 1e6
    report = next(r for r in reports if abs(r["reported_at_us"] - taken_us) <= 2)
    assert metrics[("calls_total", ())] == report["total_events"] == UPLOADS + PREVIEWS
    assert metrics[("delivered_calls_total", ())] == report["delivered_events"]
    assert metrics[("pending_calls", ())] == report["pending_events"] == 0
    assert metrics[("unique_call_paths", ())] == report["unique_call_paths"] == 2
    assert {labels[0][1]: value for (name, labels), value in metrics.items()
            if name == "dropped_calls_total"} == report["dropped_by_reason"]
    for metric, field in [("calls_per_second", "events_per_second"),
                          ("ringbuf_utilization_percent", "buffer_utilization_percent"),
                          ("cpu_overhead_percent", "cpu_overhead_percent"),
                          ("memory_bytes", "memory_usage_bytes"), ("spool_bytes", "spool_bytes")]:
        assert metrics[(metric, ())] == pytest.approx(report[field]), metric
    assert metrics[("probe_attached", (("probe", probe_id),))] == 1
    assert metrics[("probe_calls_total", (("probe", probe_id),))] == UPLOADS + PREVIEWS
    assert metrics[("bpf_run_seconds_total", ())] > 0  # kernel BPF stats are on while the agent runs
    # Probes retired because their file was rewritten in place (agent/filewatch.py): none here.
    assert metrics[("file_watch_total", (("counter", "probes_retired_file_changed"),))] == 0

    # The reports describe the run: rates while the workload ran, the agent's own cost.
    final = max(reports, key=lambda r: r["reported_at_us"])
    assert final["dropped_events"] == 0 and final["delivered_events"] == UPLOADS + PREVIEWS, final
    assert any(r["events_per_second"] > 0 for r in reports), reports
    assert all(0 <= r["buffer_utilization_percent"] <= 100 for r in reports)
    assert all(r["cpu_overhead_percent"] > 0 and r["memory_usage_bytes"] > 10 << 20 for r in reports), reports
    assert {r["agent_id"] for r in reports} == {final["agent_id"]} and final["host"]


def test_readyz_waits_for_the_broker_while_healthz_answers(workload: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = f"127.0.0.1:{free_port_pair()[0]}"  # nothing listens there
    # Set in the environment, as a pod spec's env would (the agent inherits it).
    monkeypatch.setenv("SIGNALS_AGENT__METRICS_PORT", "0")
    monkeypatch.setenv("SIGNALS_AGENT__METRICS_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("SIGNALS_AGENT__SHUTDOWN_FLUSH_TIMEOUT_MS", "500")
    with AgentProcess(unreachable, "", [f"{workload}:{PROBED_SYMBOL}"], tmp_path / "agent.log") as agent:
        port = agent.metrics_port
        time.sleep(2)
        assert _get(port, "/healthz")[0] == 200
        assert _get(port, "/readyz")[0] == 503
        assert agent.stop() == 0, agent.log()[-4000:]
