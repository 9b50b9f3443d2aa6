"""`signals capture` and `signals replay` against a real broker, and reprocessing a capture.

The reprocessing test is the issue's promise: one capture, replayed twice into fresh raw
topics and processed by two independent `signals processor` workers, gives byte-identical
summary values for every key.
"""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import avro.datafile
import avro.io
import fastavro
import pytest
from confluent_kafka import Producer

from runtime_signals.capture.writer import CaptureRequest, capture, read_capture
from runtime_signals.consumer import SignalsClient, Target
from runtime_signals.consumer.kafka import TimestampType, TopicReader
from runtime_signals.consumer.summaries import read_topic
from runtime_signals.devtools.demo import create_topics, wait_for_summaries
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests import synthetic_raw
from tests.brokers import TopicFactory

pytestmark = pytest.mark.broker

T0_MS = (int(time.time()) - 3600) * 1000  # recent: inside every topic's retention
PER_PARTITION = 20


def _produce_numbered(bootstrap: str, topic: str, partitions: int) -> dict[tuple[int, int], dict]:
    """PER_PARTITION records on each partition, record i stamped T0_MS + i s, with headers;
    returns what was sent by (partition, offset) (offsets of a fresh topic start at 0)."""
    registry = codec.SchemaRegistry.default()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    sent = {}
    for partition in range(partitions):
        for i in range(PER_PARTITION):
            value = synthetic_raw.watermark(registry, (T0_MS + i * 1000) * 1000, i + 1)
            key = f"key-{partition}-{i}".encode()
            headers = [("n", str(i).encode()), ("dup", b"1"), ("dup", b"2")]
            producer.produce(topic, key=key, value=value, partition=partition, timestamp=T0_MS + i * 1000,
                             headers=headers)
            sent[(partition, i)] = {"key": key, "value": value, "timestamp_ms": T0_MS + i * 1000,
                                    "headers": tuple(headers)}
    assert producer.flush(30) == 0
    return sent


def _run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(signals_command(*args), capture_output=True, text=True, timeout=timeout_s)


def test_capture_by_offsets_keeps_every_byte_and_reads_in_apache_avro(
        kafka_bootstrap: str, unique_topic: TopicFactory, tmp_path: Path) -> None:
    topic = unique_topic(partitions=2)
    sent = _produce_numbered(kafka_bootstrap, topic, 2)
    out = tmp_path / "p1.avro"

    done = _run("capture", topic, "-o", str(out), "--bootstrap", kafka_bootstrap,
                "--partitions", "1", "--from-offset", "5", "--to-offset", "12")
    assert done.returncode == 0, done.stderr
    assert "captured 7 records" in done.stdout
    assert "rec/s" not in done.stderr  # no progress bar when stderr is not a terminal

    header, records = read_capture(out)
    assert [(r.partition, r.offset) for r in records] == [(1, o) for o in range(5, 12)]
    for record in records:
        expected = sent[(1, record.offset)]
        assert (record.key, record.value, record.timestamp_ms, record.headers) == (
            expected["key"], expected["value"], expected["timestamp_ms"], expected["headers"])
        assert record.timestamp_type is TimestampType.CREATE_TIME
    assert header.complete and header.records == 7 and header.topic == topic
    assert header.partition_count == 2
    assert header.values["offsets"] == {"1": {"first": 5, "last": 11, "records": 7}}
    assert header.values["requested"]["ranges"] == {"1": [5, 12]}
    watermark_fp = codec.fingerprint_hex("AgentWatermark")
    assert header.values["fingerprints"] == {
        watermark_fp: {"schema": "io.runtimesignals.AgentWatermark", "records": 7}}
    assert header.values["timestamps_ms"] == {"first": T0_MS + 5000, "last": T0_MS + 11000}
    assert header.avro_codec == "deflate"

    # Apache Avro's reference implementation reads the same file, header and records.
    with avro.datafile.DataFileReader(open(out, "rb"), avro.io.DatumReader()) as reader:
        assert reader.get_meta("avro.codec") == b"deflate"
        assert reader.get_meta("signals.source.topic").decode() == topic
        writer_schemas = json.loads(reader.get_meta("signals.writer_schemas"))
        reference_records = list(reader)
    assert [(r["partition"], r["offset"], r["key"], r["value"]) for r in reference_records] == [
        (1, r.offset, r.key, r.value) for r in records]
    # The header's writer schema alone decodes the values: no repository needed.
    body = fastavro.schemaless_reader(
        io.BytesIO(reference_records[0]["value"][codec.HEADER_BYTES:]),
        fastavro.parse_schema(writer_schemas[watermark_fp]))
    assert body["sequence"] == 6
    # ... also as installed without extras: no zstandard module, as `pip install avro` gives.
    bare = subprocess.run([sys.executable, "-c", (
        "import sys; sys.modules['zstandard'] = None\n"
        "import avro.datafile, avro.io\n"
        f"reader = avro.datafile.DataFileReader(open({str(out)!r}, 'rb'), avro.io.DatumReader())\n"
        "print(len(list(reader)))")], capture_output=True, text=True)
    assert bare.returncode == 0 and bare.stdout.strip() == "7", bare.stderr


