"""Single-object encoding: framing, fingerprints, schema evolution and failure modes."""

from __future__ import annotations

import io
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest

from runtime_signals.schemas import codec as codec_module
from runtime_signals.schemas.codec import (
    HEADER_BYTES,
    MAGIC,
    SchemaRegistry,
    decode,
    encode,
    encode_item,
    encode_with_items,
    fingerprint_hex,
    item_template,
    self_contained_schema,
    template,
)
from runtime_signals.schemas.errors import (
    CorruptMessageError,
    EncodeError,
    IncompatibleSchemaError,
    SchemaError,
    UnknownFingerprintError,
    UnknownSchemaError,
)

TOP_LEVEL = ["RuntimeCallEvent", "AgentWatermark", "ObservedCallPath", "RuntimeSignalSummary",
             "SignalStatistics", "StackFrame"]
EXTENSION_DEFAULTS = {
    "observed_at_us": 0, "host": "", "agent_id": "", "cgroup_id": 0, "probe_id": "",
    "observation_count": 1, "last_timestamp_ns": None, "stack_frames": [],
    "stack_truncated": False, "truncation_reason": None, "executable": None, "executable_digest": None,
    "executable_purl": None, "comm": "",
}


def rabin_fingerprint(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification's reference code computes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ (empty & -(value & 1))
        table.append(value)
    value = empty
    for byte in data:
        value = (value >> 8) ^ table[(value ^ byte) & 0xFF]
    return value


def apache_canonical_form(name: str) -> str:
    """Parsing Canonical Form by Apache Avro's Python library, with its one known divergence
    from the Java library undone: for a primitive carrying a logicalType it prints
    {"type":"long"} where the specification ([PRIMITIVES]) and Java print "long"."""
    canonical = avro.schema.parse(json.dumps(self_contained_schema(name))).canonical_form
    return re.sub(r'\{"type":"(null|boolean|int|long|float|double|bytes|string)"\}', r'"\1"',
                  canonical)


def v0_schema(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "RuntimeCallEvent.v0.avsc").read_text())


def v1_schema(data_dir: Path) -> dict[str, Any]:
    """RuntimeCallEvent before truncation_reason: stack_truncated without a reason."""
    return json.loads((data_dir / "RuntimeCallEvent.v1.avsc").read_text())


def seed_only(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key not in EXTENSION_DEFAULTS}


