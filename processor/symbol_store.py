"""Symbol tables received from the agents, searchable by (binary digest, file offset)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Table:
    chunk_count: int
    chunks: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    entries: list[tuple[int, int, str]] = field(default_factory=list)

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


class SymbolStore:
    """Implements processor.symbolize.SymbolSource from SymbolTable records."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self.counts: Counter[str] = Counter()

    def add(self, record: dict[str, Any]) -> None:
        """Take one SymbolTable chunk (chunks may come in any order, and again)."""
        digest = record["binary_digest"]
        table = self._tables.get(digest)
        if table is None or table.chunk_count != record["chunk_count"]:
            table = self._tables[digest] = _Table(record["chunk_count"])
        table.chunks[record["chunk_index"]] = [
            (s["file_offset"], s["size_bytes"], s["name"]) for s in record["symbols"]
        ]
        table.index()
        self.counts["chunks"] += 1

    def has(self, binary_digest: str) -> bool:
        table = self._tables.get(binary_digest)
        return table is not None and len(table.chunks) == table.chunk_count

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None:
        """The function whose [start, start + size) holds the offset. A symbol of unknown
        size (0) matches only its first byte: guessing its extent would misname frames."""
        table = self._tables.get(binary_digest)
        if table is None:
            return None
        position = bisect.bisect_right(table.starts, binary_offset) - 1
        if position < 0:
            return None
        start, size, name = table.entries[position]
        return name if binary_offset < start + max(size, 1) else None
