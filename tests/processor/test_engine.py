"""The engine without a broker: exact counts across simulated crashes, late and bad records,
and symbol tables that arrive while a window waits."""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

from runtime_signals.processor.aggregate import NamedStacks
from runtime_signals.processor.checkpoint import Checkpoint
from runtime_signals.processor.engine import Engine, EngineSettings, Output
from runtime_signals.processor.errors import ConfigError
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec, hashing
from tests.processor.raw_records import (
    APP_DIGEST,
    APP_PURL,
    BASE_US,
    LIBC_PURL,
    REGISTRY,
    call_event,
    encode_call,
    encode_watermark,
    module_map,
    scenario,
    symbol_tables,
)

SPEC = WindowSpec(size_ms=1000, allowed_lateness_ms=200)
SETTINGS = EngineSettings(SPEC, raw_topic="raw", agent_idle_ms=10_000)
SUMMARY = "io.runtimesignals.RuntimeSignalSummary"


def _records(seed: int) -> list[tuple[bytes, bytes]]:
    """One partition's records: calls of three containers, watermarks, a few late calls
    and a few bad records sprinkled in."""
    rng = random.Random(seed)
    base = scenario(["c1", "c2", "c3"], steps=60, step_us=100_000, window_us=1_000_000,
                    partitions=1, seed=seed)
    records = [(key, value) for key, value, _ in base.records]
    for _ in range(4):  # late: a call 3 s behind the watermark at that point
        at = rng.randrange(40, len(records))
        records.insert(at, (b"c2", encode_call(call_event("c2", BASE_US + 100, count=2, seed=at))))
    for junk in (b"\x00garbage", encode_call(call_event("c1", BASE_US, count=-1)), b""):
        records.insert(rng.randrange(len(records)), (b"c1", junk))
    return records


def _run(engine: Engine, records: list[tuple[bytes, bytes]], start: int, stop: int) -> list[Output]:
    outputs: list[Output] = []
    for offset in range(start, stop):
        key, value = records[offset]
        outputs += engine.handle(0, offset, key, value)
    return outputs


def _by_key(outputs: list[Output], kind: str) -> dict[bytes | None, set[bytes]]:
    found: dict[bytes | None, set[bytes]] = defaultdict(set)
    for output in outputs:
        if output.kind == kind:
            found[output.key].add(output.value)
    return found


def _source_offsets(outputs: list[Output], kind: str) -> set[int]:
    return {int(dict(o.headers)["signals.source.offset"]) for o in outputs if o.kind == kind}


def _crashing_run(records: list[tuple[bytes, bytes]], seed: int,
                  settings: EngineSettings = SETTINGS) -> tuple[list[Output], int]:
    """Process with checkpoints every few records and a crash every so often: the worker
    loses its memory and outputs written since its last checkpoint may or may not have
    reached the broker. Returns everything that reached the broker and the restart count."""
    rng = random.Random(seed)
    written: list[Output] = []
    checkpoint: Checkpoint | None = None
    restarts = 0
    offset = 0
    while True:
        engine = Engine(settings, NoSymbols(), REGISTRY, monotonic_s=lambda: 0.0)
        latest = [output.value for output in written if output.kind == "latest"]
        resume = engine.assign(0, checkpoint, latest)
        offset = 0 if resume is None else resume
        unacked: list[Output] = []
        crash_at = offset + rng.randrange(5, 80)
        while offset < len(records):
            unacked += _run(engine, records, offset, offset + 1)
            offset += 1
            if rng.random() < 0.15:  # a checkpoint: everything before it was acknowledged
                written += unacked
                unacked = []
                checkpoint = engine.checkpoint(0)
            if offset >= crash_at:
                break
        if offset >= len(records):
            written += unacked
            return written, restarts
        written += unacked[: rng.randrange(len(unacked) + 1)]  # some writes made it, some not
        restarts += 1
        assert restarts < 500, "no progress across restarts"


