"""What the agents publish about binaries: symbol tables, searchable by (binary digest,
file offset), and the package (PURL) of each binary digest, from the module maps.

Only complete tables answer: a table whose chunks have not all arrived would name some
frames and not others depending on when a window closed, and the output must not depend
on that. The engine holds a window back until the tables and module maps it needs have
arrived (processor/engine.py), so a live run and a replay name the same frames.

Any writer of the symbols or modules topic could otherwise rename everyone's functions, so
(docs/processor.md, "What the tables trust"):
- the first complete table of a digest is final. A later chunk that differs from it
  (another chunk count, other symbols) never replaces or erases it: it is a conflict,
  counted, logged and kept in `conflicts` with the writer's identity (topic, partition,
  offset, and the principal header when the deployment's producers set one);
- chunks are assembled per claimed shape (chunk count, symbol count, build id, source), so
  a chunk claiming another chunk count starts its own candidate instead of discarding the
  chunks of the real one; a candidate becomes the table only when it is whole and its
  chunks hold symbol_count symbols between them;
- a binary's PURL is the first one a module map gave it; a different one later is a
  conflict (counted, reported), never a replacement. Sorting first wins nothing;
- tables are bounded in memory (max_symbols over all tables, least recently used evicted,
  counted). An evicted table is reloaded from the compacted topic when a window needs it
  again (`wanted`, processor/kafka_io.py), and only a reload identical to what was evicted
  (same fingerprint) is taken back.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Entry = tuple[int, int, str]                         # (file offset, size in bytes, name)
Shape = tuple[int, int, str | None, str | None]      # (chunk_count, symbol_count, build_id, source)

# A table's chunks fit the broker's record size each (agent/symbols_publisher.py); the
# largest binaries seen need a few dozen. More is a broken or hostile writer.
MAX_CHUNKS = 4096
# Candidate shapes assembled at once for one digest; a real agent makes one.
MAX_CANDIDATES = 4
# Names longer than this are not kept (the frame stays unnamed, counted): they would bloat
# every path record that names them, and no demangler reads them (processor/symbolize.py).
MAX_NAME_BYTES = 4096
MAX_CONFLICTS_KEPT = 1024
_LOGGED = 10


@dataclass(frozen=True)
class Conflict:
    """A record that disagreed with what was taken first."""

    kind: str          # symbol_table, module_purl, unauthenticated
    binary_digest: str
    writer: str        # where it came from: topic[partition]@offset, principal
    detail: str


@dataclass
class _Candidate:
    shape: Shape
    chunks: dict[int, list[Entry]] = field(default_factory=dict)
    names_dropped: int = 0   # longer than MAX_NAME_BYTES

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.shape[0]


@dataclass
class _Table:
    fingerprint: str
    # Each chunk's digest, to compare a chunk read again with: the chunks themselves are not
    # kept once indexed (they would hold every symbol twice).
    chunks: dict[int, str]
    starts: list[int]
    entries: list[Entry]
    size: int   # symbols held


def _fingerprint(shape: Shape, chunks: dict[int, list[Entry]]) -> str:
    digest = hashlib.sha256(repr(shape).encode())
    for index in sorted(chunks):
        digest.update(repr((index, chunks[index])).encode())
    return digest.hexdigest()


def _chunk_digest(entries: list[Entry]) -> str:
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def _index(shape: Shape, chunks: dict[int, list[Entry]]) -> _Table:
    # Aliases share a start: keep the largest, then the smallest name, so the choice
    # does not depend on the order chunks arrived in.
    by_start: dict[int, Entry] = {}
    for start, size, name in (e for chunk in chunks.values() for e in chunk):
        kept = by_start.get(start)
        if kept is None or (-size, name) < (-kept[1], kept[2]):
            by_start[start] = (start, size, name)
    starts = sorted(by_start)
    return _Table(_fingerprint(shape, chunks), {i: _chunk_digest(c) for i, c in chunks.items()}, starts,
                  [by_start[s] for s in starts],
                  sum(len(c) for c in chunks.values()))


class SymbolStore:
    """Implements processor.symbolize.SymbolSource from SymbolTable and ModuleMap records."""

    def __init__(self, max_symbols: int = 4_000_000, max_binaries: int = 1_000_000) -> None:
        self._max_symbols = max_symbols
        self._max_binaries = max_binaries
        self._tables: OrderedDict[str, _Table] = OrderedDict()   # least recently used first
        self._symbols_held = 0
        self._candidates: dict[str, dict[Shape, _Candidate]] = {}
        self._evicted: dict[str, str] = {}                        # digest -> fingerprint
        self._wanted: set[str] = set()                            # evicted digests asked for
        self._purls: dict[str, str | None] = {}  # digest -> PURL (None: known, no package)
        self.conflicts: deque[Conflict] = deque(maxlen=MAX_CONFLICTS_KEPT)
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._tables)

    def sizes(self) -> dict[str, int]:
        """What the store holds, for /metrics: tables, chunks waiting for the rest of their
        table (indexed tables keep only each chunk's digest), symbols indexed, packages known."""
        return {"symbol_tables": len(self._tables),
                "symbol_chunks_waiting": sum(len(c.chunks) for cs in self._candidates.values() for c in cs.values()),
                "symbols_indexed": self._symbols_held,
                "binary_purls": len(self._purls)}

    @property
    def symbols_held(self) -> int:
        return self._symbols_held

    # -- symbol tables -----------------------------------------------------------------

    def add(self, record: dict[str, Any], writer: str = "") -> None:
        """Take one SymbolTable chunk (chunks may come in any order, and again)."""
        self.counts["chunks"] += 1
        digest = record["binary_digest"]
        shape: Shape = (record["chunk_count"], record["symbol_count"], record.get("build_id"), record.get("source"))
        index = record["chunk_index"]
        if not (0 < shape[0] <= MAX_CHUNKS and 0 <= index < shape[0] and shape[1] >= 0):
            self._conflict("symbol_table", digest, writer, f"chunk {index} of {shape[0]}: outside 0..{MAX_CHUNKS}")
            return
        entries: list[Entry] = []
        dropped = 0
        for symbol in record["symbols"]:
            name = symbol["name"]
            if len(name) > MAX_NAME_BYTES // 4 and len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
                dropped += 1
                continue
            entries.append((symbol["file_offset"], symbol["size_bytes"], name))
        if digest in self._evicted and digest not in self._wanted:
            return  # re-read while reloading another table: it stays out until a window needs it
        table = self._tables.get(digest)
        if table is not None:
            if table.chunks.get(index) != _chunk_digest(entries):
                self._conflict("symbol_table", digest, writer, f"chunk {index} of {shape[0]} differs from the "
                               f"complete table taken first")
            return
        candidates = self._candidates.setdefault(digest, {})
        candidate = candidates.get(shape)
        if candidate is None:
            if len(candidates) >= MAX_CANDIDATES:
                self._conflict("symbol_table", digest, writer, f"a {MAX_CANDIDATES + 1}th shape {shape[:2]} "
                               f"while none is complete")
                return
            candidate = candidates[shape] = _Candidate(shape)
        known = candidate.chunks.get(index)
        if known is not None:
            if known != entries:
                self._conflict("symbol_table", digest, writer, f"chunk {index} of {shape[0]} differs from the "
                               f"one taken first")
            return
        candidate.chunks[index] = entries
        candidate.names_dropped += dropped
        if not candidate.complete:
            return
        held = sum(len(c) for c in candidate.chunks.values()) + candidate.names_dropped
        if held != shape[1]:
            # symbol_count is what the writer claimed for the whole table: chunks that do not
            # add up to it are not one table (a chunk of another writer's table slipped in).
            del candidates[shape]
            self._conflict("symbol_table", digest, writer, f"{shape[0]} chunks hold {held} symbols, the table "
                           f"claims {shape[1]}: not taken")
            return
        self.counts["symbols_oversize"] += candidate.names_dropped
        self._complete(digest, candidate)

    def _complete(self, digest: str, candidate: _Candidate) -> None:
        table = _index(candidate.shape, candidate.chunks)
        others = self._candidates.pop(digest, {})
        if len(others) > 1:
            self.counts["symbol_table_candidates_discarded"] += len(others) - 1
        evicted = self._evicted.pop(digest, None)
        if evicted is not None and evicted != table.fingerprint:
            self._conflict("symbol_table", digest, "reload", "the table reloaded differs from the one evicted")
            self._evicted[digest] = evicted
            return
        self._wanted.discard(digest)
        self._tables[digest] = table
        self._symbols_held += table.size
        self._evict()

    def _evict(self) -> None:
        while self._symbols_held > self._max_symbols and len(self._tables) > 1:
            digest, table = self._tables.popitem(last=False)
            self._symbols_held -= table.size
            self._evicted[digest] = table.fingerprint
            self.counts["symbol_tables_evicted"] += 1

    def _conflict(self, kind: str, digest: str, writer: str, detail: str) -> None:
        self.counts[f"{kind}_conflicts"] += 1
        self.conflicts.append(Conflict(kind, digest, writer, detail))
        log.log(logging.WARNING if self.counts[f"{kind}_conflicts"] <= _LOGGED else logging.DEBUG,
                "%s conflict for %s from %s: %s; kept what was taken first", kind, digest, writer or "?", detail)

    def refuse(self, record: dict[str, Any], kind: str, writer: str, problem: str) -> None:
        """A table chunk or module map whose writer could not be authenticated: kept aside
        as a conflict, never taken (runtime_signals/kafka/provenance.py)."""
        digests = [record["binary_digest"]] if "binary_digest" in record else \
            sorted({m["binary_digest"] for m in record.get("modules", ()) if m["binary_digest"]})
        self.counts["unauthenticated_records"] += 1
        self._conflict("unauthenticated", ", ".join(digests[:3]) + (" …" if len(digests) > 3 else ""), writer,
                       f"{kind.rpartition('.')[2]}: {problem}")

    def wanted(self) -> set[str]:
        """Evicted digests a window has asked for since: to reload from the topic."""
        return set(self._wanted)

    # -- module maps -------------------------------------------------------------------

    def add_module_map(self, record: dict[str, Any], writer: str = "") -> None:
        """Take one ModuleMap: the package of each binary it maps. The first map that names
        a binary's package (or says it has none) is kept; a later different answer is a
        conflict, reported, and changes nothing."""
        for module in record["modules"]:
            digest, purl = module["binary_digest"], module["purl"]
            if digest is None:
                continue
            if digest not in self._purls:
                if len(self._purls) >= self._max_binaries:
                    self.counts["module_binaries_dropped"] += 1
                    continue
                self._purls[digest] = purl
            elif purl is not None and self._purls[digest] is None:
                # "No package found" by one process and a package by another: the package.
                self._purls[digest] = purl
            elif purl is not None and purl != self._purls[digest]:
                self._conflict("module_purl", digest, writer, f"{purl!r} differs from {self._purls[digest]!r}")
        self.counts["module_maps"] += 1

    def purl(self, binary_digest: str) -> str | None:
        return self._purls.get(binary_digest)

    def has_modules(self, binary_digests: Iterable[str]) -> bool:
        """Whether a module map has named the package (or its absence) of every digest."""
        return all(d in self._purls for d in binary_digests)

    # -- lookups -----------------------------------------------------------------------

    def has(self, binary_digest: str) -> bool:
        if binary_digest in self._tables:
            self._tables.move_to_end(binary_digest)
            return True
        if binary_digest in self._evicted:
            self._wanted.add(binary_digest)
        return False

    def has_all(self, binary_digests: Iterable[str]) -> bool:
        # A list, not a generator: every digest is asked, so each evicted one is marked wanted.
        return all([self.has(d) for d in binary_digests])  # noqa: C419

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
