"""Publishes each binary's symbol table once, off the event pump's thread.

Reading an ELF symbol table takes milliseconds to seconds; done inline it would stall
the ring-buffer pump and cost drops. A worker thread reads and produces instead
(librdkafka's producer is thread-safe).

Bounded: at most MAX_QUEUED tables wait; an offer that finds the queue full is counted
("queue_full") and forgotten, so the next process mapping that file offers it again. The
digests already published are remembered in an LRU: one published again after eviction
costs a read and a compacted duplicate, never a wrong table.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from pathlib import Path

from cachetools import LRUCache

from runtime_signals.agent.perfmap import JitModule
from runtime_signals.agent.publisher import Publisher
from runtime_signals.agent.symtab import SymbolTableError, chunk_symbols, read_symbol_table
from runtime_signals.schemas import codec

log = logging.getLogger(__name__)

SYMBOL_TABLE = "io.runtimesignals.SymbolTable"
# Well under the broker's default message.max.bytes (1 MiB) after compression is undone;
# a chunk is symbols plus a few fixed fields (digest, build id, source: < 1 KiB).
MAX_CHUNK_BYTES = 512 * 1024
MAX_QUEUED = 1024
MAX_REMEMBERED = 1 << 16


class SymbolTablePublisher:
    """Reads and publishes the symbol table of every digest offered, once per digest."""

    def __init__(self, publisher: Publisher, topic: str, registry: codec.SchemaRegistry,
                 max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
        self._publisher = publisher
        self._topic = topic
        self._registry = registry
        self._max_chunk_bytes = max_chunk_bytes
        self._offered: LRUCache[str, bool] = LRUCache(MAX_REMEMBERED)
        self._queue: queue.Queue[tuple[str, Path, Path] | None] = queue.Queue(MAX_QUEUED)
        self.counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._work, name="symbol-tables", daemon=True)
        self._thread.start()

    def offer(self, binary_digest: str, path: Path, root: Path = Path("/")) -> None:
        """Publish the table of the file at path (seen from root) unless done already."""
        if binary_digest in self._offered:
            return
        try:
            self._queue.put_nowait((binary_digest, path, root))
        except queue.Full:
            self.counts["queue_full"] += 1
            return
        self._offered[binary_digest] = True

    def sizes(self) -> dict[str, int]:
        """Entries held, for /metrics."""
        return {"symbol_tables_queued": self._queue.qsize(), "symbol_tables_remembered": len(self._offered)}

    def offer_jit(self, blob: JitModule) -> None:
        """Publish the one-name table of a JIT code blob (agent/perfmap.py) unless done already.
        Produced at once, not queued: it is one small record, and behind a JVM's large ELF
        tables it would miss the processor's wait for the window that needs it."""
        if blob.binary_digest in self._offered:
            return
        self._offered[blob.binary_digest] = True
        self._publish_jit(blob)

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the tables already offered, then stop the worker."""
        self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            digest, path, root = item
            try:
                self._publish(digest, path, root)
            except SymbolTableError as exc:
                self.counts["unreadable"] += 1
                log.warning("no symbols for %s: %s", digest, exc)
            except Exception:  # a bug here must not stop the tables that follow
                self.counts["failed"] += 1
                log.exception("publishing symbols of %s (%s) failed", digest, path)

    def _publish_jit(self, blob: JitModule) -> None:
        value = codec.encode({
            "binary_digest": blob.binary_digest, "build_id": None, "source": f"{blob.source}:{blob.map_path}",
            "chunk_index": 0, "chunk_count": 1, "symbol_count": 1,
            # A Python function has no extent: its frames sit at offset 1, looked up at 0.
            "symbols": [{"file_offset": 0, "size_bytes": max(blob.size, 1), "name": blob.name}],
        }, SYMBOL_TABLE, self._registry)
        self._publisher.produce(self._topic, f"{blob.binary_digest}/0".encode(), value)
        self.counts["jit_tables"] += 1

    def _publish(self, digest: str, path: Path, root: Path) -> None:
        table = read_symbol_table(path, debug_root=root)
        chunks = chunk_symbols(table.symbols, self._max_chunk_bytes)
        for index, chunk in enumerate(chunks):
            value = codec.encode({
                "binary_digest": digest,
                "build_id": table.build_id,
                "source": table.source,
                "chunk_index": index,
                "chunk_count": len(chunks),
                "symbol_count": len(table.symbols),
                "symbols": [{"file_offset": s.file_offset, "size_bytes": s.size_bytes, "name": s.name}
                            for s in chunk],
            }, SYMBOL_TABLE, self._registry)
            self._publisher.produce(self._topic, f"{digest}/{index}".encode(), value)
        self.counts["tables"] += 1
        log.info("published %d symbols of %s (%s, %d chunk(s))", len(table.symbols), path, table.source, len(chunks))