@pytest.mark.parametrize("seed", range(8))
def test_crashes_and_restarts_write_exactly_what_an_uninterrupted_run_writes(seed: int) -> None:
    records = _records(seed)
    uninterrupted = Engine(SETTINGS, NoSymbols(), REGISTRY)
    uninterrupted.assign(0, None)
    reference = _run(uninterrupted, records, 0, len(records))
    written, restarts = _crashing_run(records, seed)
    assert restarts >= 3

    for kind in ("summary", "path"):
        expected = _by_key(reference, kind)
        got = _by_key(written, kind)
        assert got.keys() == expected.keys(), kind
        # Every emission of a window, before or after a crash, is byte-identical.
        assert all(got[key] == expected[key] and len(expected[key]) == 1 for key in expected), kind
    # The latest state of each container ends where the uninterrupted run's ended.
    last_reference = {o.key: o.value for o in reference if o.kind == "latest"}
    last_written = {o.key: o.value for o in written if o.kind == "latest"}
    assert last_written == last_reference
    # Late and dead-lettered records all reach their topics (a few perhaps twice,
    # recognisable by their source offset header).
    assert _source_offsets(written, "late") == _source_offsets(reference, "late") != set()
    assert _source_offsets(written, "dlq") == _source_offsets(reference, "dlq") != set()


def test_counts_are_calls_and_late_calls_go_to_the_window_current_on_arrival() -> None:
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    engine.assign(0, None)
    feed = [
        encode_call(call_event("c1", BASE_US + 10, count=3)),
        encode_call(call_event("c1", BASE_US + 20, count=2, path=1)),
        encode_watermark(BASE_US + 1_300_000, 1),            # closes [BASE, BASE+1s)
        encode_call(call_event("c1", BASE_US + 30, count=4)),  # late
        encode_call(call_event("c1", BASE_US + 1_400_000, count=1)),
        encode_watermark(BASE_US + 2_300_000, 2),
    ]
    outputs = [o for offset, value in enumerate(feed) for o in engine.handle(0, offset, b"c1", value)]
    summaries = [codec.decode(o.value, REGISTRY).record for o in outputs if o.kind == "summary"]
    assert [(s["started_at_us"], s["total_events"], s["raw_records"], s["late_events"]) for s in summaries] == [
        (BASE_US, 5, 2, 0), (BASE_US + 1_000_000, 1, 1, 4)]
    late = [o for o in outputs if o.kind == "late"]
    assert len(late) == 1 and late[0].value == feed[3] and late[0].key == b"c1"
    headers = dict(late[0].headers)
    assert headers["signals.late.window_start_us"] == str(BASE_US).encode()
    assert headers["signals.source.offset"] == b"3"
    assert engine.counts["late_events"] == 4 and engine.counts["events"] == 6


def test_a_record_sent_twice_is_counted_once_in_its_window() -> None:
    """An agent killed while its spool drained resends records it could not know were
    delivered: same bytes, same event id. The window counts the record once; the same event
    id from another agent, or a new record, still counts."""
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    engine.assign(0, None)
    first = encode_call(call_event("c1", BASE_US + 10, count=3))
    feed = [
        first,
        encode_call(call_event("c1", BASE_US + 20, count=2, path=1)),
        first,                                                        # resent
        encode_call(call_event("c1", BASE_US + 10, count=3, agent_id="agent-2")),  # same id, another agent
        first,                                                        # resent again
        encode_watermark(BASE_US + 1_300_000, 1),
        first,                                                        # resent after its window closed: late
        encode_watermark(BASE_US + 2_300_000, 2),
    ]
    outputs = [o for offset, value in enumerate(feed) for o in engine.handle(0, offset, b"c1", value)]
    summaries = [codec.decode(o.value, REGISTRY).record for o in outputs if o.kind == "summary"]
    first_window = summaries[0]
    assert (first_window["started_at_us"], first_window["total_events"], first_window["raw_records"]) == (BASE_US, 8, 3)
    assert engine.counts["repeated_records"] == 2 and engine.counts["repeated_events"] == 6
    assert engine.counts["events"] == 8 and engine.counts["late_events"] == 3


def test_a_replay_recognises_the_same_repeats_as_the_first_run() -> None:
    """The event ids are the window's, rebuilt when a worker replays its records: with
    resends sprinkled in, crashes and restarts write what an uninterrupted run writes."""
    records = _records(3)
    rng = random.Random(3)
    for _ in range(12):  # a resend a few records after the original
        at = rng.randrange(1, len(records) - 20)
        key, value = records[at]
        records.insert(at + rng.randrange(1, 8), (key, value))
    uninterrupted = Engine(SETTINGS, NoSymbols(), REGISTRY)
    uninterrupted.assign(0, None)
    reference = _run(uninterrupted, records, 0, len(records))
    assert uninterrupted.counts["repeated_records"] > 0
    written, restarts = _crashing_run(records, 3)
    assert restarts >= 3
    for kind in ("summary", "path"):
        expected, got = _by_key(reference, kind), _by_key(written, kind)
        assert got.keys() == expected.keys() and all(got[k] == expected[k] for k in expected), kind


