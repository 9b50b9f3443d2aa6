"""SignalsClient and `signals summaries` / `signals reachable` against a real broker."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from runtime_signals.consumer import SignalsClient, Target
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas import codec, hashing
from runtime_signals.schemas.topics import TopicNames
from tests.consumer import sample_summaries as sample
from tests.consumer.sample_summaries import LIBIMAGE, T0_US, WINDOW_US

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str) -> TopicNames:
    """A summary topic holding the samples, a re-emission of web-1's second window (the
    later record wins, as compaction keeps it), a garbled record and a deleted window."""
    names = TopicNames().with_prefix(f"cons-{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_bootstrap, names, partitions=3)
    records = sample.samples()
    re_emitted = sample.summary_record("web-1", 1, [sample.path_record("web-1", 1, sample.UPLOAD, 3, LIBIMAGE,
                                                                       5_000_000)])
    deleted = sample.summary_record("ghost", 0, [sample.path_record("ghost", 0, sample.RESIZE, 1, None)])
    sample.produce(kafka_bootstrap, names.summaries, [*records, deleted, re_emitted],
                   extra=[(b"web-1|garbled", b"\xc3\x01not-a-summary"), (sample.summary_key(deleted), None)])
    # The processor's latest-state record of web-1, as if it had seen five windows.
    path = sample.path_record("web-1", 0, sample.UPLOAD, 40, LIBIMAGE)
    state = {
        "container_id": "web-1", "source_partition": 0, "first_observed_at_us": path["first_observed_at_us"],
        "last_observed_at_us": path["last_observed_at_us"], "total_events": 40, "raw_records": 40,
        "late_events": 2, "windows": 5, "first_window_start_us": T0_US, "last_window_start_us": T0_US + 4 * WINDOW_US,
        "detected_runtimes": ["NATIVE"], "observed_symbols": sorted(sample.UPLOAD),
        "call_paths": [{name: path[name] for name in (
            "callstack_hash", "path_hash", "symbols", "function_signatures", "node_hashes", "binary_digests",
            "binary_offsets", "libraries", "purl", "runtime_type", "observation_count", "first_observed_at_us",
            "last_observed_at_us", "purls", "addresses", "hash_recipe", "executables")} | {"windows": 5}],
    }
    registry = codec.SchemaRegistry.default()
    sample.produce(kafka_bootstrap, names.latest, [],
                   extra=[(b"web-1", codec.encode(state, "ContainerState", registry))])
    statistics, maps = sample.watch_records()
    sample.produce(kafka_bootstrap, names.statistics, [], extra=statistics)
    sample.produce(kafka_bootstrap, names.modules, [], extra=maps)
    return names


def test_summaries_of_a_container_in_a_time_range(kafka_bootstrap: str, topics: TopicNames) -> None:
    client = SignalsClient(kafka_bootstrap, topics)
    web = list(client.summaries("web-1"))
    assert [(s.started_at_us, s.total_events) for s in web] == [(T0_US, 12), (T0_US + WINDOW_US, 3)]
    assert web[0].call_paths[0].container_id == "web-1"
    later = list(client.summaries(since_us=T0_US + WINDOW_US))
    assert {(s.container_id, s.started_at_us) for s in later} == {("web-1", T0_US + WINDOW_US),
                                                                  ("worker-2", T0_US + WINDOW_US)}
    fresh = SignalsClient(kafka_bootstrap, topics)
    assert "ghost" not in {s.container_id for s in fresh.summaries()}  # its tombstone deleted it
    assert fresh.skipped == {"UnknownFingerprintError": 1}  # the garbled record: counted, skipped


def test_latest_state_and_is_reached_on_reached_and_never_reached_functions(
        kafka_bootstrap: str, topics: TopicNames) -> None:
    client = SignalsClient(kafka_bootstrap, topics)
    state = client.latest_state("web-1")  # the processor's record, from the latest-state topic
    assert state is not None and (state.total_events, state.windows, state.late_events) == (40, 5, 2)
    assert [(p.symbols, p.observation_count, p.windows) for p in state.paths] == [(sample.UPLOAD, 40, 5)]
    assert state.last_window_start_us == T0_US + 4 * WINDOW_US
    # Every frame's module identity and the programs that took the path (contract v2).
    (only,) = state.paths
    assert only.purls[-1] == hashing.module_identity(LIBIMAGE, None, None) and only.purls[0].startswith("pkg:generic/server?checksum=sha256:")
    assert [e.path for e in only.executables] == [sample.APP["path"]]
    folded = client.latest_state("worker-2")  # no record yet: folded from its summaries
    assert folded is not None and (folded.total_events, folded.windows, folded.dropped_events) == (6, 2, 3)
    assert client.latest_state("nobody") is None

    reached = client.is_reached(Target(function="parse_image_header", purl="pkg:deb/debian/libimage"))
    assert reached.reached and reached.observation_count == 7 + 5 + 3
    assert [(p.symbols, p.observation_count) for p in reached.paths] == [(sample.UPLOAD, 10), (sample.PREVIEW, 5)]

    never = client.is_reached(Target(function="png_read_chunk"), container="web-1")
    assert not never.reached and never.paths == ()
    assert never.coverage.containers == ("web-1",) and never.coverage.windows == 2
    assert never.coverage.total_events == 15


def test_the_reachable_command_answers_for_people_and_machines(kafka_bootstrap: str, topics: TopicNames,
                                                               tmp_path: Path) -> None:
    prefix = topics.raw.removesuffix(TopicNames().raw)
    node_hash = hashing.node_hash_v2(sample.LIBSCALE, "scale_rows")
    done = subprocess.run(signals_command("reachable", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                                          "--node-hash", node_hash, "--json"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["reached"] is True and answer["observation_count"] == 4
    assert answer["paths"][0]["symbols"] == list(sample.RESIZE) and answer["paths"][0]["container_id"] == "worker-2"
    assert answer["first_observed_at_iso"].endswith("+00:00")

    table = subprocess.run(signals_command("reachable", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                                           "--function", "png_read_chunk", "--container", "worker-2"),
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 3, table.stderr  # not observed while watched (--help's exit status)
    assert "NOT OBSERVED in worker-2" in table.stdout
    assert "3 dropped, 1 late" in table.stdout
    # How long it was watched at all: worker-2's agent had the probe detached 30 s of 120 s
    # (web-1's agent watched it throughout, but it does not run worker-2).
    assert "watched 90.0 s of 120.0 s by 1 probe(s) of 1 agent(s)" in table.stdout, table.stdout
    unprobed = subprocess.run(signals_command("reachable", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                                              "--function", "inflate", "--container", "worker-2", "--json"),
                              capture_output=True, text=True, timeout=60)
    assert unprobed.returncode == 3, unprobed.stderr
    watch = json.loads(unprobed.stdout)["coverage"]["watched"]
    assert (watch["function"], watch["probes"], watch["reports"]) == ("inflate", [], 13)  # node-2's only
    assert "it was not watched" in subprocess.run(
        signals_command("reachable", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--function",
                        "inflate", "--container", "worker-2"), capture_output=True, text=True, timeout=60).stdout
    # The export says it too, in the statement's notes.
    functions = tmp_path / "functions.txt"
    functions.write_text("pkg:deb/debian/libpng16-16 png_read_chunk TEST-PNG-0001\n")
    vex = subprocess.run(signals_command("export", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                                         "--functions", str(functions), "--format", "openvex", "--container",
                                         "worker-2"), capture_output=True, text=True, timeout=60)
    assert vex.returncode == 0, vex.stderr
    (statement,) = json.loads(vex.stdout)["statements"]
    assert statement["status"] == "under_investigation"
    assert "watched png_read_chunk for at least 90.0 s of 120.0 s" in statement["status_notes"], statement


def test_the_summaries_command_filters_by_symbol(kafka_bootstrap: str, topics: TopicNames) -> None:
    prefix = topics.raw.removesuffix(TopicNames().raw)
    done = subprocess.run(signals_command("summaries", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
                                          "--symbol", "handle_preview", "--json"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (only,) = json.loads(done.stdout)
    assert only["container_id"] == "web-1" and [p["symbols"] for p in only["call_paths"]] == [list(sample.PREVIEW)]
    # --json prints the records as they are on the topic, decoded, with only the matching paths.
    expected = [p for p in sample.samples()[0]["call_paths"] if tuple(p["symbols"]) == sample.PREVIEW]
    assert only["call_paths"] == expected and only["total_events"] == 12


def test_a_query_with_since_reads_only_records_that_recent(kafka_bootstrap: str) -> None:
    """A summary written a day ago (here undecodable, so a read of it shows in `skipped`) is
    not read by a query about the last minutes: the read starts at Kafka's offset for that
    time, it does not load the topic."""
    import time

    from confluent_kafka import Producer

    names = TopicNames().with_prefix(f"since-{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_bootstrap, names, partitions=2)
    now_ms = int(time.time() * 1000)
    index = (now_ms * 1000 - T0_US) // WINDOW_US
    recent = sample.summary_record("web-1", index, [sample.path_record("web-1", index, sample.UPLOAD, 4, LIBIMAGE)])
    registry = codec.SchemaRegistry.default()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    producer.produce(names.summaries, key=b"web-1|old", value=b"\xc3\x01garbled", timestamp=now_ms - 86_400_000)
    producer.produce(names.summaries, key=sample.summary_key(recent),
                     value=codec.encode(recent, "RuntimeSignalSummary", registry), timestamp=now_ms)
    assert producer.flush(30) == 0

    bounded = SignalsClient(kafka_bootstrap, names)
    found = list(bounded.summaries("web-1", since_us=T0_US + index * WINDOW_US))
    assert [s.total_events for s in found] == [4]
    assert not bounded.skipped  # the day-old record was never fetched
    whole = SignalsClient(kafka_bootstrap, names)
    assert [s.total_events for s in whole.summaries("web-1")] == [4]
    assert sum(whole.skipped.values()) == 1
