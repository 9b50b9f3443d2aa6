"""A fleet simulator: the raw traffic of thousands of agents, recorded once, replayed per run.

Why: the processor's cost depends on what a fleet sends, not on what one benchmark target
does. A fleet differs from benchmarks/synthetic.py in three ways that change the figures:
- every agent sends a watermark to every raw partition each interval (agent/collector.py,
  publish_watermark), so watermarks grow with nodes x partitions, not with calls;
- an agent folds the calls of an interval per distinct stack (dedup, the default), so call
  records grow with the distinct active stacks of each process, which are heavy-tailed
  (a Zipf law over each image's stacks: a few hot paths, a long tail of rare ones);
- processes and containers come and go, each new process brings a module map, and every
  image brings its symbol tables.

What it writes, with the project's own codec and schemas, in the order agents send it:
per watermark interval, per node, the node's call records (key: container id, partition
chosen by the producer's murmur2_random as the agent's) then its watermark to every
partition (key: agent id). Module maps go to the modules topic (key
"<host>/<pid>/<start ticks>") when a process first calls; symbol tables to the symbols
topic (key "<digest>/0"). Everything is drawn from one seeded random generator and the
event time starts at a fixed instant, so one spec always gives the same bytes.

`record` produces it to a broker once and keeps it as three capture files
(runtime_signals.capture) plus a manifest (the spec, and what the processor must emit:
summaries and calls). `replay_into` puts a recording back on fresh topics with every
partition kept, so every run reads the same records in the same order.

    python -m benchmarks.fleet record --bootstrap 127.0.0.1:19092 --out benchmarks/out/fleet-1000 \
        --nodes 500 --containers-per-node 2
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import logging
import random
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from runtime_signals.capture.file import read_capture
from runtime_signals.capture.replay import ReplaySettings, replay
from runtime_signals.capture.writer import CaptureRequest, capture
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames

from .kafka_io import pipeline_topics
from .procs import BenchmarkError

log = logging.getLogger(__name__)

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
SYMBOL_TABLE = "io.runtimesignals.SymbolTable"
MODULE_MAP = "io.runtimesignals.ModuleMap"
LIBC_PATH = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LIBC_DIGEST = "sha256:" + "c1" * 32
LIBC_START = 0x27200           # __libc_start_call_main, 0x100 bytes
FUNCTION_BASE, FUNCTION_BYTES = 0x10000, 0x40
CLOCK_TICKS_PER_S = 100
# 2026-11-01 00:00 UTC: a fixed start, so a recording never depends on when it was made.
DEFAULT_START_US = 1_793_491_200_000_000
MANIFEST = "manifest.json"
CAPTURES = ("raw", "symbols", "modules")


@dataclass(frozen=True)
class FleetSpec:
    nodes: int = 500
    containers_per_node: int = 2
    processes_per_container: int = 2
    images: int = 40                    # distinct container images (binaries), shared across nodes
    functions_per_image: int = 512      # symbols of each image's binary
    stacks_per_image: int = 5_000       # distinct call stacks an image's code can make
    zipf_s: float = 1.1                 # exponent of the stacks' popularity law
    mean_calls_per_interval: float = 12.0   # per process; exponential across processes and intervals
    intervals: int = 10
    watermark_interval_ms: int = 500    # the agent's default
    window_ms: int = 1000               # the processor's --window-ms for this recording
    partitions: int = 12
    process_churn: float = 0.05         # share of processes replaced each interval
    container_churn: float = 0.01       # share of containers replaced each interval
    dedup: bool = True                  # the agent's default: one record per distinct stack per interval
    seed: int = 18
    start_us: int = DEFAULT_START_US

    def check(self) -> None:
        if self.window_ms % self.watermark_interval_ms:
            raise BenchmarkError(f"window_ms {self.window_ms} must be a multiple of watermark_interval_ms "
                                 f"{self.watermark_interval_ms}, or the last window would not close")
        if (self.intervals * self.watermark_interval_ms) % self.window_ms:
            raise BenchmarkError(f"{self.intervals} intervals of {self.watermark_interval_ms} ms do not end on a "
                                 f"{self.window_ms} ms window boundary")

    @property
    def containers(self) -> int:
        return self.nodes * self.containers_per_node


@dataclass
class Expected:
    """What a processor reading the recording must emit (with --allowed-lateness-ms 0)."""

    call_records: int = 0
    watermark_records: int = 0
    calls: int = 0
    module_maps: int = 0
    summaries: int = 0   # distinct (container, window) with a call
    distinct_paths_per_window: list[int] = field(default_factory=list)


@dataclass
class _Process:
    pid: int
    start_ticks: int
    image: int
    base: int       # load address of the image's binary (ASLR)
    libc_base: int
    announced: bool = False


@dataclass
class _Container:
    container_id: str
    cgroup_id: int
    image: int
    processes: list[_Process]


def _digest(image: int) -> str:
    return "sha256:" + f"{image:08x}" * 8


def _binary_path(image: int) -> str:
    return f"/srv/app-{image:03d}/bin/app"


class Fleet:
    """Generates the records; deterministic for a spec."""

    def __init__(self, spec: FleetSpec) -> None:
        spec.check()
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.registry = codec.SchemaRegistry.default()
        weights = [1.0 / (rank ** spec.zipf_s) for rank in range(1, spec.stacks_per_image + 1)]
        self._cumulative = list(itertools.accumulate(weights))
        self._stacks: dict[tuple[int, int], tuple[list[int], int]] = {}  # (image, rank) -> (callers, target)
        self._next_pid = [1000] * spec.nodes
        self._next_cgroup = 1
        self.expected = Expected()
        self.nodes = [[self._new_container(node) for _ in range(spec.containers_per_node)]
                      for node in range(spec.nodes)]

    # -- the fleet's state -----------------------------------------------------------

    def _new_process(self, node: int, image: int, at_us: int) -> _Process:
        pid = self._next_pid[node]
        self._next_pid[node] += 1 + self.rng.randrange(50)
        page = 0x1000
        return _Process(pid, (at_us - self.spec.start_us) * CLOCK_TICKS_PER_S // 1_000_000 + 100_000, image,
                        0x5500_0000_0000 + self.rng.randrange(0x1000_0000) * page,
                        0x7F00_0000_0000 + self.rng.randrange(0x1000_0000) * page)

    def _new_container(self, node: int, at_us: int | None = None) -> _Container:
        at_us = self.spec.start_us if at_us is None else at_us
        image = self._zipf_image()
        cgroup = self._next_cgroup
        self._next_cgroup += 1
        return _Container(f"{self.rng.getrandbits(256):064x}", cgroup, image,
                          [self._new_process(node, image, at_us) for _ in range(self.spec.processes_per_container)])

    def _zipf_image(self) -> int:
        # Images are as heavy-tailed as stacks: a few run on most nodes.
        return min(self.spec.images - 1, int(self.rng.paretovariate(1.2)) - 1)

    def _stack(self, image: int, rank: int) -> tuple[list[int], int]:
        known = self._stacks.get((image, rank))
        if known is None:
            shape = random.Random(hash((self.spec.seed, image, rank)) & 0xFFFF_FFFF)
            functions = self.spec.functions_per_image
            callers = [0] + [shape.randrange(1, functions) for _ in range(shape.randint(2, 10))]
            known = (callers, shape.randrange(functions - 32, functions))   # the last 32 are probed
            self._stacks[(image, rank)] = known
        return known

    def _churn(self, node: int, at_us: int) -> None:
        containers = self.nodes[node]
        for index, container in enumerate(containers):
            if self.rng.random() < self.spec.container_churn:
                containers[index] = self._new_container(node, at_us)
                continue
            for slot in range(len(container.processes)):
                if self.rng.random() < self.spec.process_churn:
                    container.processes[slot] = self._new_process(node, container.image, at_us)

    # -- records ---------------------------------------------------------------------

    def agent_id(self, node: int) -> str:
        return f"node-{node:05d}/{self.spec.seed}"

    def host(self, node: int) -> str:
        return f"node-{node:05d}"

    def symbol_records(self) -> Iterator[tuple[bytes, bytes]]:
        for image in range(self.spec.images):
            symbols = [{"file_offset": FUNCTION_BASE + i * FUNCTION_BYTES, "size_bytes": FUNCTION_BYTES,
                        "name": f"app{image:03d}_fn_{i:04d}"} for i in range(self.spec.functions_per_image)]
            yield self._table(_digest(image), symbols)
        yield self._table(LIBC_DIGEST, [{"file_offset": LIBC_START, "size_bytes": 0x100,
                                         "name": "__libc_start_call_main"}])

    def _table(self, digest: str, symbols: list[dict[str, Any]]) -> tuple[bytes, bytes]:
        return f"{digest}/0".encode(), codec.encode(
            {"binary_digest": digest, "build_id": None, "source": "benchmarks.fleet", "chunk_index": 0,
             "chunk_count": 1, "symbol_count": len(symbols), "symbols": symbols}, SYMBOL_TABLE, self.registry)

    def intervals(self) -> Iterator[tuple[list[tuple[bytes, bytes]], list[tuple[int | None, bytes, bytes]]]]:
        """Per watermark interval: (module maps, raw records (partition or None, key, value))."""
        spec = self.spec
        interval_us = spec.watermark_interval_ms * 1000
        window_us = spec.window_ms * 1000
        seen: set[tuple[str, int]] = set()
        paths: Counter[int] = Counter()
        for interval in range(spec.intervals):
            begin_us = spec.start_us + interval * interval_us
            modules: list[tuple[bytes, bytes]] = []
            raw: list[tuple[int | None, bytes, bytes]] = []
            for node in range(spec.nodes):
                if interval:
                    self._churn(node, begin_us)
                for container in self.nodes[node]:
                    for process in container.processes:
                        raw += self._calls(node, container, process, begin_us, interval_us, modules, seen, paths)
                watermark = codec.encode({"agent_id": self.agent_id(node), "host": self.host(node),
                                          "watermark_us": begin_us + interval_us, "sequence": interval + 1},
                                         WATERMARK, self.registry)
                raw += [(partition, self.agent_id(node).encode(), watermark) for partition in range(spec.partitions)]
                self.expected.watermark_records += spec.partitions
            if (begin_us + interval_us) % window_us == 0:
                self.expected.distinct_paths_per_window.append(len(paths))
                paths.clear()
            yield modules, raw
        self.expected.summaries = len(seen)

    def _calls(self, node: int, container: _Container, process: _Process, begin_us: int, interval_us: int,
               modules: list[tuple[bytes, bytes]], seen: set[tuple[str, int]],
               paths: Counter[int]) -> list[tuple[int | None, bytes, bytes]]:
        spec = self.spec
        # A spec with no calls is the watermarks alone: what a partition costs per node.
        count = int(self.rng.expovariate(1.0 / spec.mean_calls_per_interval)) if spec.mean_calls_per_interval else 0
        if count == 0:
            return []
        if not process.announced:
            process.announced = True
            modules.append(self._module_map(node, container, process, begin_us))
        ranks = [bisect.bisect_left(self._cumulative, self.rng.random() * self._cumulative[-1])
                 for _ in range(count)]
        times = sorted(begin_us + self.rng.randrange(interval_us) for _ in range(count))
        if spec.dedup:
            folded: dict[int, list[int]] = {}
            for rank, at_us in zip(ranks, times, strict=True):
                folded.setdefault(rank, []).append(at_us)
            calls = list(folded.items())
        else:
            calls = [(rank, [at_us]) for rank, at_us in zip(ranks, times, strict=True)]
        window_start_us = begin_us - begin_us % (spec.window_ms * 1000)
        seen.add((container.container_id, window_start_us))
        records = []
        for rank, stamps in calls:
            paths[hash((container.container_id, rank))] += 1
            records.append((None, container.container_id.encode(),
                            self._event(node, container, process, rank, stamps)))
        self.expected.call_records += len(records)
        self.expected.calls += count
        return records

    def _event(self, node: int, container: _Container, process: _Process, rank: int, stamps: list[int]) -> bytes:
        callers, target = self._stack(process.image, rank)
        digest, path = _digest(process.image), _binary_path(process.image)
        frames = [{"address": process.libc_base + LIBC_START + 0x4A, "binary_digest": LIBC_DIGEST,
                   "binary_offset": LIBC_START + 0x4A, "library": LIBC_PATH}]
        for function in callers:  # return addresses, inside each caller
            offset = FUNCTION_BASE + function * FUNCTION_BYTES + 0x10
            frames.append({"address": process.base + offset, "binary_digest": digest, "binary_offset": offset,
                           "library": path})
        target_offset = FUNCTION_BASE + target * FUNCTION_BYTES
        frames.append({"address": process.base + target_offset, "binary_digest": digest,
                       "binary_offset": target_offset, "library": path})
        name = f"app{process.image:03d}_fn_{target:04d}"
        return codec.encode({
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "container_id": container.container_id, "pid": process.pid, "tid": process.pid,
            "timestamp_ns": stamps[0] * 1000, "symbol": name, "function_address": frames[-1]["address"],
            "stack_trace": [f["address"] for f in frames], "runtime_type": "NATIVE", "library": path,
            "purl": None, "received_at_us": stamps[-1], "function_signature": None, "binary_digest": digest,
            "binary_offset": target_offset, "node_hash": None, "callstack_hash": None,
            "observed_at_us": stamps[0], "host": self.host(node), "agent_id": self.agent_id(node),
            "cgroup_id": container.cgroup_id, "probe_id": f"{path}:{name}", "observation_count": len(stamps),
            "last_timestamp_ns": stamps[-1] * 1000 if len(stamps) > 1 else None,
            "stack_frames": frames, "stack_truncated": False,
        }, CALL_EVENT, self.registry)

    def _module_map(self, node: int, container: _Container, process: _Process, at_us: int) -> tuple[bytes, bytes]:
        self.expected.module_maps += 1
        digest, path = _digest(process.image), _binary_path(process.image)
        span = FUNCTION_BASE + self.spec.functions_per_image * FUNCTION_BYTES
        modules = sorted([
            {"path": path, "start_address": process.base, "end_address": process.base + span, "file_offset": 0,
             "binary_digest": digest, "build_id": None, "purl": None},
            {"path": LIBC_PATH, "start_address": process.libc_base, "end_address": process.libc_base + 0x180000,
             "file_offset": 0, "binary_digest": LIBC_DIGEST, "build_id": None, "purl": None},
        ], key=lambda m: m["start_address"])
        key = f"{self.host(node)}/{process.pid}/{process.start_ticks}".encode()
        return key, codec.encode({
            "host": self.host(node), "agent_id": self.agent_id(node), "pid": process.pid,
            "process_start_ticks": process.start_ticks, "container_id": container.container_id,
            "executable": path, "runtime_type": "NATIVE", "version": 1, "observed_at_us": at_us,
            "modules": modules}, MODULE_MAP, self.registry)


# -- recording and replaying ---------------------------------------------------------

def _producer(bootstrap: str) -> Producer:
    # The agent's partitioner, so keyed call records land where an agent's would.
    return Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
                     "batch.size": 1_000_000, "compression.type": "zstd", "acks": "all",
                     "enable.idempotence": True, "queue.buffering.max.messages": 2_000_000,
                     "queue.buffering.max.kbytes": 2_000_000})


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, partition: int | None) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, partition=-1 if partition is None else partition)
            return
        except BufferError:
            producer.poll(0.05)


def record(bootstrap: str, out_dir: Path, spec: FleetSpec) -> dict[str, Any]:
    """Generate the fleet's traffic onto fresh topics and capture each topic into out_dir."""
    fleet = Fleet(spec)
    prefix = f"bench-fleet-rec-{uuid.uuid4().hex[:8]}."
    names = pipeline_topics(bootstrap, prefix, spec.partitions)
    producer = _producer(bootstrap)
    for key, value in fleet.symbol_records():
        _produce(producer, names.symbols, key, value, 0)
    for modules, raw in fleet.intervals():
        for key, value in modules:
            _produce(producer, names.modules, key, value, None)
        for partition, key, value in raw:
            _produce(producer, names.raw, key, value, partition)
        producer.poll(0)
    if producer.flush(300):
        raise BenchmarkError(f"fleet recording: records to {names.raw} not acknowledged within 300 s")
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = TopicReader(bootstrap)
    headers = {}
    for kind in CAPTURES:
        result = capture(reader, CaptureRequest(getattr(names, kind)), out_dir / f"{kind}.capture")
        headers[kind] = {"records": result.records, "records_sha256": result.metadata.get("records_sha256")}
    manifest = {"spec": asdict(spec), "expected": asdict(fleet.expected), "captures": headers}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def load_manifest(recording: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((recording / MANIFEST).read_text()))
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{recording / MANIFEST}: not a fleet recording ({exc}); make one with "
                             f"`python -m benchmarks.fleet record`") from exc


