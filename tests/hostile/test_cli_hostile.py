"""The `signals` command against bad files and values: one line naming the file or the
setting, a non-zero exit, never a traceback; capture files carry a checksum, a damaged one
is refused before a single record is replayed, and an unwritable output leaves nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer

from runtime_signals.devtools.pipeline import signals_command
from tests.brokers import TopicFactory
from tests.processor.harness import read_all


def _run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(signals_command(*args), capture_output=True, text=True, timeout=timeout_s, check=False)


def _refused(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one error line of a refused command, checked for what it must name."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    # One line; a settings error lists its problems under one heading line, one per line.
    lines = [line for line in done.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("signals "), done.stderr
    for needle in needles:
        assert needle in lines[-1], done.stderr
    return lines[-1]


def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    config = tmp_path / "signals.toml"
    config.write_bytes(b'[kafka]\nclient_id = "\xff\xfe"\n')
    _refused(_run("config", "check", "--config", str(config)), str(config), "not UTF-8")


def test_a_ring_buffer_of_two_to_the_seventy_pages_is_refused_by_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "signals.toml"
    config.write_text(f"[agent]\nringbuf_pages = {2**70}\n")
    done = _run("config", "check", "--config", str(config))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "agent.ringbuf_pages" in done.stderr and "1 GiB" in done.stderr


@pytest.mark.parametrize("command", [["summaries"], ["capture", "t", "-o", "x.avro"]])
def test_a_time_beyond_year_one_is_an_argument_error(command: list[str], tmp_path: Path) -> None:
    done = _run(*command, "--since", "99999999999d")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'99999999999d' is further back than year 1" in done.stderr


@pytest.mark.parametrize("binary, says", [("/etc/passwd", "is not an ELF"), ("/etc", "is a directory")])
def test_a_probe_on_a_non_elf_file_or_a_directory_is_named(binary: str, says: str) -> None:
    _refused(_run("agent", "--check", "--probe", f"{binary}:foo"), f"--probe {binary}:foo", says)


@pytest.mark.parametrize("document", [
    {"id": "OSV-1", "affected": "not a list"},
    {"id": "OSV-2", "affected": [{"package": "pkg", "ecosystem_specific": {"functions": ["f"]}}]},
    {"id": "OSV-3", "affected": [{"ecosystem_specific": {"imports": [{"symbols": ["F"]}]}}]},
    {"id": "OSV-4", "affected": [{"ecosystem_specific": {"functions": "f"}}]},
    {"vulns": {"id": "OSV-5"}},
    [1, 2],
])
def test_malformed_osv_shapes_are_one_line_naming_the_file(document: object, tmp_path: Path) -> None:
    path = tmp_path / "osv.json"
    path.write_text(json.dumps(document))
    _refused(_run("export", "--functions", str(path), "--bootstrap", "127.0.0.1:1"), str(path))


def _topic_with_records(bootstrap: str, unique_topic: TopicFactory, count: int = 300) -> str:
    topic = unique_topic(partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for n in range(count):
        producer.produce(topic, key=f"k{n}".encode(), value=os.urandom(64) + bytes([n % 256]) * 64,
                         headers=[("n", str(n).encode())])
    assert producer.flush(30) == 0
    return topic


@pytest.mark.broker
def test_a_damaged_capture_is_refused_whole_and_nothing_is_replayed(kafka_bootstrap: str,
                                                                   unique_topic: TopicFactory,
                                                                   tmp_path: Path) -> None:
    source = _topic_with_records(kafka_bootstrap, unique_topic)
    good = tmp_path / "good.avro"
    done = _run("capture", source, "-o", str(good), "--bootstrap", kafka_bootstrap, "--codec", "deflate")
    assert done.returncode == 0, done.stderr
    data = good.read_bytes()

    truncated = tmp_path / "truncated.avro"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    # A bit flipped in the last block's compressed data: deflate carries no checksum, and the
    # header (metadata) is at the start, so the file still opens.
    flipped = tmp_path / "flipped.avro"
    damaged = bytearray(data)
    damaged[len(data) - 400] ^= 0x10
    flipped.write_bytes(bytes(damaged))

    target = unique_topic(partitions=1)
    for path in (truncated, flipped):
        _refused(_run("replay", str(path), "--to", target, "--bootstrap", kafka_bootstrap), str(path))
    assert read_all(kafka_bootstrap, target) == []

    done = _run("replay", str(good), "--to", target, "--bootstrap", kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    assert len(read_all(kafka_bootstrap, target)) == 300


@pytest.mark.broker
@pytest.mark.parametrize("where", ["missing-dir/out.avro", "read-only/out.avro", "."])
def test_an_unwritable_capture_path_is_named_and_leaves_nothing(where: str, kafka_bootstrap: str,
                                                                unique_topic: TopicFactory,
                                                                tmp_path: Path) -> None:
    source = _topic_with_records(kafka_bootstrap, unique_topic, count=10)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    output = tmp_path / where
    try:
        if os.geteuid() == 0 and where.startswith("read-only"):
            # root writes through mode bits: a path under a regular file cannot be created by anyone.
            (tmp_path / "a-file").write_text("")
            before = sorted(p.name for p in tmp_path.rglob("*"))
            output = tmp_path / "a-file" / "out.avro"
        _refused(_run("capture", source, "-o", str(output), "--bootstrap", kafka_bootstrap), "--output")
    finally:
        read_only.chmod(0o700)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
