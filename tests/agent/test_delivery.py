"""Delivery through a broker outage, against a dedicated real broker that the test stops
and restarts: the agent keeps collecting into its on-disk spool, a SIGTERM during the
outage leaves what it holds in the spool, the next agent run delivers it, and every call
made during the outage reaches the raw topic once, in order."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime_signals.devtools import localkafka
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, STATISTICS, AgentProcess, decode_all, read_all
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

OUTAGE_S = 30.0
WATERMARK = "io.runtimesignals.AgentWatermark"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[localkafka.LocalKafkaConfig]:
    """A broker of this test's own, on free ports, with its state under tmp_path."""
    port, controller_port = localkafka.free_port_pair()
    cfg = localkafka.LocalKafkaConfig.from_env(state_dir=tmp_path / "broker", port=port,
                                               controller_port=controller_port)
    try:
        localkafka.up(cfg)
    except (localkafka.ToolNotFoundError, localkafka.ProvisionError) as exc:
        pytest.skip(f"the local broker cannot run here: {exc}")
    try:
        yield cfg
    finally:
        localkafka.down(cfg)


def _run_workload(workload: Path, uploads: int, previews: int) -> int:
    subprocess.run([str(workload), str(uploads), str(previews), "1200"], check=True, stdout=subprocess.DEVNULL)
    return uploads + previews