def replay_into(bootstrap: str, recording: Path, names: TopicNames,
                kinds: tuple[str, ...] = CAPTURES) -> dict[str, int]:
    """Put a recording on the given topics, partitions kept; returns records per topic.
    The topics must have the recording's partition count (pipeline_topics makes them)."""
    produced = {}
    for kind in kinds:
        header, records = read_capture(recording / f"{kind}.capture")
        topic = getattr(names, kind)
        result = replay(records, ReplaySettings(bootstrap, topic, header.partition_count,
                                                keep_partitions=kind != "modules"), total=len(records))
        if not result.ok:
            raise BenchmarkError(f"replaying {recording / (kind + '.capture')} into {topic}: {result}")
        produced[kind] = result.delivered
    return produced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    rec = sub.add_parser("record", help="generate a fleet's traffic and keep it as capture files")
    rec.add_argument("--bootstrap", required=True)
    rec.add_argument("--out", type=Path, required=True, help="directory for the captures and manifest.json")
    for name, value in asdict(FleetSpec()).items():
        rec.add_argument("--" + name.replace("_", "-"), type=type(value) if not isinstance(value, bool) else int,
                         default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    values = {name: getattr(args, name) for name in asdict(FleetSpec())}
    values["dedup"] = bool(values["dedup"])
    manifest = record(args.bootstrap, args.out, FleetSpec(**values))
    print(json.dumps(manifest["expected"] | {"captures": manifest["captures"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
