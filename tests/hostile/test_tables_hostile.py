"""Hostile records on the symbols and modules topics: nothing a later writer sends can
rename, erase or re-package what a complete, consistent table already says."""

from __future__ import annotations

from typing import Any

import pytest

from runtime_signals.processor.symbol_store import SymbolStore
from tests.processor.raw_records import APP_DIGEST, APP_PURL, module_map, symbol_tables

PARSE_OFFSET = 0x1_300


def _app_table() -> dict[str, Any]:
    return symbol_tables()[0]


def _fake(**overrides: Any) -> dict[str, Any]:
    table = dict(_app_table())
    table["symbols"] = [{"file_offset": PARSE_OFFSET, "size_bytes": 0x40, "name": "alias_z"}]
    table["symbol_count"] = 1
    table.update(overrides)
    return table


def test_a_chunk_claiming_a_thousand_chunks_does_not_discard_the_complete_table() -> None:
    store = SymbolStore()
    store.add(_app_table(), "symbols[0]@0")
    store.add(_fake(chunk_count=1000, chunk_index=5), "symbols[0]@1")
    assert store.has(APP_DIGEST) and store.lookup(APP_DIGEST, PARSE_OFFSET) == "parse_image_header"
    assert store.counts["symbol_table_conflicts"] == 1


def test_a_chunk_claiming_a_thousand_chunks_before_the_real_table_does_not_stop_it_completing() -> None:
    store = SymbolStore()
    store.add(_fake(chunk_count=1000, chunk_index=5), "evil")
    store.add(_app_table(), "agent")
    assert store.lookup(APP_DIGEST, PARSE_OFFSET) == "parse_image_header"


def test_a_later_complete_table_for_the_same_digest_cannot_rename_functions() -> None:
    store = SymbolStore()
    store.add(_app_table(), "symbols[0]@0")
    store.add(_fake(), "symbols[0]@7 principal=User:node-9")
    assert store.lookup(APP_DIGEST, PARSE_OFFSET) == "parse_image_header"
    [conflict] = store.conflicts
    assert conflict.binary_digest == APP_DIGEST and "principal=User:node-9" in conflict.writer


def test_chunks_that_do_not_add_up_to_the_claimed_symbol_count_are_not_a_table() -> None:
    store = SymbolStore()
    store.add(_fake(symbol_count=5), "evil")  # one symbol where the real table has five
    assert not store.has(APP_DIGEST) and store.counts["symbol_table_conflicts"] == 1
    store.add(_app_table(), "agent")
    assert store.lookup(APP_DIGEST, PARSE_OFFSET) == "parse_image_header"


def test_a_smaller_purl_sent_later_does_not_win() -> None:
    store = SymbolStore()
    store.add_module_map(module_map(), "modules[0]@0")
    forged = module_map(pid=1)
    forged["modules"][0]["purl"] = "pkg:a/a@0"
    store.add_module_map(forged, "modules[1]@0")
    assert store.purl(APP_DIGEST) == APP_PURL
    [conflict] = store.conflicts
    assert conflict.kind == "module_purl" and "pkg:a/a@0" in conflict.detail


def test_an_eighty_kilobyte_name_is_not_kept_and_the_table_still_completes() -> None:
    table = _app_table()
    table["symbols"] = table["symbols"] + [{"file_offset": 0x9000, "size_bytes": 8, "name": "_Z" + "N1aI" * 20_000}]
    table["symbol_count"] += 1
    store = SymbolStore()
    store.add(table)
    assert store.has(APP_DIGEST) and store.lookup(APP_DIGEST, 0x9000) is None
    assert store.counts["symbols_oversize"] == 1


def test_tables_are_bounded_least_recently_used_and_reloaded_only_identical() -> None:
    def table(n: int, name: str = "f") -> dict[str, Any]:
        return {"binary_digest": f"sha256:{n:064x}", "chunk_index": 0, "chunk_count": 1, "symbol_count": 1000,
                "symbols": [{"file_offset": i * 16, "size_bytes": 16, "name": f"{name}{i}"} for i in range(1000)]}

    store = SymbolStore(max_symbols=2500)
    for n in range(3):
        store.add(table(n))
        store.has(f"sha256:{0:064x}")  # table 0 stays in use
    assert store.symbols_held <= 2500 and store.counts["symbol_tables_evicted"] == 1
    evicted = f"sha256:{1:064x}"
    assert store.has(f"sha256:{0:064x}") and not store.has(evicted)
    assert store.wanted() == {evicted}
    store.add(table(1, name="forged"))          # a reload that differs: not taken back
    assert not store.has(evicted) and store.counts["symbol_table_conflicts"] == 1
    store.add(table(1))                          # the compacted topic's copy: taken back
    assert store.lookup(evicted, 32) == "f2" and store.wanted() == set()


@pytest.mark.broker
def test_an_evicted_table_is_reloaded_from_the_compacted_topic(kafka_bootstrap: str) -> None:
    import time
    import uuid

    from runtime_signals.devtools.demo import create_topics
    from runtime_signals.processor.kafka_io import BinaryFeed
    from runtime_signals.schemas import codec
    from runtime_signals.schemas.topics import TopicNames
    from tests.processor.harness import produce
    from tests.processor.raw_records import REGISTRY

    names = TopicNames().with_prefix(f"reload-{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_bootstrap, names, partitions=2)
    tables = [{"binary_digest": f"sha256:{n:064x}", "chunk_index": 0, "chunk_count": 1, "symbol_count": 1000,
               "symbols": [{"file_offset": i * 16, "size_bytes": 16, "name": f"t{n}_f{i}"} for i in range(1000)]}
              for n in range(3)]
    produce(kafka_bootstrap, names.symbols, [(f"{t['binary_digest']}/0".encode(),
                                             codec.encode(t, "SymbolTable", REGISTRY), None) for t in tables])
    store = SymbolStore(max_symbols=2000)  # room for two of the three tables
    feed = BinaryFeed({"bootstrap.servers": kafka_bootstrap}, names.symbols, names.modules, store, REGISTRY,
                      "reload-test")
    try:
        feed.catch_up(30)
        assert store.counts["symbol_tables_evicted"] == 1 and store.symbols_held <= 2000
        evicted = next(t["binary_digest"] for t in tables if not store.has(t["binary_digest"]))
        assert store.wanted() == {evicted}
        deadline = time.monotonic() + 30
        while not store.has(evicted) and time.monotonic() < deadline:
            feed.poll()
            time.sleep(0.1)
        assert store.has(evicted), dict(store.counts)
        assert store.lookup(evicted, 32) == f"t{int(evicted[7:], 16)}_f2"
        assert store.counts["symbol_table_reloads"] == 1 and store.counts["symbol_table_conflicts"] == 0
    finally:
        feed.close()