@pytest.mark.parametrize("value, reason", [
    (b"\xc3\x01\x00\x01\x02\x03\x04\x05\x06\x07body", "unknown_fingerprint"),
    (b"not avro at all", "undecodable"),
    (None, "undecodable"),
    (encode_call(call_event("c1", BASE_US, count=0)), "out_of_range"),
    (encode_call(call_event("c1", BASE_US, pid=-1)), "out_of_range"),
    (encode_call(call_event("c1", 0, received_at_us=0)), "out_of_range"),
    (encode_call(call_event("c1", BASE_US, stack_trace=[1])), "out_of_range"),
    (codec.encode({"binary_digest": APP_DIGEST, "chunk_index": 0, "chunk_count": 1, "symbol_count": 0,
                   "symbols": []}, "SymbolTable", REGISTRY), "unexpected_schema"),
])
def test_bad_records_go_to_the_dead_letter_topic_with_their_reason(value: bytes | None, reason: str) -> None:
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    engine.assign(0, None)
    [output] = engine.handle(0, 7, b"k", value, (("trace", b"1"),))
    headers = dict(output.headers)
    assert output.kind == "dlq" and output.key == b"k" and output.value == (value or b"")
    assert headers["signals.dlq.reason"] == reason.encode()
    assert headers["signals.source.topic"] == b"raw" and headers["signals.source.offset"] == b"7"
    assert headers["trace"] == b"1" and headers["signals.dlq.error"]
    assert engine.counts[f"dlq:{reason}"] == 1
    # And the loop goes on.
    assert engine.handle(0, 8, b"c1", encode_call(call_event("c1", BASE_US))) == []
    assert engine.counts["events"] == 1


def test_an_old_writer_without_observed_at_falls_back_to_received_at() -> None:
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    engine.assign(0, None)
    engine.handle(0, 0, b"c1", encode_call(call_event("c1", 0, received_at_us=BASE_US + 5)))
    [summary] = [o for o in engine.handle(0, 1, b"a", encode_watermark(BASE_US + 5_000_000, 1)) if o.kind == "summary"]
    assert codec.decode(summary.value, REGISTRY).record["started_at_us"] == BASE_US


def test_a_window_waits_for_its_symbol_tables_so_live_and_replay_agree() -> None:
    now = [0.0]
    feed = [encode_call(call_event("c1", BASE_US + 10, path=0)), encode_call(call_event("c1", BASE_US + 20, path=2)),
            encode_watermark(BASE_US + 2_000_000, 1)]

    live_store = SymbolStore()
    live = Engine(SETTINGS, live_store, REGISTRY, monotonic_s=lambda: now[0])
    live.assign(0, None)
    assert [o for i, v in enumerate(feed) for o in live.handle(0, i, b"c1", v)] == []  # waits
    assert live.pending_windows() == 1
    now[0] = 5.0
    app_table, libc_table = symbol_tables()
    live_store.add(app_table)
    assert live.release() == []  # still waits: the libc frames' table is missing too
    live_store.add(libc_table)
    assert live.release() == []  # and for the module map that names the binaries' packages
    live_store.add_module_map(module_map())
    live_outputs = live.release()

    replay_store = SymbolStore()
    replay_store.add_module_map(module_map())
    replay_store.add(libc_table)
    replay_store.add(app_table)
    replay = Engine(SETTINGS, replay_store, REGISTRY)
    replay.assign(0, None)
    replay_outputs = [o for i, v in enumerate(feed) for o in replay.handle(0, i, b"c1", v)]

    assert live_outputs == replay_outputs and live_outputs
    summary = codec.decode(live_outputs[0].value, REGISTRY).record
    signatures = {s for p in summary["call_paths"] for s in p["function_signatures"]}
    assert "image::Parser::decode(std::vector<unsigned char, std::allocator<unsigned char>> const&)" in signatures
    assert "image::header::parse" in signatures and "__libc_start_call_main" in signatures
    path = next(p for p in summary["call_paths"] if len(p["symbols"]) == 4)
    assert path["purl"] == APP_PURL
    assert path["node_hashes"][0] == hashing.node_hash_v2(LIBC_PURL, "__libc_start_call_main")
    assert live.counts["windows_unresolved"] == 0 and live.counts["windows_emitted"] == 1


