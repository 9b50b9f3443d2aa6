"""The benchmark suite still runs end to end (toy sizes, so it cannot rot between full runs).

It asserts that every stage produced its figures and files, never what the figures are:
timings on a shared machine are the benchmarks' business (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

REPO = Path(__file__).resolve().parent.parent


def test_quick_suite_writes_every_figure_table_and_plot(kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--bootstrap", kafka_bootstrap, "--out", str(out),
         "--work-dir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=500)
    logs = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, logs

    results = json.loads((out / "results.json").read_text())
    for stage in ("probe_agent", "unwind", "hot", "processor", "latency", "watch", "python_probe", "windows", "fleet"):
        assert "error" not in results[stage], f"{stage}: {results[stage].get('traceback')}"
    probe = results["probe_agent"]
    assert [(row["calls"], row["paths"]) for row in probe["rows"]] == [
        (300, 1), (600, 1), (900, 1), (300, 1000), (600, 1000), (900, 1000)]
    # Every probed call reached the raw topic: the agent's figures are of real work.
    assert probe["call_events_on_topic"] == probe["calls_sent"]
    assert all(row["cost_ratio"] is not None for row in [*probe["rows"][:3], probe["leaf"]])
    assert all(row["agent_vs_floor"] > 0 for row in probe["rows"])
    hot_rows = [row for row in results["hot"]["rows"] if "skipped" not in row]
    assert hot_rows and all(row["paths_reported"] == row["paths"] for row in hot_rows)
    processor_rows = results["processor"]["rows"]
    assert {(row["kind"], row["workers"]) for row in processor_rows} == {
        ("throughput", 1), ("throughput", 2), ("containers", 1), ("memory", 1)}
    assert all(row["peak_rss_bytes"] > 0 for row in processor_rows)
    assert all(row["floor_events_per_s"] > 0 for row in processor_rows if row["kind"] != "memory")
    assert results["latency"]["rows"][0]["calls"] == 50
    assert results["watch"]["calls"] == 50 and results["watch"]["p50_ms"] > 0
    assert results["windows"]["calls"] == 600 and results["windows"]["raw_records"] > 0

    unwind_rows = results["unwind"]["rows"]
    assert [row["build"] for row in unwind_rows] == ["frame pointers", "cfi"]
    assert all(row["agent_vs_stackcount"] is not None and row["agent_vs_floor"] is not None for row in unwind_rows)
    fleet_rows = results["fleet"]["rows"]
    assert [row["workers"] for row in fleet_rows] == [1]
    assert all(row["floor_records_per_s"] > 0 and row["worker_cpu_s_per_million"] > 0
               and row["faust_floor_cpu_s_per_million"] > 0 for row in fleet_rows)

    table = (out / "results.md").read_text()
    for heading in ("## 1. Probe cost", "## 1c. Stack walk cost", "## 1b. A hot function", "## 2. Agent throughput",
                    "## 3. Processor throughput", "## 4. End-to-end latency", "## 5. First (provisional) answer",
                    "## 6. Window attribution"):
        assert heading in table
    if importlib.util.find_spec("matplotlib") is not None:  # the plot needs the `bench` extra
        assert (out / "benchmarks-scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
