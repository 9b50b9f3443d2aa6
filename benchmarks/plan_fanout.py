"""How long a probe plan takes to reach N agents: one plan published, N real plan followers
(agent/plans.py PlanFollower, each with its own Kafka consumer and producer, as N agents have)
read it, take its targets on and publish their status; the figure is the time from the publish
to each status on the broker (its append time), for N = 1, 10, 50, 100 on one machine.

    python -m benchmarks.plan_fanout --bootstrap 127.0.0.1:19092 [--agents 1 10 50 100]

What each agent then does on its own node (resolve the plan's symbols, attach one uprobe per
function: 68 ms per symbol here, `benchmarks.plan_attach`) runs on N nodes in parallel, so a
fleet's time to attached is this distribution time plus one node's attach time. Here the
followers' target managers resolve against an empty /proc (no process maps the plan's file),
so the figure is the distribution alone; all N share this machine's two CPUs, which a fleet's
agents do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from runtime_signals.agent.plans import PLAN_STATUS, PROBE_PLAN, PlanFollower
from runtime_signals.agent.targets import TargetManager
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames


class _Sink:
    """The agent's Publisher interface over one producer (statuses only)."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None, calls: int = 0) -> None:
        self._producer.produce(topic, value, key)
        self._producer.poll(0)

    def flush(self) -> None:
        self._producer.flush(30)


def fan_out(bootstrap: str, agents: int, empty_proc: Path, timeout_s: float = 300.0) -> dict[str, Any]:
    names = TopicNames().with_prefix(f"fanout-{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, names, partitions=1)
    registry = codec.SchemaRegistry.default()
    stop = threading.Event()
    sinks = [_Sink(bootstrap) for _ in range(agents)]
    followers = []
    for n in range(agents):
        manager = TargetManager([], [], attach=None, proc_root=empty_proc, host_root=empty_proc)
        follower = PlanFollower(manager, sinks[n], names, consumer_config={"bootstrap.servers": bootstrap},
                                host=f"bench-node-{n:04d}", agent_id=f"bench-node-{n:04d}/1",
                                status_interval_ms=60_000)
        follower.run(stop)
        followers.append(follower)
    time.sleep(5.0)  # every follower has its partitions assigned before the plan goes out
    plan = {"format_version": 1, "plan_id": "fanout", "created_at_us": time.time_ns() // 1000,
            "advisories": ["BENCH-0001"], "not_watched": [],
            "targets": [{"vulnerability": "BENCH-0001", "purl": None, "language": "c",
                         "binary": "/usr/lib/x86_64-linux-gnu/libz.so.1", "symbols": ["crc32"], "containers": []}]}
    producer = Producer({"bootstrap.servers": bootstrap})
    published_ms = time.time() * 1000
    producer.produce(names.plans, codec.encode(plan, PROBE_PLAN, registry), b"fanout")
    producer.flush(30)
    reader = TopicReader(bootstrap, timeout_s=10)
    latencies: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(latencies) < agents and time.monotonic() < deadline:
        for sink in sinks:
            sink.flush()
        for record in reader.read(names.plan_status, reader.whole_topic(names.plan_status)):
            status = codec.decode(record.value or b"", registry, PLAN_STATUS).record
            if status["state"] == "ACTIVE" and record.timestamp_ms:
                latencies.setdefault(status["host"], record.timestamp_ms - published_ms)
        time.sleep(0.2)
    stop.set()
    values = sorted(latencies.values())
    return {"agents": agents, "statuses": len(values),
            "p50_ms": round(statistics.median(values), 1) if values else None,
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1) if values else None,
            "max_ms": round(values[-1], 1) if values else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plan_fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as empty:
        rows = [fan_out(args.bootstrap, n, Path(empty)) for n in args.agents]
    print("| agents | statuses | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['agents']} | {row['statuses']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
