"""The read verbs as a user meets them, against a real broker: the configuration honoured
(file, environment, flags), prefixes normalised, container prefixes, "did you mean", limits,
rows never repeated, documented exit codes, one clean error for a broker that is not there."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas.topics import TopicNames
from tests.consumer import sample_summaries as sample
from tests.consumer.sample_summaries import LIBIMAGE

pytestmark = pytest.mark.broker

HOST = "host:3d1219c7c4c5404aaa1f6d2a48adfda4"


def _many_paths() -> list[dict[str, object]]:
    """One window of HOST with 30 distinct paths into parse_image_header, plus the upload path
    twice (two call sites in decode_image: same names, different callstack hashes)."""
    paths = [sample.path_record(HOST, 0, ("_start", "main", f"handler_{i:02d}", "parse_image_header"), 30 - i,
                                LIBIMAGE) for i in range(30)]
    twin_a = sample.path_record(HOST, 0, sample.UPLOAD, 40, LIBIMAGE)
    twin_b = dict(sample.path_record(HOST, 0, sample.UPLOAD, 2, LIBIMAGE), callstack_hash="sha256:" + "ab" * 32)
    return [*paths, twin_a, twin_b]


@pytest.fixture(scope="module")
def prefix(kafka_bootstrap: str) -> str:
    """A pipeline's topics under `ux-<id>.` holding the samples and HOST's busy window."""
    bare = f"ux-{uuid.uuid4().hex[:8]}"
    names = TopicNames().with_prefix(bare)
    create_topics(kafka_bootstrap, names, partitions=3)
    sample.produce(kafka_bootstrap, names.summaries,
                   [*sample.samples(), sample.summary_record(HOST, 0, _many_paths())])
    return bare  # without its trailing dot, as a user would type it


def signals(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(signals_command(*args), check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_prefix_without_its_dot_and_a_container_prefix_find_the_topics_and_the_container(
        kafka_bootstrap: str, prefix: str) -> None:
    done = signals("reachable", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                   "--function", "decode_image", "--container", "host:3d1219c7", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["reached"] and answer["observation_count"] == 42
    assert {p["container_id"] for p in answer["paths"]} == {HOST}


def test_the_configuration_file_and_environment_reach_the_read_verbs(
        kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    config = tmp_path / "signals.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ntopic_prefix = "{prefix}"\n')
    by_file = signals("reachable", "--config", str(config), "--function", "scale_rows")
    assert by_file.returncode == 0, by_file.stderr
    assert "REACHED in 1 container(s): 4 calls" in by_file.stdout
    by_env = signals("summaries", "--container", "worker-2", "--json",
                     env={"SIGNALS_KAFKA__TOPIC_PREFIX": prefix, "SIGNALS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap})
    assert by_env.returncode == 0, by_env.stderr
    assert [s["total_events"] for s in json.loads(by_env.stdout)] == [4, 2]


def test_a_typo_is_not_observed_with_a_suggestion_and_exit_codes_tell_the_three_answers(
        kafka_bootstrap: str, prefix: str) -> None:
    common = ("--bootstrap", kafka_bootstrap, "--topic-prefix", prefix)
    typo = signals("reachable", *common, "--function", "parse_image_headr", "--container", "web-1")
    assert typo.returncode == 3, typo.stderr
    assert "NOT OBSERVED in web-1" in typo.stdout
    assert "did you mean: parse_image_header?" in typo.stdout
    nothing = signals("reachable", *common, "--function", "parse_image_header", "--container", "nobody")
    assert nothing.returncode == 4 and "NO DATA" in nothing.stdout
    ambiguous = signals("reachable", *common, "--function", "main", "--container", "w")
    assert ambiguous.returncode == 1
    assert "prefix of several containers: web-1, worker-2" in ambiguous.stderr


def test_huge_answers_are_compact_sorted_by_calls_with_no_repeated_row(kafka_bootstrap: str, prefix: str) -> None:
    common = ("--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--container", "host:3d12")
    table = signals("reachable", *common, "--function", "parse_image_header")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "→" in line and "call path" not in line]
    assert len(rows) == 20  # the text default
    assert rows[0].split()[0] == "42" and "(2 stacks)" in rows[0]  # the twins: one row, their calls added
    calls = [int(r.split()[0]) for r in rows]
    assert calls == sorted(calls, reverse=True)
    assert len(set(rows)) == len(rows)
    assert "… 11 more path(s)" in table.stdout and "--json" in table.stdout
    limited = signals("summaries", *common, "--limit", "3")
    lines = [line for line in limited.stdout.splitlines() if "→" in line and "call path" not in line]
    assert [int(line.split()[0]) for line in lines] == [42, 30, 29]
    assert "… 28 more path(s)" in limited.stdout
    everything = signals("reachable", *common, "--function", "parse_image_header", "--limit", "0")
    assert len([line for line in everything.stdout.splitlines() if "→" in line and "call path" not in line]) == 31


def test_an_unreachable_broker_is_one_clean_error(tmp_path: Path) -> None:
    done = signals("summaries", "--bootstrap", "127.0.0.1:1", "--timeout-s", "3")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr and "Connection refused" in done.stderr
    assert "%3|" not in done.stderr  # no raw librdkafka log line


def test_no_summaries_yet_says_why_with_its_own_exit_code(kafka_bootstrap: str) -> None:
    names = TopicNames().with_prefix(f"ux-empty-{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_bootstrap, names, partitions=1)
    done = signals("summaries", "--bootstrap", kafka_bootstrap, "--topic-prefix", names.raw.split("signals.")[0])
    assert done.returncode == 4
    assert "signals watch" in done.stderr


def test_kafka_status_speaks_plainly(tmp_path: Path) -> None:
    # A cache with no broker state: nothing runs there.
    done = signals("kafka", "status", env={"RUNTIME_SIGNALS_CACHE": str(tmp_path)})
    assert done.returncode == 3
    assert done.stdout.startswith("no local broker running (would listen on 127.0.0.1:")
    assert "signals kafka up" in done.stdout and "BrokerStatus(" not in done.stdout
