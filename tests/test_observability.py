"""The operator kit (deploy/observability): the Grafana dashboard and the Prometheus alert
rules parse, their PromQL parses, they cover what an operator must be told about, and every
metric they name is served on /metrics by a live agent (real uprobes on a real workload) or a
live processor worker (on a real broker)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import AgentProcess
from tests.bpf_support import bpf_unavailable_reason
from tests.processor.harness import free_port

OBSERVABILITY = Path(__file__).resolve().parents[1] / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
RULES = OBSERVABILITY / "prometheus-rules.yaml"
OUR_METRIC = re.compile(r"\b(?:runtime_signals_agent|signals_processor)_[a-z0-9_]+\b")
# Grafana's own variables, replaced by what Prometheus would see.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*"}


def dashboard_queries() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in document["panels"] for t in panel.get("targets", [])]
    assert queries, "the dashboard has no query"
    return queries


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _selectors(node: object) -> set[str]:
    """Metric names of the vector selectors in a parsed PromQL expression."""
    found: set[str] = set()
    if type(node).__name__ == "VectorSelector":
        name = getattr(node, "name", None)
        if name:
            found.add(name)
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector", "args"):
        child = getattr(node, attribute, None)
        for item in child if isinstance(child, (list, tuple)) else [child]:
            if item is not None and not isinstance(item, (str, int, float)):
                found |= _selectors(item)
    return found


def named_metrics() -> set[str]:
    names: set[str] = set()
    for expr in [*dashboard_queries(), *(r["expr"] for r in alert_rules())]:
        parsed = promql_parser.parse(_promql(expr))  # a syntax error raises ValueError
        from_ast = {n for n in _selectors(parsed) if OUR_METRIC.fullmatch(n)}
        assert from_ast == set(OUR_METRIC.findall(expr)), expr  # the AST walk saw every name
        names |= from_ast
    return names


def test_the_rules_alert_on_what_operators_must_know_and_parse() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    for needed in ("CallsDropped", "SpoolFilling", "ProbeDetachedByBudget", "ConsumerLag", "DeadLetterGrowth"):
        assert f"RuntimeSignals{needed}" in names
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
    assert len(named_metrics()) >= 15



def _exposed(port: int, timeout_s: float = 60.0) -> set[str]:
    """Family and sample names on a live /metrics (counters as `x` and `x_total`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            families = list(text_string_to_metric_families(text))
            names = {f.name for f in families} | {s.name for f in families for s in f.samples}
            if any(n.startswith(("runtime_signals_agent_", "runtime_signals_processor_")) for n in names):
                return names
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no runtime-signals metrics on port {port} within {timeout_s:.0f}s")
        time.sleep(0.5)


def _caches(port: int, part: str) -> set[str]:
    """The cache labels of runtime_signals_<part>_cache_entries on a live /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return set(re.findall(rf'runtime_signals_{part}_cache_entries{{cache="([^"]+)"}}', text))


@pytest.mark.bpf
@pytest.mark.broker
def test_every_metric_the_dashboard_and_rules_name_is_served_live(kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    workload = build_workload(tmp_path / "workload")
    prefix = f"obs-{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, TopicNames().with_prefix(prefix), partitions=1)
    config = tmp_path / "signals.toml"
    config.write_text('[agent]\nmetrics_port = 0\nmetrics_address = "127.0.0.1"\nstatistics_interval_ms = 500\n')
    processor_port = free_port()
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline, \
            AgentProcess(kafka_bootstrap, prefix, [f"{workload}:{PROBED_SYMBOL}"], tmp_path / "agent.log",
                         ["--config", str(config)]) as agent:
        pipeline.start_processor("processor", ["--metrics-port", str(processor_port)], wait_ready_s=90)
        subprocess.run([str(workload), "3", "2"], check=True, stdout=subprocess.DEVNULL)
        live = _exposed(agent.metrics_port) | _exposed(processor_port)
        agent_caches, processor_caches = _caches(agent.metrics_port, "agent"), _caches(processor_port, "processor")
        deadline = time.monotonic() + 15
        while not processor_caches and time.monotonic() < deadline:  # its status timer has not run yet
            time.sleep(0.2)
            processor_caches = _caches(processor_port, "processor")
        assert agent.stop() == 0, agent.log()[-3000:]
    # Bounded caches of every part are on /metrics, the target manager's and the tracer's too.
    assert {"path_keys", "encoded_stacks", "symbol_indexes", "inline_reports", "uprobes_closing"} <= agent_caches, \
        agent_caches
    assert {"latest_states_in_memory", "latest_states_on_disk", "latest_paths_in_memory", "canonical_purls",
            "module_identities", "node_hashes", "named_stacks"} <= processor_caches, processor_caches
    missing = sorted(named_metrics() - live)
    assert not missing, f"named by the dashboard or the rules but not served: {missing}"
