"""The walking skeleton, for real: uprobe -> ring buffer -> agent -> Kafka -> faust -> summary."""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.agent.identity import host_id
from runtime_signals.devtools.demo import create_topics, wait_for_summaries
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.schemas.topics import TopicNames
from tests.bpf_support import bpf_unavailable_reason
from tests.schemas import recipe_v2

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

UPLOADS = 7
PREVIEWS = 5


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workload(tmp_path_factory.mktemp("workload"))


def test_two_call_paths_are_summarized_with_exact_counts(kafka_bootstrap: str, workload: Path,
                                                         tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    with LocalPipeline(kafka_bootstrap, [f"{workload}:{PROBED_SYMBOL}"], topic_prefix=prefix,
                       window_ms=1000, lateness_ms=300, log_dir=tmp_path,
                       processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor()
        pipeline.start_agent()
        subprocess.run([str(workload), str(UPLOADS), str(PREVIEWS), "1500"], check=True,
                       stdout=subprocess.DEVNULL)
        summaries = wait_for_summaries(kafka_bootstrap, names.summaries, UPLOADS + PREVIEWS, timeout_s=90)
        assert pipeline.stop_agent() == 0, pipeline.log("agent")
        # Windows still open when the agent stopped are closed by its last watermark:
        # read again after it, so a double count would show.
        summaries = wait_for_summaries(kafka_bootstrap, names.summaries, UPLOADS + PREVIEWS, timeout_s=10)
        pipeline.stop_processor()
    logs = f"agent log:\n{pipeline.log('agent')[-3000:]}\nprocessor log:\n{pipeline.log('processor')[-3000:]}"

    assert summaries, logs
    assert {s["container_id"] for s in summaries} == {host_id()}
    assert sum(s["total_events"] for s in summaries) == UPLOADS + PREVIEWS, logs

    # The calls may straddle a window boundary: add up each path over the windows.
    per_path: Counter[tuple[str, ...]] = Counter()
    for summary in summaries:
        assert sum(p["observation_count"] for p in summary["call_paths"]) == summary["total_events"]
        for path in summary["call_paths"]:
            per_path[tuple(path["symbols"])] += path["observation_count"]
            assert path["symbols"][-1] == PROBED_SYMBOL
            assert path["path_hash"].startswith("sha256:")
        assert PROBED_SYMBOL in summary["observed_symbols"]
    assert sorted(per_path.values()) == sorted([UPLOADS, PREVIEWS]), per_path
    # The agent published the workload's symbol table; the processor named every frame of it.
    by_tail = {path[-4:]: count for path, count in per_path.items()}
    assert by_tail[("main", "handle_upload", "decode_image", PROBED_SYMBOL)] == UPLOADS, per_path
    assert {path[-3:]: count for path, count in per_path.items()}[
        ("main", "handle_preview", PROBED_SYMBOL)] == PREVIEWS, per_path
    check_every_hash_recomputes(summaries, workload)


def check_every_hash_recomputes(summaries: list[dict[str, Any]], workload: Path) -> None:
    """A third party's check: every hash of the published summaries follows, by a second
    implementation written from schemas/HASHING.md alone, from the published fields."""
    checked = 0
    for summary in summaries:
        assert summary["hash_recipe"] == "runtime-signals/v2"
        path_hashes = []
        for path in summary["call_paths"]:
            assert path["hash_recipe"] == "runtime-signals/v2"
            assert len(path["purls"]) == len(path["symbols"]) == len(path["addresses"])
            again = recipe_v2.recompute_path(path)
            assert again["node_hashes"] == path["node_hashes"], path
            assert again["path_hash"] == path["path_hash"] and again["callstack_hash"] == path["callstack_hash"]
            path_hashes.append(path["path_hash"])
            checked += 3 + len(path["node_hashes"])
            # The workload is no package: its frames are named by its file name and digest,
            # and the path says which program took it.
            main = path["symbols"].index("main")
            assert path["purls"][main] == f"pkg:generic/{workload.name}?checksum={path['binary_digests'][main]}"
            assert [(e["path"], e["comm"]) for e in path["executables"]] == [(str(workload), workload.name[:15])]
            assert path["executables"][0]["binary_digest"] == path["binary_digests"][main]
        assert recipe_v2.combined(path_hashes) == summary["combined_path_hash"]
        assert sorted({h for p in summary["call_paths"] for h in p["node_hashes"]}) == summary["observed_node_hashes"]
        checked += 1
    assert checked > 10