def test_a_window_whose_tables_never_come_goes_out_after_the_wait_and_is_counted() -> None:
    now = [0.0]
    engine = Engine(EngineSettings(SPEC, "raw", symbol_wait_ms=3_000), SymbolStore(), REGISTRY,
                    monotonic_s=lambda: now[0])
    engine.assign(0, None)
    engine.handle(0, 0, b"c1", encode_call(call_event("c1", BASE_US + 10)))
    assert engine.handle(0, 1, b"a", encode_watermark(BASE_US + 2_000_000, 1)) == []
    now[0] = 2.9
    assert engine.release() == []
    now[0] = 3.0
    [summary] = [o for o in engine.release() if o.kind == "summary"]
    record = codec.decode(summary.value, REGISTRY).record
    assert record["call_paths"][0]["symbols"][0].startswith("sha256:cdcd")  # its frame identity
    assert record["call_paths"][0]["symbols"][-1] == "parse_image_header"  # the agent named the top
    assert engine.counts["windows_unresolved"] == 1 and engine.counts["unresolved_frames"] == 3
    assert engine.counts["windows_waited_out"] == 1


def _store() -> SymbolStore:
    """Every table and module map the raw_records paths need."""
    store = SymbolStore()
    for table in symbol_tables():
        store.add(table)
    store.add_module_map(module_map())
    return store


def test_stacks_named_once_give_the_bytes_of_stacks_named_every_window() -> None:
    records = _records(5)  # three containers whose stacks recur window after window
    named_once = Engine(SETTINGS, _store(), REGISTRY)
    named_always = Engine(SETTINGS, _store(), REGISTRY)
    named_always.named_stacks = NamedStacks(0)  # keeps nothing
    for engine in (named_once, named_always):
        engine.assign(0, None)
    once = _run(named_once, records, 0, len(records))
    assert once == _run(named_always, records, 0, len(records))
    assert len({o.key for o in once if o.kind == "summary"}) > len(named_once.named_stacks) > 0
    assert len(named_always.named_stacks) == 0


class _Forgetting:
    """A symbol source that can lose a binary's table, as a store's bound evicts one."""

    def __init__(self, store: SymbolStore) -> None:
        self.store, self.forgotten = store, set[str]()

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None:
        return None if binary_digest in self.forgotten else self.store.lookup(binary_digest, binary_offset)

    def purl(self, binary_digest: str) -> str | None:
        return self.store.purl(binary_digest)

    def has_all(self, binary_digests: Iterable[str]) -> bool:
        digests = list(binary_digests)
        return not self.forgotten & set(digests) and self.store.has_all(digests)

    def has_modules(self, binary_digests: Iterable[str]) -> bool:
        return self.store.has_modules(binary_digests)


def test_a_window_without_its_tables_does_not_reuse_names_from_earlier_windows() -> None:
    source = _Forgetting(_store())
    engine = Engine(EngineSettings(SPEC, "raw", symbol_wait_ms=0), source, REGISTRY)
    engine.assign(0, None)
    feed = [encode_call(call_event("c1", BASE_US + 10)), encode_watermark(BASE_US + 2_000_000, 1),
            encode_call(call_event("c1", BASE_US + 2_000_010)), encode_watermark(BASE_US + 4_000_000, 2)]
    first = [o for i, v in enumerate(feed[:2]) for o in engine.handle(0, i, b"c1", v) if o.kind == "path"]
    source.forgotten.add(APP_DIGEST)  # the second window goes out without the app's table
    second = [o for i, v in enumerate(feed[2:], 2) for o in engine.handle(0, i, b"c1", v) if o.kind == "path"]
    named, unnamed = (codec.decode(o.value, REGISTRY).record["symbols"] for o in (*first, *second))
    assert named[:-1] == ["__libc_start_call_main", "_ZN5image6Parser6decodeERKSt6vectorIhSaIhEE",
                          "_RNvNtCs1234_5image6header5parse"]
    assert unnamed[0] == named[0] and all(s.startswith("sha256:") for s in unnamed[1:-1])  # as a fresh run names them
    assert engine.counts["windows_waited_out"] == 1


