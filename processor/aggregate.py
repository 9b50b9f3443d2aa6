"""Folding call events into per-window call paths and summary records. Pure functions.

List orders in the output (the contract's determinism rule, docs/processor.md):
- call_paths: by path_hash, then callstack_hash;
- observed_symbols, observed_node_hashes, observed_path_hashes: sorted, unique;
- detected_runtimes: by RuntimeType code;
- symbols and per-frame lists of a path: entry point first, probed function last.

Memory: a window holds one PathAggregate per distinct call stack, never the events, and
each path at most MAX_EXECUTABLES_PER_PATH executables (the rest counted, not kept).

Hashes follow schemas/HASHING.md v2 (hash_recipe "runtime-signals/v2"); every input of
them is in the record, so a reader can recompute them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runtime_signals.processor.intake import CallRecord, Executable
from runtime_signals.processor.symbolize import Frame, SymbolSource, digests_to_resolve, resolve_frames
from runtime_signals.processor.windows import WindowKey
from runtime_signals.schemas import hashing
from runtime_signals.schemas.codec import RuntimeType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Distinct executables kept per path and window: a path is usually taken by one program;
# a shared library's path in a pod of many programs by a few. Beyond this they are counted.
MAX_EXECUTABLES_PER_PATH = 32


@dataclass
class PathAggregate:
    """One distinct call stack within a window. Frames stay unsymbolized until the window
    is emitted, so symbol tables that arrive while it is open still name them."""

    frames: tuple[Frame, ...]
    identities: tuple[str, ...]
    top_symbol: str | None
    top_signature: str | None
    top_purl: str | None
    runtime_type: str
    observation_count: int = 0
    first_observed_at_us: int = 0
    last_observed_at_us: int = 0
    executables: set[Executable] = field(default_factory=set)
    executables_omitted: int = 0  # records whose executable did not fit

    def observe(self, call: CallRecord) -> None:
        executable = call.executable
        if executable is not None and executable not in self.executables:
            if len(self.executables) < MAX_EXECUTABLES_PER_PATH:
                self.executables.add(executable)
            else:
                self.executables_omitted += 1
        at_us = call.observed_at_us
        if self.observation_count == 0 or at_us < self.first_observed_at_us:
            self.first_observed_at_us = at_us
        self.last_observed_at_us = max(self.last_observed_at_us, at_us)
        self.observation_count += call.observation_count
        # The first record of the path that knew these wins; records come in partition
        # order, so a replay makes the same choice.
        self.top_signature = self.top_signature or call.top_signature
        self.top_purl = self.top_purl or call.top_purl


@dataclass
class WindowAggregate:
    """Everything one container did in one window of one partition.

    first_offset is the raw-topic offset of the first record that touched the window:
    the worker may not commit past it until the window is emitted (docs/processor.md)."""

    key: WindowKey
    end_us: int
    first_offset: int
    paths: dict[tuple[str, ...], PathAggregate] = field(default_factory=dict)
    total_events: int = 0
    raw_records: int = 0
    late_events: int = 0
    runtimes: set[str] = field(default_factory=set)
    # Event ids of the records added, up to a bound: a record sent twice is added once. The
    # set is rebuilt with the window when a worker replays its records, so a replay decides
    # as the first run did.
    event_ids: set[int] = field(default_factory=set)
    event_ids_full: bool = False

    def is_repeat(self, call: CallRecord, max_event_ids: int) -> bool:
        """Was a record with call's (agent, event id) added already? Remembers it otherwise,
        while fewer than max_event_ids are remembered (past that, repeats are not recognised
        and event_ids_full says so). Kept as a 64-bit digest: a stable one, so that every
        run decides alike, and a quarter of the memory of the strings."""
        if not call.event_id:
            return False
        key = int.from_bytes(hashlib.blake2b(f"{call.agent_id}\0{call.event_id}".encode(), digest_size=8).digest(),
                             "little")
        if key in self.event_ids:
            return True
        if len(self.event_ids) < max_event_ids:
            self.event_ids.add(key)
        else:
            self.event_ids_full = True
        return False

    def add(self, call: CallRecord) -> None:
        path = self.paths.get(call.identities)
        if path is None:
            path = PathAggregate(call.frames, call.identities, call.top_symbol, call.top_signature,
                                 call.top_purl, call.runtime_type)
            self.paths[call.identities] = path
        path.observe(call)
        self.total_events += call.observation_count
        self.raw_records += 1
        self.runtimes.add(call.runtime_type)

    def add_late(self, observation_count: int) -> None:
        self.late_events += observation_count

    def needs(self) -> tuple[frozenset[str], frozenset[str]]:
        """The binaries whose symbol tables, and those whose module-map entries, naming
        this window's frames takes."""
        tables: set[str] = set()
        modules: set[str] = set()
        for path in self.paths.values():
            tables |= digests_to_resolve(path.frames, path.top_symbol)
            modules.update(f.binary_digest for f in path.frames if f.binary_digest is not None)
        return frozenset(tables), frozenset(modules)


def micros(value: int | datetime) -> int:
    """Microseconds since the epoch. fastavro decodes timestamp-micros to an aware
    datetime when a schema keeps its logical type; windows work in integers, computed
    exactly (no float seconds)."""
    if isinstance(value, int):
        return value
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class WindowOutput:
    """The records of one emitted window, and how many of its frames stayed unnamed."""

    summary: dict[str, Any]
    paths: list[dict[str, Any]]
    stacks: list[NamedStack]  # each path's, in the same order
    unresolved_frames: int
    executables_omitted: int = 0


