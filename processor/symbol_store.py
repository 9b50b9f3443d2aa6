"""What the agents publish about binaries: symbol tables, searchable by (binary digest,
file offset), and the package (PURL) of each binary digest, from the module maps.

Only complete tables answer: a table whose chunks have not all arrived would name some
frames and not others depending on when a window closed, and the output must not depend
on that. The engine holds a window back until the tables and module maps it needs have
arrived (processor/engine.py), so a live run and a replay name the same frames.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Table:
    chunk_count: int
    chunks: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    entries: list[tuple[int, int, str]] = field(default_factory=list)
    indexed: bool = False

    @property
    def complete(self) -> bool:
        return self.indexed or len(self.chunks) == self.chunk_count

    def index(self) -> None:
        # Aliases share a start: keep the largest, then the smallest name, so the choice
        # does not depend on the order chunks arrived in.
        by_start: dict[int, tuple[int, int, str]] = {}
        for start, size, name in (e for chunk in self.chunks.values() for e in chunk):
            kept = by_start.get(start)
            if kept is None or (-size, name) < (-kept[1], kept[2]):
                by_start[start] = (start, size, name)
        self.entries = [by_start[start] for start in sorted(by_start)]
        self.starts = sorted(by_start)
        # The chunks are not needed once indexed: keeping them would hold every symbol twice.
        self.chunks = {}
        self.indexed = True


class SymbolStore:
    """Implements processor.symbolize.SymbolSource from SymbolTable records."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._purls: dict[str, str | None] = {}  # digest -> PURL (None: known, no package)
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._tables)

    def sizes(self) -> dict[str, int]:
        """What the store holds, for /metrics: tables, chunks waiting for the rest of their
        table (indexed tables keep none), symbols indexed, and packages known."""
        return {"symbol_tables": len(self._tables),
                "symbol_chunks_waiting": sum(len(t.chunks) for t in self._tables.values()),
                "symbols_indexed": sum(len(t.entries) for t in self._tables.values()),
                "binary_purls": len(self._purls)}

    def add(self, record: dict[str, Any]) -> None:
        """Take one SymbolTable chunk (chunks may come in any order, and again)."""
        digest = record["binary_digest"]
        table = self._tables.get(digest)
        if table is not None and table.indexed and table.chunk_count == record["chunk_count"]:
            # A chunk again (an agent restarted, or another node has the same binary): a
            # digest names one file, so the table it belongs to is the one already indexed.
            self.counts["chunks_repeated"] += 1
            return
        if table is None or table.chunk_count != record["chunk_count"]:
            table = self._tables[digest] = _Table(record["chunk_count"])
        table.chunks[record["chunk_index"]] = [
            (s["file_offset"], s["size_bytes"], s["name"]) for s in record["symbols"]
        ]
        if table.complete:
            table.index()
        self.counts["chunks"] += 1

    def add_module_map(self, record: dict[str, Any]) -> None:
        """Take one ModuleMap: the package of each binary it maps. When maps from several
        processes disagree, the smallest PURL wins, so arrival order does not matter."""
        for module in record["modules"]:
            digest, purl = module["binary_digest"], module["purl"]
            if digest is None:
                continue
            known = self._purls.get(digest)
            self._purls[digest] = purl if known is None else (known if purl is None else min(known, purl))
        self.counts["module_maps"] += 1

    def purl(self, binary_digest: str) -> str | None:
        return self._purls.get(binary_digest)

    def has_modules(self, binary_digests: Iterable[str]) -> bool:
        """Whether a module map has named the package (or its absence) of every digest."""
        return all(d in self._purls for d in binary_digests)

    def has(self, binary_digest: str) -> bool:
        table = self._tables.get(binary_digest)
        return table is not None and table.complete

    def has_all(self, binary_digests: Iterable[str]) -> bool:
        return all(self.has(d) for d in binary_digests)

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None:
        """The function whose [start, start + size) holds the offset. A symbol of unknown
        size (0) matches only its first byte: guessing its extent would misname frames."""
        table = self._tables.get(binary_digest)
        if table is None or not table.complete:
            return None
        position = bisect.bisect_right(table.starts, binary_offset) - 1
        if position < 0:
            return None
        start, size, name = table.entries[position]
        return name if binary_offset < start + max(size, 1) else None