def test_a_checkpoint_from_other_window_settings_is_refused_with_what_to_do() -> None:
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    engine.assign(0, None)
    engine.handle(0, 0, b"c1", encode_call(call_event("c1", BASE_US)))
    checkpoint = engine.checkpoint(0)
    other = Engine(EngineSettings(WindowSpec(2000, 200), "raw", agent_idle_ms=10_000), NoSymbols(), REGISTRY)
    with pytest.raises(Exception, match=r"--window-ms 1000.*new --app-id"):
        other.assign(0, checkpoint)


def test_a_checkpoint_survives_its_trip_through_avro() -> None:
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    engine.assign(0, None)
    _run(engine, _records(3), 0, 200)
    checkpoint = engine.checkpoint(0)
    assert checkpoint is not None and checkpoint.emitted_through is not None and checkpoint.clock.agents
    assert Checkpoint.decode(checkpoint.encode(REGISTRY), REGISTRY, "test") == checkpoint


def test_an_incomplete_symbol_table_names_nothing() -> None:
    store = SymbolStore()
    app_table, _ = symbol_tables()
    store.add(app_table | {"chunk_count": 2})
    assert store.lookup(APP_DIGEST, 0x1_300) is None and not store.has(APP_DIGEST)
    store.add(app_table | {"chunk_count": 2, "chunk_index": 1, "symbols": []})
    assert store.lookup(APP_DIGEST, 0x1_300) == "parse_image_header" and store.has_all([APP_DIGEST])


@pytest.mark.parametrize("seed", range(3))
def test_latest_states_moved_out_of_memory_come_back_the_same(seed: int) -> None:
    """With room for one container's latest state in memory, the other two wait in the
    file and are read back at each of their windows: the outputs are byte for byte those
    of an engine holding all three, with crashes and restores from the latest topic too."""
    records = _records(seed)
    roomy = Engine(SETTINGS, NoSymbols(), REGISTRY)
    roomy.assign(0, None)
    reference = _run(roomy, records, 0, len(records))
    tight_settings = dataclasses.replace(SETTINGS, latest_in_memory=1)
    tight = Engine(tight_settings, NoSymbols(), REGISTRY)
    tight.assign(0, None)
    assert _run(tight, records, 0, len(records)) == reference
    assert tight.counts["latest_states_evicted"] > 10 and tight.counts["latest_states_read_back"] > 10
    assert roomy.counts["latest_states_evicted"] == 0
    assert tight.latest.sizes()["latest_states_in_memory"] == 1
    assert tight.latest.sizes()["latest_states_on_disk"] == 2
    assert tight.latest.containers(0).keys() == roomy.latest.containers(0).keys() == {"c1", "c2", "c3"}

    written, restarts = _crashing_run(records, seed, tight_settings)
    assert restarts >= 3
    assert {o.key: o.value for o in written if o.kind == "latest"} == \
        {o.key: o.value for o in reference if o.kind == "latest"}


@pytest.mark.parametrize("seed", range(2))
def test_latest_states_past_the_paths_bound_move_out_of_memory_and_come_back_the_same(seed: int) -> None:
    """Room for 256 states but fewer paths than the three containers have between them:
    the paths bound, not the count, moves states to the file, and the outputs are those of
    an engine that keeps everything in memory."""
    records = _records(seed)
    roomy = Engine(SETTINGS, NoSymbols(), REGISTRY)
    roomy.assign(0, None)
    reference = _run(roomy, records, 0, len(records))
    paths = sorted(len(state.paths) for state in roomy.latest.containers(0).values())
    assert roomy.latest.sizes()["latest_paths_in_memory"] == sum(paths)
    bound = paths[-1]  # the largest state alone fits; no two states do
    assert paths[0] + paths[1] > bound
    tight = Engine(dataclasses.replace(SETTINGS, latest_in_memory=256, latest_paths_in_memory=bound),
                   NoSymbols(), REGISTRY)
    tight.assign(0, None)
    assert _run(tight, records, 0, len(records)) == reference
    assert tight.counts["latest_states_evicted"] > 10 and tight.counts["latest_states_read_back"] > 10
    sizes = tight.latest.sizes()
    assert sizes["latest_states_in_memory"] == 1 and sizes["latest_states_on_disk"] == 2
    assert sizes["latest_paths_in_memory"] <= bound


