"""Questions over summaries: pure functions of plain data, no Kafka.

Matching rules (docs/consumers.md says the same, for users):
- a node hash matches a frame whose node hash is equal (case-insensitive);
- a function matches a frame whose symbol or function signature equals it, or is it
  followed by a parameter list (``ns::f`` matches ``ns::f(int)``) or by a Rust legacy
  hash (``krate::f`` matches ``krate::f::h0123456789abcdef``);
- a PURL matches a frame whose package has the same type, namespace and name, the same
  version if the query gives one, and no qualifier contradicting the query's. A v2 path names
  every frame's package (``purls``); a v1 path only the probed function's. A frame of an
  unpackaged binary or of unknown package matches a function-in-PURL query by name only,
  with ``purl_verified`` False, unless the frame's node hash equals node_hash(PURL,
  function), which proves both; a frame of another package does not match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packageurl import PackageURL

from runtime_signals.consumer.errors import QueryError
from runtime_signals.consumer.models import (
    CallPath,
    ContainerState,
    Coverage,
    Executable,
    PathEvidence,
    PathTotal,
    Reachability,
    Summary,
    Target,
)
from runtime_signals.schemas import hashing

# A Rust legacy-mangled name demangles with its hash: `krate::f::h0123456789abcdef`.
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}")


def parse_purl(purl: str) -> PackageURL:
    try:
        return PackageURL.from_string(purl)
    except ValueError as exc:
        raise QueryError(f"{purl!r} is not a package URL (pkg:TYPE/NAMESPACE/NAME@VERSION): {exc}") from exc


def purl_matches(query: PackageURL, candidate: str | None) -> bool:
    """Whether the package ``candidate`` is (a version of) the package ``query`` names."""
    if candidate is None:
        return False
    try:
        found = PackageURL.from_string(candidate)
    except ValueError:
        return False
    if (found.type, found.namespace or "", found.name) != (query.type, query.namespace or "", query.name):
        return False
    if query.version and found.version != query.version:
        return False
    qualifiers = found.qualifiers if isinstance(found.qualifiers, dict) else {}
    wanted = query.qualifiers if isinstance(query.qualifiers, dict) else {}
    # A qualifier the candidate does not carry cannot contradict the query: v2 module
    # identities drop qualifiers (schemas/HASHING.md §11).
    return all(qualifiers.get(key, value) == value for key, value in wanted.items())


def in_time(summary: Summary, since_us: int | None, until_us: int | None) -> bool:
    """Whether the summary's window overlaps [since_us, until_us)."""
    if since_us is not None and summary.stopped_at_us <= since_us:
        return False
    return until_us is None or summary.started_at_us < until_us


def select(summaries: Iterable[Summary], *, container: str | None = None, since_us: int | None = None,
           until_us: int | None = None) -> list[Summary]:
    """Summaries of one container (or all) whose windows overlap the time range, in
    (window start, container) order."""
    if since_us is not None and until_us is not None and until_us <= since_us:
        raise QueryError(f"empty time range: until ({until_us} µs) is not after since ({since_us} µs)")
    summaries = list(summaries)
    wanted = None if container is None else resolve_container(container, {s.container_id for s in summaries})
    chosen = [s for s in summaries if (wanted is None or s.container_id == wanted)
              and in_time(s, since_us, until_us)]
    return sorted(chosen, key=lambda s: (s.started_at_us, s.container_id))


def resolve_container(container: str, known: Iterable[str]) -> str:
    """The container id ``container`` names among ``known``: itself when known, else the one
    id it is a prefix of (``host:3d1219c7`` for ``host:3d1219c7c4c5…``). An id known nowhere
    is returned as given (the answer is then "nothing known"); a prefix of several ids is an
    error listing them, never a silent pick."""
    ids = set(known)
    if container in ids:
        return container
    matches = sorted(i for i in ids if i.startswith(container))
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (f", … ({len(matches)} in all)" if len(matches) > 5 else "")
        raise QueryError(f"--container {container!r} is a prefix of several containers: {shown}; give more of it")
    return matches[0] if matches else container


@dataclass(frozen=True, slots=True)
class _Match:
    frame: int
    purl_verified: bool