def test_capture_by_time_range_takes_the_records_stamped_in_it(
        kafka_bootstrap: str, unique_topic: TopicFactory, tmp_path: Path) -> None:
    topic = unique_topic(partitions=2)
    _produce_numbered(kafka_bootstrap, topic, 2)
    out = tmp_path / "window.avro"
    since, until = T0_MS + 5000, T0_MS + 12_000
    done = _run("capture", topic, "-o", str(out), "--bootstrap", kafka_bootstrap, "--codec", "deflate",
                "--since", str(since), "--until", str(until))
    assert done.returncode == 0, done.stderr
    header, records = read_capture(out)
    got = sorted((r.partition, r.offset) for r in records)
    assert got == [(p, i) for p in (0, 1) for i in range(5, 12)]
    assert header.avro_codec == "deflate" and header.values["requested"]["since_ms"] == since
    assert header.values["requested"]["ranges"] == {"0": [5, 12], "1": [5, 12]}


def test_an_interrupted_capture_leaves_a_valid_file_that_says_so(
        kafka_bootstrap: str, unique_topic: TopicFactory, tmp_path: Path) -> None:
    topic = unique_topic(partitions=1)
    out = tmp_path / "follow.avro"
    partial = tmp_path / "follow.avro.partial"
    process = subprocess.Popen(signals_command("capture", topic, "-o", str(out), "--bootstrap",
                                               kafka_bootstrap, "--follow"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _produce_numbered(kafka_bootstrap, topic, 1)
        # The capture flushes its block whenever the topic goes quiet: wait to see them all.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _readable_records(partial) < PER_PARTITION:
            time.sleep(0.2)
        assert _readable_records(partial) == PER_PARTITION
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted" in stdout
    assert not partial.exists()
    header, records = read_capture(out)
    assert not header.complete and header.values["requested"]["follow"] is True
    assert [r.offset for r in records] == list(range(PER_PARTITION))
    assert header.values["offsets"] == {"0": {"first": 0, "last": PER_PARTITION - 1, "records": PER_PARTITION}}


def _readable_records(path: Path) -> int:
    """Records in the complete blocks of a container file being written."""
    if not path.exists():
        return 0
    count = 0
    try:
        with open(path, "rb") as handle:
            for block in fastavro.block_reader(handle):
                count += block.num_records
    except Exception:  # noqa: S110 -- the block being written is cut short: count the ones before it
        pass
    return count


def test_the_progress_bar_shows_on_a_terminal(kafka_bootstrap: str, unique_topic: TopicFactory,
                                              tmp_path: Path) -> None:
    topic = unique_topic(partitions=1)
    _produce_numbered(kafka_bootstrap, topic, 1)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(signals_command("capture", topic, "-o", str(tmp_path / "t.avro"),
                                               "--bootstrap", kafka_bootstrap),
                               stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process exited
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(60) == 0
    text = output.decode(errors="replace")
    assert "capture: 100%" in text and "rec/s" in text, text  # the bar, with its rate


def test_replay_keeps_keys_timestamps_headers_and_partitions(
        kafka_bootstrap: str, unique_topic: TopicFactory, tmp_path: Path) -> None:
    source = unique_topic(partitions=2)
    _produce_numbered(kafka_bootstrap, source, 2)
    reader = TopicReader(kafka_bootstrap)
    original = capture(reader, CaptureRequest(source), tmp_path / "src.avro")
    assert original.records == 2 * PER_PARTITION

    same = unique_topic(partitions=2)
    done = _run("replay", str(tmp_path / "src.avro"), "--to", same, "--bootstrap", kafka_bootstrap,
                "--rate", "400")
    assert done.returncode == 0, done.stderr
    assert f"replayed {2 * PER_PARTITION}/{2 * PER_PARTITION}" in done.stdout and "partitions kept" in done.stdout
    _, before = read_capture(tmp_path / "src.avro")
    capture(reader, CaptureRequest(same), tmp_path / "copy.avro")
    _, after = read_capture(tmp_path / "copy.avro")

    def exact(records):  # type: ignore[no-untyped-def]
        return sorted((r.partition, r.offset, r.key, r.value, r.timestamp_ms, r.timestamp_type, r.headers)
                      for r in records)

    assert exact(after) == exact(before)


def test_replay_into_fewer_partitions_fans_watermarks_out(
        kafka_bootstrap: str, unique_topic: TopicFactory, tmp_path: Path) -> None:
    prefix = f"fan-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=3)
    produced = synthetic_raw.produce_raw(kafka_bootstrap, names.raw, 3)
    reader = TopicReader(kafka_bootstrap)
    capture(reader, CaptureRequest(names.raw), tmp_path / "raw.avro")
    target = unique_topic(partitions=2)
    done = _run("replay", str(tmp_path / "raw.avro"), "--to", target, "--bootstrap", kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    assert "partitioned by key" in done.stdout
    capture(reader, CaptureRequest(target), tmp_path / "target.avro")
    _, records = read_capture(tmp_path / "target.avro")
    registry = codec.SchemaRegistry.default()
    kinds = [(r.partition, codec.decode(r.value, registry)) for r in records]
    calls = [d for _, d in kinds if d.schema_name == synthetic_raw.CALL_EVENT]
    assert len(calls) == produced.calls  # one record per call in PLAN
    # Each watermark (sent to 3 source partitions) reaches each of the 2 target partitions once.
    marks = sorted((p, d.record["sequence"]) for p, d in kinds if d.schema_name == synthetic_raw.WATERMARK)
    assert marks == [(p, s) for p in (0, 1) for s in (1, 2)]
    # A container's calls stay together on one partition, in their original order.
    by_container: dict[str, set[int]] = {}
    for partition, decoded in kinds:
        if decoded.schema_name == synthetic_raw.CALL_EVENT:
            by_container.setdefault(decoded.record["container_id"], set()).add(partition)
    assert all(len(parts) == 1 for parts in by_container.values())


def test_topic_to_topic_replay_from_a_time(kafka_bootstrap: str, unique_topic: TopicFactory) -> None:
    source = unique_topic(partitions=2)
    sent = _produce_numbered(kafka_bootstrap, source, 2)
    target = unique_topic(partitions=2)
    done = _run("replay", "--from-topic", source, "--since", str(T0_MS + 15_000), "--to", target,
                "--bootstrap", kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    reader = TopicReader(kafka_bootstrap)
    copied = list(reader.read(target, reader.whole_topic(target)))
    assert sorted((r.partition, r.offset + 15, r.key, r.value) for r in copied) == sorted(
        (p, i, sent[(p, i)]["key"], sent[(p, i)]["value"]) for p in (0, 1) for i in range(15, PER_PARTITION))


def _start_processor(bootstrap: str, prefix: str, workdir: Path) -> subprocess.Popen[bytes]:
    log = open(workdir / f"{prefix.rstrip('.')}.log", "wb")  # noqa: SIM115 -- the worker keeps it
    argv = signals_command("processor", "--bootstrap", bootstrap, "--topic-prefix",
                           prefix, "--window-ms", str(synthetic_raw.WINDOW_MS), "--allowed-lateness-ms",
                           str(synthetic_raw.LATENESS_MS), "--app-id", f"{prefix}processor")
    return subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_capture_reprocessed_twice_gives_byte_identical_summaries(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    source, first, second = (TopicNames().with_prefix(f"rp-{run}-{n}.") for n in ("src", "a", "b"))
    for names in (source, first, second):
        create_topics(kafka_bootstrap, names, partitions=3)
    produced = synthetic_raw.produce_raw(kafka_bootstrap, source.raw, 3)
    capture_file = tmp_path / "raw.avro"
    done = _run("capture", source.raw, "-o", str(capture_file), "--bootstrap", kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    for names in (first, second):
        done = _run("replay", str(capture_file), "--to", names.raw, "--bootstrap", kafka_bootstrap)
        assert done.returncode == 0, done.stderr

    # Two independent workers, each with its own app id and topics; started in tmp_path,
    # where faust puts its data directory.
    processors = [_start_processor(kafka_bootstrap, prefix, tmp_path) for prefix in (f"rp-{run}-a.", f"rp-{run}-b.")]
    try:
        for names in (first, second):
            wait_for_summaries(kafka_bootstrap, names.summaries, produced.calls, timeout_s=120)
    finally:
        for process in processors:
            _stop(process)
    logs = "\n".join((tmp_path / f"rp-{run}-{n}.log").read_text(errors="replace")[-2000:] for n in "ab")

    def values(topic: str) -> dict[bytes | None, bytes | None]:
        return dict(read_topic(kafka_bootstrap, topic))

    summaries_a, summaries_b = values(first.summaries), values(second.summaries)
    windows = {(c, i) for i, window in enumerate(synthetic_raw.PLAN) for c, _, _ in window}
    assert len(summaries_a) == len(windows), logs
    assert summaries_a == summaries_b
    assert values(first.paths) == values(second.paths)
    # The reprocessed summaries answer the reachability question.
    client = SignalsClient(kafka_bootstrap, first)
    reached = client.is_reached(Target(function=synthetic_raw.PROBED))
    assert reached.reached and reached.observation_count == synthetic_raw.TOTAL_CALLS
    assert {p.container_id for p in reached.paths} == {"ctr-a", "ctr-b"}
    never = client.is_reached(Target(function="png_read_chunk"), container="ctr-a")
    assert not never.reached and never.coverage.windows == 2
    latest = values(first.latest)  # one latest-state record per container
    assert set(latest) == {c.encode() for window in synthetic_raw.PLAN for c, _, _ in window}
    assert latest == values(second.latest)
    registry = codec.SchemaRegistry.default()
    total = sum(codec.decode(v, registry).record["total_events"] for v in summaries_a.values())
    assert total == produced.calls == synthetic_raw.TOTAL_CALLS
