"""Typed, immutable views of what the summary topics hold, and of the answers built on them.

Times are integer microseconds since the Unix epoch, UTC (the ``_us`` in every name), as in
the Avro records; ``iso()`` renders one for people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from runtime_signals.consumer.watched import Watch


def iso(time_us: int | None) -> str | None:
    """``2026-11-26T13:45:09.000123+00:00`` for a time in µs; None stays None."""
    if time_us is None:
        return None
    seconds, micros = divmod(int(time_us), 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    return moment.isoformat(timespec="microseconds")


def _tuple(values: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(values) if values is not None else ()


@dataclass(frozen=True, slots=True, order=True)
class Executable:
    """A program that took a path: ObservedCallPath.executables."""

    path: str | None
    binary_digest: str | None
    purl: str | None
    comm: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Executable:
        return cls(record.get("path"), record.get("binary_digest"), record.get("purl"), record.get("comm") or "")

    def describe(self) -> str:
        name = self.path or self.comm or "an unknown program"
        return f"{name} ({self.binary_digest or 'digest unknown'}{', ' + self.purl if self.purl else ''})"


@dataclass(frozen=True, slots=True)
class CallPath:
    """One ObservedCallPath: a distinct stack ending in a probed function, in one window.
    The per-frame tuples are parallel, entry point first, probed function last."""

    container_id: str
    window_start_us: int
    window_end_us: int
    symbols: tuple[str, ...]
    function_signatures: tuple[str, ...]
    node_hashes: tuple[str | None, ...]
    libraries: tuple[str | None, ...]
    binary_digests: tuple[str | None, ...]
    binary_offsets: tuple[int | None, ...]
    purl: str | None              # package of the probed function (the last frame) only
    runtime_type: str
    observation_count: int        # calls of the probed function that took this path
    first_observed_at_us: int
    last_observed_at_us: int
    path_hash: str | None
    callstack_hash: str | None
    # Module identity of each frame (HASHING.md v2 §12: the package's purl, or
    # pkg:generic/NAME?checksum=... for an unpackaged binary); all None in v1 records.
    purls: tuple[str | None, ...] = ()
    hash_recipe: str = "runtime-signals/v1"
    executables: tuple[Executable, ...] = ()  # the programs that took the path

    @classmethod
    def from_record(cls, record: Mapping[str, Any], container_id: str = "",
                    window_start_us: int = 0, window_end_us: int = 0) -> CallPath:
        """From a decoded ObservedCallPath; the enclosing summary fills what older writers left empty."""
        symbols = _tuple(record["symbols"])
        return cls(
            container_id=record.get("container_id") or container_id,
            window_start_us=record.get("window_start_us") or window_start_us,
            window_end_us=record.get("window_end_us") or window_end_us,
            symbols=symbols,
            function_signatures=_tuple(record.get("function_signatures")) or symbols,
            node_hashes=_tuple(record.get("node_hashes")) or (None,) * len(symbols),
            libraries=_tuple(record.get("libraries")) or (None,) * len(symbols),
            binary_digests=_tuple(record.get("binary_digests")) or (None,) * len(symbols),
            binary_offsets=_tuple(record.get("binary_offsets")) or (None,) * len(symbols),
            purl=record.get("purl"),
            runtime_type=record.get("runtime_type", "UNKNOWN"),
            observation_count=record["observation_count"],
            first_observed_at_us=record["first_observed_at_us"],
            last_observed_at_us=record["last_observed_at_us"],
            path_hash=record.get("path_hash"),
            callstack_hash=record.get("callstack_hash"),
            purls=_tuple(record.get("purls")) or (None,) * len(symbols),
            hash_recipe=record.get("hash_recipe") or "runtime-signals/v1",
            executables=tuple(Executable.from_record(e) for e in record.get("executables") or ()),
        )

    def package_of(self, index: int) -> str | None:
        """The package purl of frame ``index``: its module identity when that names a
        package (not an unpackaged binary); in a v1 record only the probed function's
        (the last frame) is known. None when no package is known."""
        module = self.purls[index] if index < len(self.purls) else None
        if index == len(self.symbols) - 1 and self.purl is not None:
            module = self.purl  # as the agent found it, qualifiers (arch, distro) included
        if module is None or module.startswith("pkg:generic/"):
            return None  # an unpackaged binary, anonymous memory: no package
        return module

    @property
    def identity(self) -> tuple[str, ...]:
        """What makes two windows' paths the same path: the callstack hash when computed
        (frames by binary location), else the symbols."""
        return (self.callstack_hash,) if self.callstack_hash else self.symbols


@dataclass(frozen=True, slots=True)
class Summary:
    """One RuntimeSignalSummary: what one container was seen calling in one window."""

    container_id: str
    started_at_us: int
    stopped_at_us: int
    total_events: int
    raw_records: int
    dropped_events: int
    late_events: int
    call_paths: tuple[CallPath, ...]
    observed_symbols: tuple[str, ...]
    detected_runtimes: tuple[str, ...]
    combined_path_hash: str | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Summary:
        start, end, container = record["started_at_us"], record["stopped_at_us"], record["container_id"]
        return cls(
            container_id=container,
            started_at_us=start,
            stopped_at_us=end,
            total_events=record["total_events"],
            raw_records=record.get("raw_records", 0),
            dropped_events=record.get("dropped_events", 0),
            late_events=record.get("late_events", 0),
            call_paths=tuple(CallPath.from_record(p, container, start, end) for p in record["call_paths"]),
            observed_symbols=_tuple(record.get("observed_symbols")),
            detected_runtimes=_tuple(record.get("detected_runtimes")),
            combined_path_hash=record.get("combined_path_hash"),
        )


@dataclass(frozen=True, slots=True)
class PathTotal:
    """One distinct path of a container over every window it was seen in."""

    symbols: tuple[str, ...]
    function_signatures: tuple[str, ...]
    node_hashes: tuple[str | None, ...]
    libraries: tuple[str | None, ...]
    purl: str | None
    runtime_type: str
    path_hash: str | None
    callstack_hash: str | None
    observation_count: int
    first_observed_at_us: int
    last_observed_at_us: int
    windows: int
    # Where each frame is (parallel to symbols): tells apart paths whose names agree.
    binary_digests: tuple[str | None, ...] = ()
    binary_offsets: tuple[int | None, ...] = ()
    purls: tuple[str | None, ...] = ()
    executables: tuple[Executable, ...] = ()

    def package_of(self, index: int) -> str | None:
        module = self.purls[index] if index < len(self.purls) else None
        if index == len(self.symbols) - 1 and self.purl is not None:
            module = self.purl
        return None if module is None or module.startswith("pkg:generic/") else module


@dataclass(frozen=True, slots=True)
class ContainerState:
    """Everything ever observed for one container: the union of its windows, as the
    processor's latest-state topic holds it (schemas/ContainerState.avsc)."""

    container_id: str
    first_window_start_us: int
    last_window_start_us: int
    windows: int
    total_events: int
    late_events: int
    first_observed_at_us: int
    last_observed_at_us: int
    paths: tuple[PathTotal, ...]
    raw_records: int = 0
    detected_runtimes: tuple[str, ...] = ()
    # Known when folded from the summaries here; the latest-state record does not carry them.
    last_window_end_us: int | None = None
    dropped_events: int | None = None

    @property
    def probed_functions(self) -> tuple[str, ...]:
        """Probed functions seen called (the last frame of each path), sorted."""
        return tuple(sorted({p.symbols[-1] for p in self.paths if p.symbols}))