class Matcher:
    """A Target compiled for matching many paths."""

    def __init__(self, target: Target) -> None:
        if not (target.function or target.node_hash or target.purl):
            raise QueryError("ask about something: give a function, a node hash or a PURL")
        self.target = target
        self._node_hash = target.node_hash.strip().lower() if target.node_hash else None
        self._purl = parse_purl(target.purl) if target.purl else None
        self._function = target.function.strip() if target.function else None
        # node_hash(purl, function) proves a frame is this function of this package.
        self._proof: frozenset[str] | None = None
        if self._purl is not None and self._function and target.purl:
            try:
                self._proof = frozenset({hashing.node_hash(target.purl, self._function),
                                         hashing.node_hash_v2(target.purl, self._function)})
            except Exception:  # an unhashable input only loses this shortcut
                self._proof = None

    def _function_at(self, path: CallPath | PathTotal, index: int) -> bool:
        assert self._function is not None
        name = self._function
        if path.symbols[index] == name:
            return True
        signature = path.function_signatures[index] if index < len(path.function_signatures) else None
        return any(candidate == name or candidate.startswith(name + "(")
                   or (_RUST_HASH.fullmatch(candidate[len(name):]) is not None and candidate.startswith(name))
                   for candidate in (path.symbols[index], signature) if candidate)

    def match(self, path: CallPath | PathTotal) -> _Match | None:
        """The innermost frame of ``path`` that is the target, or None."""
        last = len(path.symbols) - 1
        for index in range(last, -1, -1):
            node_hash = path.node_hashes[index] if index < len(path.node_hashes) else None
            if self._node_hash is not None and (node_hash or "").lower() != self._node_hash:
                continue
            if self._function is not None and not self._function_at(path, index):
                continue
            if self._purl is None:
                return _Match(index, True)
            if self._proof is not None and node_hash in self._proof:
                return _Match(index, True)
            package = path.package_of(index)
            if package is not None:
                if purl_matches(self._purl, package):
                    return _Match(index, True)
                continue  # the function of another package
            if self._function is None and self._node_hash is None:
                continue  # a bare PURL is answered by the frames' packages only
            return _Match(index, False)  # no package known for the frame: matched by name
        return None


def reachability(target: Target, summaries: Iterable[Summary]) -> Reachability:
    """Whether the target appears on any path of ``summaries``, with the evidence: each
    distinct path totalled over its windows, most observed first."""
    matcher = Matcher(target)
    totals: dict[tuple[object, ...], _Totals] = {}
    coverage = _CoverageBuilder()
    for summary in summaries:
        coverage.add(summary)
        for path in summary.call_paths:
            found = matcher.match(path)
            if found is None:
                continue
            key = (path.container_id, path.identity, found.frame)
            entry = totals.get(key)
            if entry is None:
                entry = totals[key] = _Totals(path, found)
            entry.add(path)
    evidence = sorted((t.evidence() for t in totals.values()),
                      key=lambda e: (-e.observation_count, e.container_id, e.path_hash or "", e.symbols))
    return Reachability(
        target=target,
        reached=bool(evidence),
        observation_count=sum(e.observation_count for e in evidence),
        first_observed_at_us=min((e.first_observed_at_us for e in evidence), default=None),
        last_observed_at_us=max((e.last_observed_at_us for e in evidence), default=None),
        paths=tuple(evidence),
        coverage=coverage.build(),
    )


def container_state(container_id: str, summaries: Iterable[Summary]) -> ContainerState | None:
    """The union of a container's windows: every distinct path with its totals."""
    paths: dict[tuple[object, ...], _Totals] = {}
    mine = [s for s in summaries if s.container_id == container_id]
    if not mine:
        return None
    for summary in mine:
        for path in summary.call_paths:
            entry = paths.get(path.identity)
            if entry is None:
                entry = paths[path.identity] = _Totals(path, _Match(len(path.symbols) - 1, True))
            entry.add(path)
    totals = sorted((t.total() for t in paths.values()),
                    key=lambda p: (-p.observation_count, p.path_hash or "", p.symbols))
    return ContainerState(
        container_id=container_id,
        first_window_start_us=min(s.started_at_us for s in mine),
        last_window_start_us=max(s.started_at_us for s in mine),
        windows=len({s.started_at_us for s in mine}),
        total_events=sum(s.total_events for s in mine),
        late_events=sum(s.late_events for s in mine),
        first_observed_at_us=min((p.first_observed_at_us for p in totals), default=0),
        last_observed_at_us=max((p.last_observed_at_us for p in totals), default=0),
        paths=tuple(totals),
        raw_records=sum(s.raw_records for s in mine),
        detected_runtimes=tuple(sorted({r for s in mine for r in s.detected_runtimes})),
        last_window_end_us=max(s.stopped_at_us for s in mine),
        dropped_events=sum(s.dropped_events for s in mine),
    )