def test_the_rabin_reference_code_matches_the_avro_specification() -> None:
    # Fingerprint of the schema "null", listed in Avro's shared schema tests.
    assert rabin_fingerprint(b'"null"') == 7195948357588979594


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_header_is_magic_then_little_endian_fingerprint_of_the_canonical_form(
    name: str, registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    message = encode(examples[name], name, registry)
    assert message[:2] == b"\xc3\x01"
    expected = rabin_fingerprint(apache_canonical_form(name).encode("utf-8"))
    assert int.from_bytes(message[2:10], "little") == expected
    assert message[2:10].hex() == fingerprint_hex(name) == registry.fingerprint_hex(name)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_record_type_round_trips(
    name: str, registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    decoded = decode(encode(examples[name], name, registry), registry)
    assert decoded.schema_name == f"io.runtimesignals.{name}"
    assert decoded.record == examples[name]
    assert decoded.fingerprint_hex == fingerprint_hex(name)


def test_the_body_is_plain_avro_that_apache_avro_reads(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    event = examples["RuntimeCallEvent"]
    message = encode(event, "RuntimeCallEvent", registry)
    schema = avro.schema.parse(json.dumps(self_contained_schema("RuntimeCallEvent")))
    record = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(message[10:])))
    assert str(record["event_id"]) == event["event_id"]
    assert record["stack_trace"] == event["stack_trace"]
    assert record["stack_frames"] == event["stack_frames"]
    assert record["function_address"] == event["function_address"]


def test_instants_and_ids_decode_as_plain_ints_and_strings(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    record = decode(encode(examples["RuntimeCallEvent"], "RuntimeCallEvent", registry),
                    registry).record
    assert type(record["received_at_us"]) is int and type(record["observed_at_us"]) is int
    assert type(record["event_id"]) is str


def test_raw_topic_record_types_are_told_apart_by_fingerprint(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    event = encode(examples["RuntimeCallEvent"], "RuntimeCallEvent", registry)
    mark = encode(examples["AgentWatermark"], "AgentWatermark", registry)
    assert event[2:10] != mark[2:10]
    assert decode(event, registry).schema_name == "io.runtimesignals.RuntimeCallEvent"
    assert decode(mark, registry).schema_name == "io.runtimesignals.AgentWatermark"
    assert decode(mark, registry).record == examples["AgentWatermark"]


def test_omitted_extension_fields_are_written_as_their_defaults(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    event = seed_only(examples["RuntimeCallEvent"])
    record = decode(encode(event, "RuntimeCallEvent", registry), registry).record
    assert record == {**event, **EXTENSION_DEFAULTS}


def test_a_message_from_an_older_schema_version_reads_in_the_current_shape(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]], data_dir: Path
) -> None:
    old_agent = SchemaRegistry.default()
    old_agent.register(v0_schema(data_dir), current=True)
    event = seed_only(examples["RuntimeCallEvent"])
    message = encode(event, "RuntimeCallEvent", old_agent)
    assert message[2:10].hex() != fingerprint_hex("RuntimeCallEvent")

    with pytest.raises(UnknownFingerprintError):
        decode(message, registry)
    registry.register(v0_schema(data_dir))
    implicit = decode(message, registry)
    explicit = decode(message, registry, reader_schema_name="RuntimeCallEvent")
    assert implicit.record == explicit.record == {**event, **EXTENSION_DEFAULTS}
    assert implicit.schema_name == "io.runtimesignals.RuntimeCallEvent"
    # Reading an old version does not make the registry write it.
    current = encode(examples["RuntimeCallEvent"], "RuntimeCallEvent", registry)
    assert current[2:10].hex() == fingerprint_hex("RuntimeCallEvent")


def test_a_record_from_before_truncation_reason_reads_with_a_null_reason(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]], data_dir: Path
) -> None:
    old_agent = SchemaRegistry.default()
    old_agent.register(v1_schema(data_dir), current=True)
    v1_fields = {field["name"] for field in v1_schema(data_dir)["fields"]}
    event = {key: value for key, value in examples["RuntimeCallEvent"].items() if key in v1_fields}
    message = encode(event, "RuntimeCallEvent", old_agent)
    registry.register(v1_schema(data_dir))
    record = decode(message, registry).record
    later = {"truncation_reason": None, "executable": None, "executable_digest": None, "executable_purl": None,
             "comm": ""}  # fields added since, read with their defaults
    assert record == {**event, **later}
    assert record["stack_truncated"] is True


