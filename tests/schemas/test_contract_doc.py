"""docs/contract.md is a copy of facts held in the .avsc files: it must not drift from them."""

from __future__ import annotations

import re

import pytest

from runtime_signals.schemas.codec import SCHEMA_DIR, SCHEMA_ORDER, fingerprint_hex, read_schema_files
from tests.schemas.seed_map import RUNTIME_TYPE_CODES, SEED_FIELDS

CONTRACT = (SCHEMA_DIR.parent / "docs" / "contract.md").read_text("utf-8")
ROWS = [line for line in CONTRACT.splitlines() if line.startswith("|")]
# Records whose every field this page documents (others get a pointer to their .avsc).
DOCUMENTED = ["RuntimeCallEvent", "StackFrame", "AgentWatermark", "ObservedCallPath",
              "RuntimeSignalSummary", "SignalStatistics"]


@pytest.mark.parametrize("record", sorted(SEED_FIELDS))
def test_every_seed_property_has_a_row_naming_its_avro_field(record: str) -> None:
    for prop, field in SEED_FIELDS[record].items():
        row = f"| `{record}.{prop}` | `{record}.{field}` |"
        assert any(line.startswith(row) for line in ROWS), f"missing row {row}"


@pytest.mark.parametrize("record", DOCUMENTED)
def test_every_avro_field_is_documented(record: str) -> None:
    document = read_schema_files()[f"io.runtimesignals.{record}"]
    for field in document["fields"]:
        assert f"`{record}.{field['name']}`" in CONTRACT, f"{record}.{field['name']}"


def test_every_schema_is_named() -> None:
    for name in SCHEMA_ORDER:
        assert f"`{name}`" in CONTRACT


def test_runtime_type_code_table() -> None:
    for symbol, code in RUNTIME_TYPE_CODES.items():
        assert f"| `{symbol}` | {code} |" in ROWS


@pytest.mark.parametrize("record", DOCUMENTED)
def test_fingerprint_table_matches_the_schemas(record: str) -> None:
    assert f"| `{record}` | `{fingerprint_hex(record)}` |" in ROWS


def test_the_xxd_example_shows_the_current_raw_event_header() -> None:
    match = re.search(r"00000000: ((?:[0-9a-f]{4} ){5})", CONTRACT)
    assert match, "xxd example missing"
    assert match.group(1).replace(" ", "") == "c301" + fingerprint_hex("RuntimeCallEvent")