def reachability_in_state(target: Target, state: ContainerState) -> Reachability:
    """The same question answered from one container's latest state."""
    matcher = Matcher(target)
    evidence = []
    for path in state.paths:
        found = matcher.match(path)
        if found is not None:
            evidence.append(PathEvidence(
                state.container_id, path.symbols, path.libraries, path.purl, found.frame,
                path.node_hashes[found.frame] if found.frame < len(path.node_hashes) else None,
                path.path_hash, path.callstack_hash, path.observation_count,
                path.first_observed_at_us, path.last_observed_at_us, path.windows, found.purl_verified,
                path.function_signatures, path.binary_digests, path.binary_offsets,
                package_purl=path.package_of(found.frame),
                module=path.purls[found.frame] if found.frame < len(path.purls) else None,
                executables=path.executables, frame_purls=path.purls))
    # The latest-state record does not say where its last window ends, nor what was dropped:
    # its last window's start and 0 are what it can vouch for.
    end_us = state.last_window_end_us if state.last_window_end_us is not None else state.last_window_start_us
    coverage = Coverage((state.container_id,), state.windows, state.first_window_start_us, end_us,
                        state.total_events, state.dropped_events or 0, state.late_events,
                        state.probed_functions)
    return Reachability(target, bool(evidence), sum(e.observation_count for e in evidence),
                        min((e.first_observed_at_us for e in evidence), default=None),
                        max((e.last_observed_at_us for e in evidence), default=None),
                        tuple(sorted(evidence, key=lambda e: -e.observation_count)), coverage)


class _Totals:
    def __init__(self, path: CallPath, found: _Match) -> None:
        self.path = path
        self.found = found
        self.count = 0
        self.first_us: int | None = None
        self.last_us = 0
        self.windows: set[int] = set()
        self.executables: set[Executable] = set()

    def add(self, path: CallPath) -> None:
        self.count += path.observation_count
        self.executables.update(path.executables)
        if self.first_us is None or path.first_observed_at_us < self.first_us:
            self.first_us = path.first_observed_at_us
        self.last_us = max(self.last_us, path.last_observed_at_us)
        self.windows.add(path.window_start_us)

    def evidence(self) -> PathEvidence:
        p, frame = self.path, self.found.frame
        return PathEvidence(
            p.container_id, p.symbols, p.libraries, p.purl, frame,
            p.node_hashes[frame] if frame < len(p.node_hashes) else None,
            p.path_hash, p.callstack_hash, self.count, self.first_us or 0, self.last_us,
            len(self.windows), self.found.purl_verified, p.function_signatures, p.binary_digests,
            p.binary_offsets, package_purl=p.package_of(frame),
            module=p.purls[frame] if frame < len(p.purls) else None,
            executables=tuple(sorted(self.executables)), frame_purls=p.purls)

    def total(self) -> PathTotal:
        p = self.path
        return PathTotal(p.symbols, p.function_signatures, p.node_hashes, p.libraries, p.purl,
                         p.runtime_type, p.path_hash, p.callstack_hash, self.count,
                         self.first_us or 0, self.last_us, len(self.windows), p.binary_digests, p.binary_offsets,
                         purls=p.purls, executables=tuple(sorted(self.executables)))


class _CoverageBuilder:
    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.windows: set[tuple[str, int]] = set()
        self.first: int | None = None
        self.last: int | None = None
        self.total = self.dropped = self.late = 0
        self.probed: set[str] = set()

    def add(self, summary: Summary) -> None:
        self.containers.add(summary.container_id)
        self.windows.add((summary.container_id, summary.started_at_us))
        self.first = summary.started_at_us if self.first is None else min(self.first, summary.started_at_us)
        self.last = summary.stopped_at_us if self.last is None else max(self.last, summary.stopped_at_us)
        self.total += summary.total_events
        self.dropped += summary.dropped_events
        self.late += summary.late_events
        self.probed.update(p.symbols[-1] for p in summary.call_paths if p.symbols)

    def build(self) -> Coverage:
        return Coverage(tuple(sorted(self.containers)), len(self.windows), self.first, self.last,
                        self.total, self.dropped, self.late, tuple(sorted(self.probed)))


def latest_per_key(records: Iterable[tuple[bytes | None, object]]) -> list[object]:
    """The last value of each key, in order of each key's last write, as compaction keeps it."""
    latest: dict[bytes | None, object] = {}
    for key, value in records:
        latest.pop(key, None)
        latest[key] = value
    return list(latest.values())


def paths_of(summaries: Sequence[Summary]) -> list[CallPath]:
    return [path for summary in summaries for path in summary.call_paths]