def test_a_newer_writer_s_unknown_runtime_and_extra_field_are_absorbed(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    newer = self_contained_schema("RuntimeCallEvent")
    runtime = next(f for f in newer["fields"] if f["name"] == "runtime_type")["type"]
    runtime["symbols"].append("ERLANG")
    newer["fields"].append({"name": "beam_pid", "type": "string", "default": "", "doc": "x"})
    new_agent = SchemaRegistry()
    new_agent.register(newer, current=True)
    message = encode({**examples["RuntimeCallEvent"], "runtime_type": "ERLANG",
                      "beam_pid": "<0.42.0>"}, "RuntimeCallEvent", new_agent)

    registry.register(newer)
    record = decode(message, registry).record
    assert record["runtime_type"] == "UNKNOWN"
    assert "beam_pid" not in record
    assert record["container_id"] == examples["RuntimeCallEvent"]["container_id"]


def test_equal_records_give_equal_bytes(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    for name in TOP_LEVEL:
        record = examples[name]
        reordered = dict(reversed(list(record.items())))
        first = encode(record, name, registry)
        assert encode(record, name, registry) == first
        assert encode(reordered, name, registry) == first
        assert encode(record, name, SchemaRegistry.default()) == first
        assert encode(decode(first, registry).record, name, registry) == first
    stats = examples["SignalStatistics"]
    flipped = {**stats, "dropped_by_reason": dict(reversed(stats["dropped_by_reason"].items()))}
    assert encode(flipped, "SignalStatistics", registry) == encode(
        stats, "SignalStatistics", registry)


@pytest.mark.parametrize("count", [0, 1, 2, 70])  # 70 items: a count of two varint bytes
def test_a_record_written_from_its_items_encodings_is_the_record_s_own_bytes(
    count: int, registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    # The processor encodes a path once, for the paths topic, and splices the body into the
    # summary; a latest state reuses the items of the paths a window did not change.
    paths = [{**examples["ObservedCallPath"], "observation_count": i, "symbols": ["s" * i]} for i in range(count)]
    summary = {**examples["RuntimeSignalSummary"], "call_paths": paths}
    bodies = [encode(p, "ObservedCallPath", registry)[HEADER_BYTES:] for p in paths]
    assert bodies == [encode_item(p, "RuntimeSignalSummary", "call_paths", registry) for p in paths]
    assert encode_with_items({**summary, "call_paths": None}, "RuntimeSignalSummary", registry, "call_paths",
                             bodies) == encode(summary, "RuntimeSignalSummary", registry)
    path = examples["ObservedCallPath"]
    state = {"container_id": "3f4e9a1c", "source_partition": 3, "first_observed_at_us": 1, "last_observed_at_us": 2,
             "total_events": 9, "raw_records": 4, "late_events": 1, "windows": count, "first_window_start_us": 0,
             "last_window_start_us": 60_000_000, "detected_runtimes": ["NATIVE"], "observed_symbols": ["main"],
             "call_paths": None}  # call_paths is its last field
    fields = ("callstack_hash", "path_hash", "symbols", "function_signatures", "node_hashes", "binary_digests",
              "binary_offsets", "libraries", "purl", "runtime_type", "observation_count", "first_observed_at_us",
              "last_observed_at_us", "purls", "addresses", "hash_recipe", "executables")
    items = [{**{name: path[name] for name in fields}, "windows": i} for i in range(count)]
    assert encode_with_items(state, "ContainerState", registry, "call_paths",
                             [encode_item(i, "ContainerState", "call_paths", registry) for i in items]) == \
        encode({**state, "call_paths": items}, "ContainerState", registry)


def test_a_template_writes_the_record_s_own_bytes_reusing_its_fixed_runs(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    # A call stack's names and hashes are encoded once and reused in every window's record.
    path = examples["ObservedCallPath"]
    fixed = ("symbols", "purl", "node_hashes", "path_hash", "callstack_hash", "libraries", "hash_recipe")
    paths = template("ObservedCallPath", fixed, registry)
    parts = paths.fixed_parts(path)
    assert len(parts) == 5  # symbols | purl | node_hashes..callstack_hash | libraries | hash_recipe
    for changed in ({}, {"observation_count": 1, "container_id": "other", "executables": []},
                    {"window_start_us": 0, "runtime_type": "JVM"}):
        record = {**path, **changed}
        assert paths.encode(record, parts) == encode(record, "ObservedCallPath", registry)
    items = item_template("RuntimeSignalSummary", "call_paths", fixed, registry)
    assert items.body(path, items.fixed_parts(path)) == encode(path, "ObservedCallPath", registry)[HEADER_BYTES:]
    with pytest.raises(EncodeError, match=r"ObservedCallPath has no field.*symbol_names"):
        template("ObservedCallPath", ["symbol_names"], registry)
    with pytest.raises(EncodeError, match="SignalStatistics contains maps"):
        template("SignalStatistics", [], registry)


def test_only_an_array_of_a_map_free_record_is_written_from_items(registry: SchemaRegistry) -> None:
    with pytest.raises(EncodeError, match="RuntimeSignalSummary has no array field 'container_id'"):
        encode_item({}, "RuntimeSignalSummary", "container_id", registry)
    with pytest.raises(EncodeError, match=r"item does not fit .*call_paths"):
        encode_item({"symbols": 7}, "RuntimeSignalSummary", "call_paths", registry)


def test_a_misspelt_field_is_refused_not_dropped(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    with pytest.raises(EncodeError, match="observed_at_ms"):
        encode({**examples["RuntimeCallEvent"], "observed_at_ms": 1}, "RuntimeCallEvent",
               registry)


def test_a_missing_required_field_or_wrong_type_is_an_encode_error(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    event = dict(examples["RuntimeCallEvent"])
    del event["container_id"]
    with pytest.raises(EncodeError, match="container_id"):
        encode(event, "RuntimeCallEvent", registry)
    with pytest.raises(EncodeError, match="RuntimeCallEvent"):
        encode({**examples["RuntimeCallEvent"], "pid": "not a number"}, "RuntimeCallEvent",
               registry)
    with pytest.raises(UnknownSchemaError, match=r"io.runtimesignals.NoSuchRecord"):
        encode({}, "NoSuchRecord", registry)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\xc3\x01\x00\x00", "too short"),
        (b"\x00\x01" + bytes(12), "bad magic 0001"),
        (b'{"container_id": "x"}', "bad magic 7b22"),
    ],
)
def test_malformed_framing_is_reported_with_the_byte_length(
    data: bytes, reason: str, registry: SchemaRegistry
) -> None:
    with pytest.raises(CorruptMessageError, match=reason) as caught:
        decode(data, registry)
    assert caught.value.byte_length == len(data)
    assert f"({len(data)} bytes)" in str(caught.value)


def test_a_tombstone_is_a_corrupt_message(registry: SchemaRegistry) -> None:
    with pytest.raises(CorruptMessageError, match="tombstone"):
        decode(None, registry)  # type: ignore[arg-type]


def test_an_unknown_fingerprint_is_named_in_hex(registry: SchemaRegistry) -> None:
    message = b"\xc3\x01" + bytes.fromhex("0011223344556677") + b"\x00"
    with pytest.raises(UnknownFingerprintError, match=r"0011223344556677.*not registered"):
        decode(message, registry)


def test_every_truncation_of_the_body_is_detected(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    message = encode(examples["RuntimeCallEvent"], "RuntimeCallEvent", registry)
    for cut in range(10, len(message)):
        with pytest.raises(CorruptMessageError, match=f"\\({cut} bytes\\)"):
            decode(message[:cut], registry)


def test_trailing_bytes_after_the_body_are_detected(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    message = encode(examples["AgentWatermark"], "AgentWatermark", registry)
    with pytest.raises(CorruptMessageError, match="2 bytes left over"):
        decode(message + b"\x00\x00", registry)


def test_invalid_utf8_in_a_string_is_a_corrupt_message(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    message = encode({**examples["AgentWatermark"], "agent_id": "ab"}, "AgentWatermark",
                     registry)
    garbled = message.replace(b"\x04ab", b"\x04\xff\xfe")
    with pytest.raises(CorruptMessageError, match="does not decode as"):
        decode(garbled, registry)


def test_garbage_bodies_only_ever_raise_schema_errors(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    # A corrupted body either still decodes as the record its fingerprint names, or raises one
    # of our SchemaErrors (anything else -- IndexError, UnicodeDecodeError, MemoryError from
    # fastavro -- would escape as a crash of the reader).
    rng = random.Random(20240501)
    outcomes: Counter[str] = Counter()
    for name in TOP_LEVEL:
        valid = encode(examples[name], name, registry)
        for _ in range(300):
            body = bytearray(valid[10:])
            for _ in range(rng.randint(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            for candidate in (valid[:10] + bytes(body),
                              valid[:10] + rng.randbytes(rng.randint(0, 64))):
                try:
                    decoded = decode(candidate, registry)
                except SchemaError as exc:
                    outcomes[type(exc).__name__] += 1
                else:
                    assert decoded.schema_name.endswith(name)
                    outcomes["decoded"] += 1
    assert outcomes["CorruptMessageError"] > 0 and outcomes["decoded"] > 0, outcomes


def test_reading_as_an_unrelated_record_is_an_incompatibility(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]]
) -> None:
    mark = encode(examples["AgentWatermark"], "AgentWatermark", registry)
    with pytest.raises(IncompatibleSchemaError, match=r"AgentWatermark.*RuntimeCallEvent"):
        decode(mark, registry, reader_schema_name="RuntimeCallEvent")
    with pytest.raises(UnknownSchemaError):
        decode(mark, registry, reader_schema_name="NoSuchRecord")


def test_a_new_schema_may_reference_shared_types_in_any_order(registry: SchemaRegistry) -> None:
    # RuntimeType is defined inside ObservedCallPath too; naming it first must still work.
    registry.register({
        "type": "record", "name": "PathSample", "namespace": "io.runtimesignals.test",
        "fields": [
            {"name": "runtime_type", "type": "io.runtimesignals.RuntimeType"},
            {"name": "path", "type": "io.runtimesignals.ObservedCallPath"},
        ],
    }, current=True)
    schema = json.dumps(registry.current_schema("io.runtimesignals.test.PathSample"))
    assert schema.count('"symbols": ["NATIVE"') == 1
    avro.schema.parse(schema)


def test_a_template_writes_per_record_strings_and_numbers_as_fastavro_does(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The per-call fields of a call record (string, int, long, nullable long) are written
    # without fastavro; every value, in range or not, must give fastavro's bytes or its error.
    event = examples["RuntimeCallEvent"]
    per_call = ("event_id", "tid", "timestamp_ns", "received_at_us", "observed_at_us", "observation_count",
                "last_timestamp_ns")
    calls = template("RuntimeCallEvent", [name for name in event if name not in per_call], registry)
    parts = calls.fixed_parts(event)
    rng = random.Random(7)
    edges = [0, 1, -1, 63, 64, -64, -65, 127, 128, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**63 - 1, -2**63,
             2**63, -2**63 - 1, True, 1.5, "7", None]
    for _ in range(2_000):
        record = dict(event)
        for name in per_call[1:]:
            record[name] = rng.choice(edges) if rng.random() < 0.3 else rng.randrange(-2**64, 2**64) >> rng.randrange(64)
        record["event_id"] = rng.choice(["", "ü" * rng.randrange(100), str(uuid.UUID(int=rng.getrandbits(128))),
                                         "\ud800", 5, None])
        assert _bytes_or_error(calls.encode, record, parts) == \
            _bytes_or_error(encode, record, "RuntimeCallEvent", registry), record
    missing = dict(event)
    del missing["last_timestamp_ns"]  # its default (null), as fastavro fills it in
    expected_bytes = encode(event, "RuntimeCallEvent", registry)
    assert calls.encode(missing, parts) == encode(missing, "RuntimeCallEvent", registry)

    def no_fastavro(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("fastavro called for a per-call field")

    # The point of the direct writers: a call's own fields cost no fastavro call at all.
    monkeypatch.setattr(codec_module.fastavro, "schemaless_writer", no_fastavro)
    assert calls.encode(event, parts) == expected_bytes


def _bytes_or_error(write: Callable[..., bytes], *args: Any) -> bytes | str:
    """What write(*args) gives: its bytes, or the name of the error it raises."""
    try:
        return write(*args)
    except EncodeError as exc:
        return type(exc).__name__


def _random_value(rng: random.Random, like: Any) -> Any:
    """A value shaped like `like` most of the time, something else sometimes."""
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([None, True, 3, -2**63 - 1, 2**63, 1.5, "x", b"x", [], {}, ("t",), "\ud800"])
    if isinstance(like, bool):
        return rng.random() < 0.5
    if isinstance(like, int):
        return rng.randrange(-2**63, 2**63) >> rng.randrange(64)
    if isinstance(like, str):
        return rng.choice(["", "ü" * rng.randrange(70), "a" * rng.randrange(200), like])
    if isinstance(like, list):
        return [_random_value(rng, like[0] if like else "s") for _ in range(rng.randrange(4))]
    if isinstance(like, dict):
        shaped = {name: _random_value(rng, value) for name, value in like.items()
                  if rng.random() > 0.02}  # a field left out now and then
        if rng.random() < 0.02:
            shaped["not_in_the_schema"] = 1  # which fastavro refuses, nested or not
        return shaped
    return like


def _fastavro_encoded(record: dict[str, Any], schema: str, registry: SchemaRegistry) -> bytes | str:
    """What fastavro itself writes for record (the codec's reference): its bytes, or "EncodeError"."""
    writer = registry._writer(schema)
    buffer = io.BytesIO()
    try:
        fastavro.schemaless_writer(buffer, writer.wire, record, strict_allow_default=True)
    except Exception:
        return "EncodeError"
    return MAGIC + writer.fingerprint + buffer.getvalue()


@pytest.mark.parametrize(("schema", "fixed"), [
    ("RuntimeCallEvent", ("container_id", "pid", "symbol", "function_address", "stack_trace", "runtime_type",
                          "library", "purl", "function_signature", "binary_digest", "binary_offset", "node_hash",
                          "callstack_hash", "host", "agent_id", "cgroup_id", "probe_id", "stack_frames",
                          "stack_truncated", "truncation_reason", "executable", "executable_digest",
                          "executable_purl", "comm")),
    ("ObservedCallPath", ("symbols", "purl", "node_hashes", "path_hash", "callstack_hash", "function_signatures",
                          "binary_digests", "binary_offsets", "libraries", "purls", "addresses", "hash_recipe")),
])
def test_a_template_s_runs_are_fastavro_s_bytes_for_any_values(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]], schema: str, fixed: tuple[str, ...]
) -> None:
    # Fixed and per-record runs alike are written without fastavro where their types allow
    # (strings, numbers, booleans, enums, arrays, records, nullable ones): every value, of
    # the right shape or not, must give fastavro's bytes, or the error it gives.
    example = examples[schema]
    runs = template(schema, fixed, registry)
    rng = random.Random(11)
    for _ in range(1_500):
        record = {name: (_random_value(rng, value) if rng.random() < 0.2 else value)
                  for name, value in example.items()}
        assert _bytes_or_error(lambda r: runs.encode(r, runs.fixed_parts(r)), record) == \
            _fastavro_encoded(record, schema, registry), record


def test_a_latest_state_item_s_per_window_fields_are_written_without_fastavro(
    registry: SchemaRegistry, examples: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A latest-state item names its runtime by reference (RuntimeType is defined earlier in
    # ContainerState): the direct writers follow the reference, so the fields a window changes
    # (runtime, counts, times) cost no fastavro call, and give fastavro's bytes or its error.
    path = examples["ObservedCallPath"]
    per_window = ("runtime_type", "observation_count", "windows", "first_observed_at_us", "last_observed_at_us")
    fields = ("callstack_hash", "path_hash", "symbols", "function_signatures", "node_hashes", "binary_digests",
              "binary_offsets", "libraries", "purl", "purls", "addresses", "hash_recipe", "executables")
    item = {**{name: path[name] for name in fields}, "runtime_type": "JVM", "observation_count": 5, "windows": 2,
            "first_observed_at_us": 1, "last_observed_at_us": 2}
    items = item_template("ContainerState", "call_paths", fields, registry)
    parts = items.fixed_parts(item)
    rng = random.Random(5)
    for _ in range(1_000):
        record = {**item, **{name: _random_value(rng, item[name]) for name in per_window if rng.random() < 0.3}}
        if rng.random() < 0.2:
            record["runtime_type"] = rng.choice(["NATIVE", "GO", "not-a-runtime", "", None, 3])
        assert _bytes_or_error(items.body, record, parts) == \
            _bytes_or_error(encode_item, record, "ContainerState", "call_paths", registry), record

    def no_fastavro(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("fastavro called for a per-window field")

    expected_bytes = encode_item(item, "ContainerState", "call_paths", registry)
    monkeypatch.setattr(codec_module.fastavro, "schemaless_writer", no_fastavro)
    assert items.body(item, parts) == expected_bytes
