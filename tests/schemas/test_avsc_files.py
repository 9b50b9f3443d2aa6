"""The .avsc files follow the house rules, keep the seed's fields, and parse with both
fastavro and the Apache Avro reference implementation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from runtime_signals.schemas.codec import (
    SCHEMA_DIR,
    SCHEMA_ORDER,
    RuntimeType,
    load_schemas,
    read_schema_files,
    self_contained_schema,
)
from runtime_signals.schemas.errors import SchemaLoadError
from tests.schemas.seed_map import RUNTIME_TYPE_CODES, SEED_FIELDS, SEED_NULLABLE

DOCUMENTS = {name.rpartition(".")[2]: doc for name, doc in read_schema_files().items()}
RECORDS = {name: doc for name, doc in DOCUMENTS.items() if doc["type"] == "record"}
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def _fields(record: str) -> dict[str, dict[str, Any]]:
    return {field["name"]: field for field in RECORDS[record]["fields"]}


def test_every_avsc_file_is_listed_in_the_load_order() -> None:
    on_disk = sorted(path.stem for path in SCHEMA_DIR.glob("*.avsc"))
    assert on_disk == sorted(SCHEMA_ORDER)


def test_an_unlisted_avsc_file_is_refused_by_name(tmp_path: Path) -> None:
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, tmp_path)
    (tmp_path / "Stray.avsc").write_text(json.dumps(
        {"type": "record", "name": "Stray", "namespace": "io.runtimesignals", "fields": []}))
    with pytest.raises(SchemaLoadError, match="Stray"):
        read_schema_files(tmp_path)


def test_fastavro_parses_all_files_with_shared_named_types() -> None:
    parsed = load_schemas()
    assert list(parsed) == [f"io.runtimesignals.{name}" for name in SCHEMA_ORDER]


@pytest.mark.parametrize("name", SCHEMA_ORDER)
def test_apache_avro_parses_the_self_contained_form(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.avsc"
    path.write_text(json.dumps(self_contained_schema(name), indent=2))
    parsed = avro.schema.parse(path.read_text())
    assert parsed.fullname == f"io.runtimesignals.{name}"


def test_a_named_type_used_twice_is_defined_once_then_referenced() -> None:
    # RuntimeType appears inside ObservedCallPath and again in detected_runtimes:
    # Avro rejects a second definition, and the canonical form must name it instead.
    text = json.dumps(self_contained_schema("RuntimeSignalSummary"))
    assert text.count('"symbols": ["NATIVE"') == 1
    assert '"items": "io.runtimesignals.RuntimeType"' in text


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_type_and_field_has_a_doc(name: str) -> None:
    document = DOCUMENTS[name]
    assert document.get("doc", "").strip(), f"{name} has no doc"
    for field in document.get("fields", []):
        assert field.get("doc", "").strip(), f"{name}.{field['name']} has no doc"


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_field_names_are_snake_case_with_units(record: str) -> None:
    for name, field in _fields(record).items():
        assert SNAKE_CASE.fullmatch(name), f"{record}.{name} is not snake_case"
        kind = field["type"]
        if isinstance(kind, dict) and kind.get("logicalType") == "timestamp-micros":
            assert name.endswith("_us"), f"{record}.{name} is in microseconds"
        if name.endswith(("_us", "_ns", "_bytes")):
            assert kind in ("long", ["null", "long"]) or kind.get("type") == "long", name


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_nullable_fields_put_null_first_and_default_to_null(record: str) -> None:
    for name, field in _fields(record).items():
        if isinstance(field["type"], list) and "null" in field["type"]:
            assert field["type"][0] == "null" and len(field["type"]) == 2, f"{record}.{name}"
            assert "default" in field and field["default"] is None, f"{record}.{name}"


@pytest.mark.parametrize("record", sorted(SEED_FIELDS))
def test_seed_properties_keep_their_fields(record: str) -> None:
    fields = _fields(record)
    for prop, field_name in SEED_FIELDS[record].items():
        assert field_name in fields, f"seed {record}.{prop} lost its field {field_name}"
    for field_name in SEED_NULLABLE[record]:
        assert fields[field_name]["type"][0] == "null", f"{record}.{field_name} must be nullable"


@pytest.mark.parametrize("record", sorted(SEED_FIELDS))
def test_fields_beyond_the_seed_have_defaults(record: str) -> None:
    # A reader on the new schema must be able to read messages written with only the seed's
    # fields; Avro can only do that with a default. (Records the seed lacks, such as
    # AgentWatermark, start at their first version and need none.)
    seed = set(SEED_FIELDS[record].values())
    for name, field in _fields(record).items():
        if name not in seed:
            assert "default" in field, f"{record}.{name} extends the seed but has no default"


def test_extension_fields_follow_the_seed_fields_in_the_raw_event() -> None:
    names = list(_fields("RuntimeCallEvent"))
    assert names[: len(SEED_FIELDS["RuntimeCallEvent"])] == list(
        SEED_FIELDS["RuntimeCallEvent"].values())


def test_identifiers_and_instants_use_logical_types() -> None:
    event = _fields("RuntimeCallEvent")
    assert event["event_id"]["type"] == {"type": "string", "logicalType": "uuid"}
    assert event["received_at_us"]["type"]["logicalType"] == "timestamp-micros"
    # Boot-clock nanoseconds are not wall-clock instants: no logical type there.
    assert event["timestamp_ns"]["type"] == "long"


def test_runtime_type_enum_matches_the_python_codes() -> None:
    enum = DOCUMENTS["RuntimeType"]
    assert enum["symbols"] == list(RUNTIME_TYPE_CODES)
    assert enum["default"] == "UNKNOWN"
    assert {member.name: member.value for member in RuntimeType} == RUNTIME_TYPE_CODES


def test_an_unknown_runtime_symbol_maps_to_unknown() -> None:
    assert RuntimeType.from_symbol("JVM") is RuntimeType.JVM
    assert RuntimeType.from_symbol("ERLANG") is RuntimeType.UNKNOWN
