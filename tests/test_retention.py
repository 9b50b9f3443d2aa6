"""Output topics shrink with time (issue 15): summaries, paths and latest states are
compact,delete with the configured retention, as `signals kafka topics` creates them on a
real broker; the processor's symbol store keeps no chunk once a table is indexed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from runtime_signals.config import KafkaSettings
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.schemas.topics import OUTPUT_RETENTION_MS, TopicNames


@pytest.mark.broker
def test_signals_kafka_topics_sets_compact_delete_with_the_configured_retention(kafka_bootstrap: str) -> None:
    prefix = f"ret-{uuid.uuid4().hex[:8]}."
    done = subprocess.run([sys.executable, "-m", "runtime_signals.cli", "kafka", "topics", "--topic-prefix", prefix,
                           "--partitions", "1", "--bootstrap", kafka_bootstrap, "--output-retention-ms", "3600000"],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy(), check=False)
    assert done.returncode == 0, done.stderr
    names = TopicNames().with_prefix(prefix)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in (names.summaries, names.paths, names.latest,
                                                                         names.raw)]
    configs = {r.name: f.result(30) for r, f in admin.describe_configs(resources).items()}
    for topic in (names.summaries, names.paths, names.latest):
        assert configs[topic]["cleanup.policy"].value == "compact,delete"
        assert configs[topic]["retention.ms"].value == "3600000"
    assert configs[names.raw]["cleanup.policy"].value == "delete"


def test_the_default_retention_is_one_figure() -> None:
    assert KafkaSettings().output_retention_ms == OUTPUT_RETENTION_MS


def test_symbol_chunks_are_dropped_once_the_table_is_indexed() -> None:
    store = SymbolStore()

    def chunk(index: int, offset: int, name: str) -> dict[str, object]:
        return {"binary_digest": "sha256:aa", "chunk_index": index, "chunk_count": 2, "symbol_count": 2,
                "symbols": [{"file_offset": offset, "size_bytes": 16, "name": name}]}

    store.add(chunk(0, 0x100, "first"))
    assert store.sizes()["symbol_chunks_waiting"] == 1 and not store.has("sha256:aa")
    store.add(chunk(1, 0x200, "second"))
    assert store.sizes() == {"symbol_tables": 1, "symbol_chunks_waiting": 0, "symbols_indexed": 2,
                             "binary_purls": 0}
    assert (store.lookup("sha256:aa", 0x108), store.lookup("sha256:aa", 0x20f)) == ("first", "second")
    store.add(chunk(0, 0x100, "first"))  # sent again (an agent restarted): the table stays whole
    assert store.has("sha256:aa") and store.sizes()["symbol_chunks_waiting"] == 0
    assert store.lookup("sha256:aa", 0x208) == "second"
    assert store.counts["symbol_table_conflicts"] == 0  # the same chunk: its digest matches the kept one
    store.add(chunk(0, 0x100, "forged"))  # a different chunk 0: told apart by its digest alone
    assert store.counts["symbol_table_conflicts"] == 1 and store.lookup("sha256:aa", 0x108) == "first"
