"""Floors: the least any agent or worker must do with the same records, with the raw clients.

Run as their own processes (fresh interpreter, like the part they are the floor of):
    python -m benchmarks.floors produce --bootstrap B --topic T --samples FILE --count N
    python -m benchmarks.floors consume --bootstrap B --topic T --range P:START:END ...
    python -m benchmarks.floors consume-faust --bootstrap B --topic T --range P:START:END ...
Each prints one JSON object: {"records": n, "seconds": s, "cpu_s": c}.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from runtime_signals.schemas import codec

from .kafka_io import Offsets, read_range
from .procs import BenchmarkError

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"


def agent_like_producer(bootstrap: str) -> Producer:
    """The delivery settings the README gives for the agent: idempotent, acks=all, zstd,
    the Java client's partitioner, 50 ms linger, 1 MB batches."""
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "partitioner": "murmur2_random", "compression.type": "zstd", "linger.ms": 50,
                     "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})


def produce_floor(bootstrap: str, topic: str, samples: list[bytes], count: int) -> dict[str, Any]:
    """Encode and produce count call events (cycling through samples, decoded beforehand)."""
    registry = codec.SchemaRegistry.default()
    records = [codec.decode(value, registry, CALL_EVENT).record for value in samples]
    keys = [str(record["container_id"]).encode() for record in records]
    producer = agent_like_producer(bootstrap)
    # Metadata, connections and the idempotent producer id before the clock starts, as a
    # running agent has them.
    producer.produce(topic, value=samples[0], key=keys[0])
    if producer.flush(30):
        raise BenchmarkError(f"produce floor: the broker did not take a first record on {topic} in 30 s")
    delivered = [0]

    def on_delivery(err: object, _msg: object) -> None:
        if err is None:
            delivered[0] += 1

    cpu_start_s, start_s = time.process_time(), time.monotonic()
    for index in range(count):
        slot = index % len(records)
        value = codec.encode(records[slot], CALL_EVENT, registry)
        while True:
            try:
                producer.produce(topic, value=value, key=keys[slot], on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    seconds, cpu_s = time.monotonic() - start_s, time.process_time() - cpu_start_s
    if delivered[0] != count:
        raise BenchmarkError(f"produce floor: {delivered[0]} of {count} records delivered to {topic}")
    return {"records": count, "seconds": seconds, "cpu_s": cpu_s}


def consume_floor(bootstrap: str, topic: str, start: Offsets, end: Offsets) -> dict[str, Any]:
    """Consume [start, end) of each partition and decode every record. The clock starts at
    the first record: connecting and joining are not the floor's to pay (the workers it
    is compared with are connected already)."""
    registry = codec.SchemaRegistry.default()
    decoded = [0]
    clock: dict[str, float] = {}

    def decode_all(batch: list[tuple[int, bytes | None, bytes]]) -> None:
        if batch and not clock:
            clock.update(start_s=time.monotonic(), cpu_start_s=time.process_time())
        for _partition, _key, value in batch:
            codec.decode(value, registry)
        decoded[0] += len(batch)

    read_range(bootstrap, topic, start, end, decode_all)
    return {"records": decoded[0], "seconds": time.monotonic() - clock["start_s"],
            "cpu_s": time.process_time() - clock["cpu_start_s"]}


def faust_consume_floor(bootstrap: str, topic: str, start: Offsets, end: Offsets) -> dict[str, Any]:
    """consume_floor through faust's own per-record path: the worker's faust app class
    without batch handlers (consumer, fetch loop, Message and Event per record, conductor,
    agent stream, the worker's buffer size), each record decoded and nothing else done; a
    fresh consumer group of its own. Not a floor the worker is held to: what reading through
    faust's per-record path costs, which the worker no longer pays (it takes its records
    from the fetch loop, processor/faust_config.py); kept to show why."""
    import asyncio
    import os
    import tempfile
    import uuid

    import faust

    from runtime_signals.processor.faust_config import NoTablesManager, ProcessorApp, broker_urls

    registry = codec.SchemaRegistry.default()
    pending = {p: end[p] for p in end if end[p] > start.get(p, 0)}
    counted = [0]
    clock: dict[str, float] = {}
    app = ProcessorApp(f"floor-{uuid.uuid4().hex[:8]}", broker=broker_urls(bootstrap), autodiscover=False,
                       datadir=tempfile.mkdtemp(prefix="faust-floor-"), store="memory://",
                       key_serializer="raw", value_serializer="raw", consumer_auto_offset_reset="earliest",
                       stream_buffer_maxsize=16_384, broker_commit_interval=3600.0, topic_allow_declare=False,
                       topic_disable_leader=True, TableManager=NoTablesManager, web_enabled=False)
    source = app.topic(topic, key_type=bytes, value_type=bytes, acks=False)

    async def decode_all(stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            partition, offset = message.partition, message.offset
            if offset < start.get(partition, 0) or partition not in pending:
                continue
            if not clock:
                clock.update(start_s=time.monotonic(), cpu_start_s=time.process_time())
            codec.decode(message.value, registry)
            counted[0] += 1
            if offset + 1 >= pending[partition]:
                del pending[partition]
                if not pending:
                    result = {"records": counted[0], "seconds": time.monotonic() - clock["start_s"],
                              "cpu_s": time.process_time() - clock["cpu_start_s"]}
                    # faust redirects sys.stdout to its log, and its spinner writes escapes on
                    # the same line: the result goes to the descriptor, on a line of its own.
                    os.write(1, ("\n" + json.dumps(result) + "\n").encode())
                    os._exit(0)  # a benchmark child: faust's orderly shutdown takes seconds to measure nothing

    app.agent(source, name="floor")(decode_all)
    worker = faust.Worker(app, loglevel="warning", quiet=True, loop=asyncio.new_event_loop())
    worker.execute_from_commandline()
    raise BenchmarkError(f"faust floor: the worker stopped with {sorted(pending)} of {topic} not read to their end")


def run_floor_process(args: list[str], timeout_s: float = 600.0) -> dict[str, Any]:
    """Run `python -m benchmarks.floors ARGS` and return what it printed."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.floors", *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise BenchmarkError(f"floor {' '.join(args[:1])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def start_floor_process(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.floors", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)


def finish_floor_process(process: subprocess.Popen[str], timeout_s: float = 600.0) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=timeout_s)
    if process.returncode != 0:
        raise BenchmarkError(f"floor process failed ({process.returncode}): {stderr[-2000:]}")
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def range_args(start: Offsets, end: Offsets) -> list[str]:
    args = []
    for partition in sorted(end):
        args += ["--range", f"{partition}:{start.get(partition, 0)}:{end[partition]}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floors")
    parser.add_argument("kind", choices=["produce", "consume", "consume-faust"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--samples", type=Path, help="produce: pickled list of encoded call events")
    parser.add_argument("--count", type=int, default=0, help="produce: records to encode and produce")
    parser.add_argument("--range", action="append", default=[], metavar="P:START:END",
                        help="consume: a partition's offsets to read (repeatable)")
    args = parser.parse_args(argv)
    if args.kind == "produce":
        samples = pickle.loads(args.samples.read_bytes())
        result = produce_floor(args.bootstrap, args.topic, samples, args.count)
    else:
        start, end = {}, {}
        for text in args.range:
            partition, first, last = (int(part) for part in text.split(":"))
            start[partition], end[partition] = first, last
        floor = faust_consume_floor if args.kind == "consume-faust" else consume_floor
        result = floor(args.bootstrap, args.topic, start, end)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