@dataclass(slots=True)
class NamedStack:
    """The fields of a path record that follow from its stack alone (names, packages,
    hashes), and how many of its frames no symbol named."""

    fields: dict[str, Any]
    unresolved: int
    # Those fields encoded, by codec.RecordTemplate name: filled and reused by the engine.
    encoded: dict[str, tuple[bytes, ...]] = field(default_factory=dict)


class NamedStacks:
    """Named stacks by what naming them reads, the least recently used dropped beyond
    max_entries. A fleet's containers run the same images, and a container the same stacks
    window after window: each is named and hashed once. The lists in a NamedStack are shared
    by every record built from it and must not be changed in place."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._named: OrderedDict[tuple[Any, ...], NamedStack] = OrderedDict()

    def __len__(self) -> int:
        return len(self._named)

    def get(self, key: tuple[Any, ...]) -> NamedStack | None:
        found = self._named.get(key)
        if found is not None:
            self._named.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], named: NamedStack) -> None:
        self._named[key] = named
        if len(self._named) > self._max_entries:
            self._named.popitem(last=False)


# The fields of a path record that name_stack() gives.
STACK_FIELDS = ("symbols", "purl", "node_hashes", "path_hash", "callstack_hash", "function_signatures",
                "binary_digests", "binary_offsets", "libraries", "purls", "addresses", "hash_recipe")


def name_stack(path: PathAggregate, source: SymbolSource) -> NamedStack:
    """Name and hash one path's frames from the symbol tables and module maps."""
    frames = resolve_frames(path.frames, path.identities, path.top_symbol, path.top_signature,
                            path.top_purl, source)
    node_hashes = [f.node_hash for f in frames]
    return NamedStack({
        "symbols": [f.symbol for f in frames],
        "purl": frames[-1].purl,
        "node_hashes": node_hashes,
        "path_hash": hashing.path_hash_v2(node_hashes),
        "callstack_hash": hashing.callstack_hash_v2(path.identities),
        "function_signatures": [f.signature for f in frames],
        "binary_digests": [f.binary_digest for f in path.frames],
        "binary_offsets": [f.binary_offset for f in path.frames],
        "libraries": [f.library for f in path.frames],
        "purls": [f.module for f in frames],
        # Only frames named by their address (not located in a digested file) need it.
        "addresses": [f.unlocated_address for f in frames],
        "hash_recipe": hashing.RECIPE_V2,
    }, sum(not f.resolved for f in frames))


def _naming_inputs(path: PathAggregate, source: SymbolSource) -> tuple[Any, ...]:
    """Everything name_stack() reads, given that the source has every table and module map
    the path's frames need (a process's load addresses only matter to unlocated frames,
    whose identities hold them)."""
    return (path.identities, path.top_symbol, path.top_signature, path.top_purl,
            tuple((f.binary_digest, f.binary_offset, f.library, f.purl,
                   None if f.binary_digest is None else source.purl(f.binary_digest)) for f in path.frames))


def path_record(window: WindowAggregate, path: PathAggregate, source: SymbolSource,
                named_stacks: NamedStacks | None = None) -> tuple[dict[str, Any], NamedStack]:
    """The ObservedCallPath record of one path of a window, and its named stack.
    named_stacks, when given, may only be when the source holds every table and module map
    the window needs (then a stack's names cannot change until one is evicted)."""
    if named_stacks is None:
        named = name_stack(path, source)
    else:
        key = _naming_inputs(path, source)
        found = named_stacks.get(key)
        if found is None:
            named = name_stack(path, source)
            named_stacks.put(key, named)
        else:
            named = found
    record = {
        **named.fields,
        "observation_count": path.observation_count,
        "runtime_type": path.runtime_type,
        "first_observed_at_us": path.first_observed_at_us,
        "last_observed_at_us": path.last_observed_at_us,
        "container_id": window.key.container_id,
        "window_start_us": window.key.start_us,
        "window_end_us": window.end_us,
        "executables": [e.record() for e in sorted(path.executables, key=Executable.sort_key)],
    }
    return record, named


def window_output(window: WindowAggregate, source: SymbolSource,
                  named_stacks: NamedStacks | None = None) -> WindowOutput:
    """The RuntimeSignalSummary of a window, and its paths in summary order (named_stacks:
    as path_record() says)."""
    built = [path_record(window, p, source, named_stacks) for p in window.paths.values()]
    built.sort(key=lambda pair: (pair[0]["path_hash"], pair[0]["callstack_hash"]))
    paths = [record for record, _ in built]
    node_hashes = sorted({h for p in paths for h in p["node_hashes"]})
    path_hashes = sorted({p["path_hash"] for p in paths})
    summary = {
        "container_id": window.key.container_id,
        "started_at_us": window.key.start_us,
        "stopped_at_us": window.end_us,
        "total_events": window.total_events,
        "call_paths": paths,
        "observed_symbols": sorted({s for p in paths for s in p["symbols"]}),
        "dropped_events": 0,
        "detected_runtimes": sorted(window.runtimes, key=lambda name: RuntimeType[name].value),
        "observed_node_hashes": node_hashes,
        "observed_path_hashes": path_hashes,
        "combined_path_hash": hashing.combined_path_hash_v2(path_hashes),
        "raw_records": window.raw_records,
        "late_events": window.late_events,
        "hash_recipe": hashing.RECIPE_V2,
    }
    return WindowOutput(summary, paths, [named for _, named in built], sum(n.unresolved for _, n in built),
                        sum(p.executables_omitted for p in window.paths.values()))
