"""The topics read by tools that know nothing of this project: Kafka's own console consumer
and kcat, with the framing of docs/consumers.md (strip the 10-byte single-object header,
decode the body with the self-contained .avsc)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from runtime_signals.devtools import localkafka
from runtime_signals.kafka import admin
from runtime_signals.schemas import codec
from tests.brokers import unique_topic_name
from tests.consumer import sample_summaries as sample

pytestmark = pytest.mark.broker

CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"  # Kafka 4.x (kafka.tools.ConsoleConsumer before)
SEPARATOR = "::value::"


@pytest.fixture(scope="module")
def summary_topic(kafka_bootstrap: str) -> str:
    topic = unique_topic_name("interop")
    admin.ensure_topics(kafka_bootstrap, [admin.TopicSpec(topic, 1, {})])
    sample.produce(kafka_bootstrap, topic, sample.samples())
    return topic


def decode_framed(value: bytes) -> dict[str, Any]:
    """What docs/consumers.md tells a consumer to do, with nothing from this repository but the schema."""
    assert value[:2] == b"\xc3\x01", "single-object magic"
    assert value[2:10].hex() == codec.fingerprint_hex("RuntimeSignalSummary")
    schema = fastavro.parse_schema(codec.self_contained_schema("RuntimeSignalSummary"))
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)


def _micros(value: Any) -> Any:
    """fastavro turns timestamp-micros into datetimes: back to µs, to compare with the samples."""
    if isinstance(value, datetime):
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, dict):
        return {k: _micros(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_micros(v) for v in value]
    return value


def _expected() -> dict[bytes, dict[str, Any]]:
    return {sample.summary_key(s): s for s in sample.samples()}


def test_kcat_reads_the_summaries_with_the_documented_framing(kafka_bootstrap: str, summary_topic: str) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed (scripts/bootstrap.sh installs Debian's kcat)")
    # %K:%k%S:%s = key length, key, value length, value: binary-safe.
    done = subprocess.run([kcat, "-C", "-b", kafka_bootstrap, "-t", summary_topic, "-e", "-q",
                           "-f", "%K:%k%S:%s"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data, records = done.stdout, {}
    while data:
        key_length, data = data.split(b":", 1)
        key, data = data[:int(key_length)], data[int(key_length):]
        value_length, data = data.split(b":", 1)
        value, data = data[:int(value_length)], data[int(value_length):]
        records[key] = _micros(decode_framed(value))
    assert records == _expected()


def _console_consumer_classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The broker's jars plus kafka-tools (where the console consumer lives), from Maven Central."""
    cfg = localkafka.LocalKafkaConfig.from_env()
    tools = cfg.cache_root / f"kafka-tools-{cfg.version}"
    jar = tools / f"kafka-tools-{cfg.version}.jar"
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: cannot run Kafka's console consumer")
    lib = localkafka.provision(cfg)
    if not jar.exists():
        staging = Path(tmp_path_factory.mktemp("kafka-tools"))
        subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact=org.apache.kafka:kafka-tools:{cfg.version}",
                        f"-DoutputDirectory={staging}"], check=True, timeout=600, cwd=staging)
        tools.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging / jar.name), jar)
    return f"{lib}/*:{tools}/*"


def _unescape_kafka_bytes(text: str) -> bytes:
    """Kafka's Bytes.toString: printable ASCII as is, everything else (and backslash) as \\xHH."""
    out = bytearray()
    for match in re.finditer(r"\\x([0-9A-F]{2})|(.)", text, re.DOTALL):
        out += bytes([int(match.group(1), 16)]) if match.group(1) else match.group(2).encode("latin-1")
    return bytes(out)


def test_kafkas_console_consumer_reads_the_summaries(kafka_bootstrap: str, summary_topic: str,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    classpath = _console_consumer_classpath(tmp_path_factory)
    expected = _expected()
    done = subprocess.run(
        ["java", "-cp", classpath, CONSOLE_CONSUMER, "--bootstrap-server", kafka_bootstrap, "--topic", summary_topic,
         "--from-beginning", "--max-messages", str(len(expected)), "--timeout-ms", "30000",
         "--formatter-property", "print.key=true", "--formatter-property", f"key.separator={SEPARATOR}",
         "--formatter-property", "value.deserializer=org.apache.kafka.common.serialization.BytesDeserializer"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = {}
    for line in done.stdout.splitlines():
        key, value = line.split(SEPARATOR, 1)
        records[key.encode()] = _micros(decode_framed(_unescape_kafka_bytes(value)))
    assert records == expected