def test_a_latest_state_larger_than_the_paths_bound_is_still_folded_in_memory() -> None:
    """One container with more paths than the bound: it stays held while its window is
    folded (evicting it mid-fold would lose the fold), alone."""
    records = _records(0)
    roomy = Engine(SETTINGS, NoSymbols(), REGISTRY)
    roomy.assign(0, None)
    reference = _run(roomy, records, 0, len(records))
    tiny = Engine(dataclasses.replace(SETTINGS, latest_paths_in_memory=1), NoSymbols(), REGISTRY)
    tiny.assign(0, None)
    assert _run(tiny, records, 0, len(records)) == reference
    assert tiny.latest.sizes()["latest_states_in_memory"] == 1


def test_windows_are_released_one_at_a_time_in_the_order_release_gives_them() -> None:
    """release_windows() hands out one closed window's outputs at a time (the worker writes
    each before the next is built): the same records, bytes and order as release()."""
    records = _records(1)
    whole = Engine(SETTINGS, NoSymbols(), REGISTRY)
    stepwise = Engine(SETTINGS, NoSymbols(), REGISTRY)
    whole.assign(0, None)
    stepwise.assign(0, None)
    expected: list[Output] = []
    steps: list[list[Output]] = []
    for offset, (key, value) in enumerate(records):
        expected += whole.handle(0, offset, key, value, release=False) + whole.release(0)
        direct = stepwise.handle(0, offset, key, value, release=False)
        steps += [direct] if direct else []
        steps += list(stepwise.release_windows(0))
    assert [o for step in steps for o in step] == expected
    windows = [step for step in steps if any(o.kind == "summary" for o in step)]
    assert len(windows) > 5
    assert all(sum(o.kind == "summary" for o in step) == 1 for step in windows)


def test_a_latest_record_that_does_not_decode_is_skipped_by_name() -> None:
    engine = Engine(SETTINGS, NoSymbols(), REGISTRY)
    reference = Engine(SETTINGS, NoSymbols(), REGISTRY)
    reference.assign(0, None)
    good = [o.value for o in _run(reference, _records(0), 0, 120) if o.kind == "latest"]
    assert good
    engine.assign(0, None, [b"\x00junk", *good])
    assert engine.counts["latest_records_skipped"] == 1
    assert engine.latest.containers(0).keys() == reference.latest.containers(0).keys()


@pytest.mark.parametrize("in_memory", [1, 256])
def test_latest_states_of_containers_gone_longer_than_the_retention_are_forgotten(in_memory: int) -> None:
    """Containers come and go for months: a container whose last window is older than the
    retention (event time) leaves the engine, from memory or from the file; one still
    writing stays whole."""
    engine = Engine(EngineSettings(SPEC, raw_topic="raw", agent_idle_ms=10_000, latest_retention_ms=5_000,
                                   latest_in_memory=in_memory), NoSymbols(), REGISTRY)
    engine.assign(0, None)
    feed = [(b"gone", encode_call(call_event("gone", BASE_US + 10, count=1))),
            (b"stays", encode_call(call_event("stays", BASE_US + 20, count=1)))]
    feed.append((b"a", encode_watermark(BASE_US + 1_300_000, 1)))
    for second in range(2, 10):  # "stays" keeps calling, "gone" never again
        feed.append((b"stays", encode_call(call_event("stays", BASE_US + second * 1_000_000 + 10, count=1))))
        feed.append((b"a", encode_watermark(BASE_US + second * 1_000_000 + 300_000, second)))
    outputs = [o for offset, (key, value) in enumerate(feed) for o in engine.handle(0, offset, key, value)]
    states = engine.latest.containers(0)
    assert set(states) == {"stays"} and states["stays"].windows == 8
    assert engine.counts["containers_forgotten"] == 1
    assert engine.latest.sizes() == {"latest_states_in_memory": 1, "latest_states_on_disk": 0,
                                     "latest_paths_in_memory": len(states["stays"].paths)}
    assert {o.key for o in outputs if o.kind == "latest"} == {b"gone", b"stays"}  # written before it went


def test_a_latest_states_directory_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"latest states file .*file/sub/latest-states-.*processor.data_dir"):
        Engine(dataclasses.replace(SETTINGS, latest_dir=blocked / "sub"), NoSymbols(), REGISTRY)
