"""/healthz and /readyz of real workers on their metrics port (the probes of
deploy/k8s/base/processor-deployment.yaml): alive while the worker's event loop answers;
ready once in the group with every assigned partition restored and consuming — an idle
worker included, so a rolling update with more replicas than partitions cannot stall."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.processor.app import is_ready
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import free_port, wait_until

pytestmark = pytest.mark.broker

WORKER_ARGS = ["--session-timeout-ms", "6000", "--checkpoint-interval-ms", "300"]



def _status(port: int, path: str) -> int | None:
    """The HTTP status of GET path, None while nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_readiness_rule() -> None:
    ready = {"joined": True, "stopping": False, "rebalancing": False, "consuming": True, "assigned": {0, 1}, "restored": {0, 1}}
    assert is_ready(**ready)
    assert is_ready(**{**ready, "assigned": set(), "restored": set()})  # idle member of the group
    assert not is_ready(**{**ready, "restored": {0}})                   # partition 1 not restored yet
    assert not is_ready(**{**ready, "joined": False, "assigned": set(), "restored": set()})
    assert not is_ready(**{**ready, "rebalancing": True})
    assert not is_ready(**{**ready, "stopping": True})
    assert not is_ready(**{**ready, "consuming": False})


def test_workers_are_alive_and_ready_and_the_idle_one_takes_over(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"health-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)  # one partition: only one worker can own it
    ports = {"worker-a": free_port(), "worker-b": free_port()}
    with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=200,
                       log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor("worker-a", ["--metrics-port", str(ports["worker-a"]), *WORKER_ARGS],
                                 wait_ready_s=60)
        wait_until(lambda: _status(ports["worker-a"], "/readyz") == 200, 30, "worker-a ready")
        assert _status(ports["worker-a"], "/healthz") == 200
        assert _status(ports["worker-a"], "/metrics") == 200

        # A second worker in the group: one of them owns the partition, the other has
        # nothing to consume; both are alive and ready.
        pipeline.start_processor("worker-b", ["--metrics-port", str(ports["worker-b"]), *WORKER_ARGS],
                                 wait_ready_s=60)
        wait_until(lambda: all(_status(port, "/readyz") == 200 for port in ports.values()), 60, "both ready")
        assert all(_status(port, "/healthz") == 200 for port in ports.values())
        owns = f"assigned {names.raw}[0]"  # logged on each assignment; faust revokes all on a rebalance
        owner = wait_until(lambda: next((name for name in ports if owns in pipeline.log(name).rsplit("revoked", 1)[-1]),
                                        None), 30, "an owner")
        idle = next(name for name in ports if name != owner)

        # The owner leaves: the idle worker restores the partition and stays ready.
        assert pipeline.stop_processor(name=owner) == 0
        wait_until(lambda: owns in pipeline.log(idle).rsplit("revoked", 1)[-1]
                   and _status(ports[idle], "/readyz") == 200, 60, f"{idle} took over from {owner}")
        assert pipeline.stop_processor(name=idle) == 0
    assert "checkpoint restored" in pipeline.log(idle) or "no checkpoint" in pipeline.log(idle)