def _wait_for_calls(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    events: list[dict] = []
    while time.monotonic() < deadline:
        events = decode_all(read_all(bootstrap, topic), CALL_EVENT)
        if sum(e["observation_count"] for e in events) >= expected:
            return events
        time.sleep(1.0)
    return events


def test_calls_made_while_the_broker_is_down_are_all_delivered_after_it_returns(
        broker: localkafka.LocalKafkaConfig, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    workload = build_workload(tmp_path / "workload")
    bootstrap = broker.bootstrap
    prefix = f"delivery-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names)
    spool = tmp_path / "spool"
    # A small producer queue, so the outage overflows it into the spool within seconds.
    flags = ["--spool-dir", str(spool), "--producer-queue-max-messages", "40", "--statistics-interval-ms", "1000",
             "--shutdown-flush-timeout-ms", "1500"]
    probes = [f"{workload}:{PROBED_SYMBOL}"]
    first = AgentProcess(bootstrap, prefix, probes, tmp_path / "agent-1.log", flags)
    second = AgentProcess(bootstrap, prefix, probes, tmp_path / "agent-2.log", flags)
    with first:
        calls = _run_workload(workload, 3, 2)  # broker up
        localkafka.down(broker)
        down_at = time.monotonic()
        calls += _run_workload(workload, 7, 5)
        # SIGTERM while the broker is away: what the agent holds goes to the spool.
        assert first.stop() == 0, first.log()[-4000:]
    assert sum(p.stat().st_size for p in spool.glob("*.seg")) > 0, first.log()[-3000:]
    assert "left in the spool for the next run" in first.log(), first.log()[-3000:]

    with second:  # started during the outage, on the same spool
        calls += _run_workload(workload, 11, 13)
        while time.monotonic() - down_at < OUTAGE_S:
            calls += _run_workload(workload, 2, 1)
            time.sleep(3)
        localkafka.up(broker)
        events = _wait_for_calls(bootstrap, names.raw, calls, timeout_s=120)
        assert second.stop() == 0, second.log()[-4000:]
    logs = f"agent 1:\n{first.log()[-2500:]}\nagent 2:\n{second.log()[-2500:]}"

    events = decode_all(read_all(bootstrap, names.raw), CALL_EVENT)
    assert sum(e["observation_count"] for e in events) == calls, logs
    assert len({e["event_id"] for e in events}) == len(events), "a record was delivered twice"
    reports = decode_all(read_all(bootstrap, names.statistics), STATISTICS)
    assert max(r["spool_bytes"] for r in reports) > 0, "the outage never reached the spool"
    assert not list(spool.glob("*.seg")), "the spool was not drained"

    # Order survived the spool: on each partition, no call of an agent comes after a
    # watermark of that agent that promised it would not.
    registry = codec.SchemaRegistry.default()
    for partition_records in _by_partition(bootstrap, names.raw).values():
        promised: dict[str, int] = defaultdict(int)
        for value in partition_records:
            decoded = codec.decode(value, registry)
            record = decoded.record
            if decoded.schema_name == WATERMARK:
                assert record["watermark_us"] >= promised[record["agent_id"]]
                promised[record["agent_id"]] = record["watermark_us"]
            elif decoded.schema_name == CALL_EVENT:
                assert record["observed_at_us"] >= promised[record["agent_id"]], record


def _by_partition(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "delivery-test", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: dict[int, list[bytes]] = {p: [] for p in partitions}
        remaining = set(partitions)
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise AssertionError(f"{topic}[{message.partition()}]: {message.error()}")
            records[message.partition()].append(message.value())
        return records
    finally:
        consumer.close()


def test_sigkill_during_an_outage_then_restart_loses_nothing(broker: localkafka.LocalKafkaConfig,
                                                             tmp_path: Path) -> None:
    """Killed with SIGKILL while the broker is away: the records of the outage are on disk
    (once no acknowledgement came for 2 s, records go to the spool, not librdkafka's
    memory), the calls the kernel held are pinned; the next agent starts while the broker is
    still away, continues the same identity and figures, and once
    the broker is back every call is on the topic once and nothing is counted lost."""
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from runtime_signals.agent import bpfsys
    from runtime_signals.agent.pinning import PIN_ROOT

    if not bpfsys.bpffs_mounted(PIN_ROOT.parent):
        pytest.skip(f"no BPF filesystem at {PIN_ROOT.parent} (scripts/bootstrap.sh mounts it)")
    workload = build_workload(tmp_path / "workload")
    bootstrap = broker.bootstrap
    prefix = f"killed-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names)
    spool = tmp_path / "spool"
    flags = ["--spool-dir", str(spool), "--statistics-interval-ms", "1000", "--no-budget"]
    probes = [f"{workload}:{PROBED_SYMBOL}"]
    first = AgentProcess(bootstrap, prefix, probes, tmp_path / "agent-1.log", flags)
    second = AgentProcess(bootstrap, prefix, probes, tmp_path / "agent-2.log", flags)
    with first:
        calls = _run_workload(workload, 3, 2)
        time.sleep(1.0)
        localkafka.down(broker)
        time.sleep(4.0)  # past outage_after_ms: the agent now writes to the spool
        calls += _run_workload(workload, 40, 30)
        time.sleep(1.0)
        assert first.process is not None
        import os
        import signal as signals

        os.killpg(first.process.pid, signals.SIGKILL)
        first.process.wait()
    assert sum(p.stat().st_size for p in spool.glob("*.seg")) > 0, first.log()[-3000:]
    with second:  # the broker is still away
        calls += _run_workload(workload, 11, 13)
        localkafka.up(broker)
        _wait_for_calls(bootstrap, names.raw, calls, timeout_s=120)
        time.sleep(2.0)
        assert second.stop() == 0, second.log()[-4000:]
    logs = f"agent 1:\n{first.log()[-2500:]}\nagent 2:\n{second.log()[-2500:]}"
    events = decode_all(read_all(bootstrap, names.raw), CALL_EVENT)
    assert sum(e["observation_count"] for e in events) == calls, logs
    assert len({e["event_id"] for e in events}) == len(events), "a record was delivered twice"
    reports = decode_all(read_all(bootstrap, names.statistics), STATISTICS)
    assert len({r["agent_id"] for r in reports}) == 1, "one identity across the restart"
    last = max(reports, key=lambda r: r["reported_at_us"])
    assert last["total_events"] == calls == last["delivered_events"], (last, logs)
    assert last["dropped_events"] == 0 and last["pending_events"] == 0, last