@dataclass(frozen=True, slots=True)
class Target:
    """What is asked about: a function (symbol or signature), a node hash, a PURL, or a
    function within a PURL. At least one must be given."""

    function: str | None = None
    node_hash: str | None = None
    purl: str | None = None

    def describe(self) -> str:
        parts = [f"function {self.function}" if self.function else "",
                 f"node hash {self.node_hash}" if self.node_hash else "",
                 f"package {self.purl}" if self.purl else ""]
        return " in ".join(p for p in parts if p) or "nothing"


@dataclass(frozen=True, slots=True)
class PathEvidence:
    """One observed path holding the target, totalled over the windows it was seen in."""

    container_id: str
    symbols: tuple[str, ...]
    libraries: tuple[str | None, ...]
    purl: str | None
    matched_frame: int            # index into symbols of the frame that is the target
    node_hash: str | None         # that frame's node hash
    path_hash: str | None
    callstack_hash: str | None
    # Calls of the probed function (the path's last frame) whose stack held the target;
    # a target seen as a caller frame was running, not necessarily called that often.
    observation_count: int
    first_observed_at_us: int
    last_observed_at_us: int
    windows: int
    # False when the target names a package but the path cannot confirm it (the frame's
    # package is not resolved): the function matched by name only.
    purl_verified: bool = True
    # Parallel to symbols: demangled names, and where each frame is (its binary and the
    # offset in it), so paths whose names agree can be told apart when printed.
    function_signatures: tuple[str, ...] = ()
    binary_digests: tuple[str | None, ...] = ()
    binary_offsets: tuple[int | None, ...] = ()
    # The matched frame's package (with its version) when known: what a verdict on a
    # package version is about. None for an unpackaged binary or an unknown package.
    package_purl: str | None = None
    module: str | None = None          # the matched frame's module identity (HASHING.md v2)
    executables: tuple[Executable, ...] = ()
    frame_purls: tuple[str | None, ...] = ()  # every frame's module identity, as symbols


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the answer is based on: the windows read and what they saw. A target absent
    from them was not observed; that says nothing about time outside the windows, nor
    about functions that no agent probed."""

    containers: tuple[str, ...] = ()
    windows: int = 0
    first_window_start_us: int | None = None
    last_window_end_us: int | None = None
    total_events: int = 0
    dropped_events: int = 0
    late_events: int = 0
    probed_functions: tuple[str, ...] = ()   # probed functions seen called at least once
    # For a function not observed: how long its probes were watched in the span (from the
    # agents' statistics, consumer/watched.py); None when not asked or not known.
    watched: Watch | None = None


@dataclass(frozen=True, slots=True)
class Reachability:
    """The answer to "was the target called, and by which paths?"."""

    target: Target
    reached: bool
    observation_count: int
    first_observed_at_us: int | None
    last_observed_at_us: int | None
    paths: tuple[PathEvidence, ...]
    coverage: Coverage = field(default_factory=Coverage)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data, with an ISO-8601 twin of every time."""
        return cast(dict[str, Any], _with_iso(asdict(self)))


def _with_iso(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key] = _with_iso(item)
            if key.endswith("_us") and (item is None or isinstance(item, int)):
                out[key[:-3] + "_iso"] = iso(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_with_iso(item) for item in value]
    return value
