"""SignalsClient: the summary and latest-state topics, read and asked about.

Reading is done by runtime_signals.consumer.kafka (bounded reads, no consumer group); deciding
is done by runtime_signals.consumer.query (pure functions). This module only joins the two and decodes records.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from runtime_signals.consumer import query
from runtime_signals.consumer.errors import ConsumerError, TopicNotFoundError
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.consumer.models import ContainerState, Executable, PathTotal, Reachability, Summary, Target
from runtime_signals.consumer.watched import Watch, watched
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError
from runtime_signals.schemas.topics import TopicNames

log = logging.getLogger(__name__)

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
CONTAINER_STATE = "io.runtimesignals.ContainerState"
STATISTICS = "io.runtimesignals.SignalStatistics"
MODULE_MAP = "io.runtimesignals.ModuleMap"
# A summary is written when its window closes, so a window overlapping [since, ...) was
# written at or after `since` by the processor's clock. This much earlier is read as well,
# for clocks that disagree between the agents (event time) and the processor (record time).
CLOCK_SLACK_MS = 10 * 60 * 1000


class SignalsClient:
    """Reads one pipeline's output topics on one cluster.

    >>> client = SignalsClient("kafka:9092")
    >>> answer = client.is_reached(Target(function="parse_image_header"), container="host:3d12")
    >>> answer.reached, answer.observation_count, [e.symbols for e in answer.paths]
    """

    def __init__(self, bootstrap: str, topics: TopicNames | None = None, *,
                 registry: codec.SchemaRegistry | None = None,
                 kafka_config: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> None:
        self.topics = topics or TopicNames()
        self.reader = TopicReader(bootstrap, kafka_config, timeout_s)
        self.registry = registry or codec.SchemaRegistry.default()
        # Records that did not decode, by reason: counted and skipped, never fatal.
        self.skipped: Counter[str] = Counter()

    def summaries(self, container: str | None = None, *, since_us: int | None = None,
                  until_us: int | None = None) -> Iterator[Summary]:
        """Summaries on the topic now (the latest of each container window, as compaction
        keeps them), of one container or all, whose windows overlap [since_us, until_us),
        in (window start, container) order."""
        yield from query.select(self._latest_summaries(container, since_us, until_us), container=container,
                                since_us=since_us, until_us=until_us)

    def latest_state(self, container: str) -> ContainerState | None:
        """Everything observed for ``container``, or None if nothing was: its record on the
        latest-state topic (one read of that compacted topic), else, for a pipeline whose
        processor writes none, folded here from the summaries."""
        state = self._state_from_topic(container)
        if state is not None:
            return state
        return query.container_state(container, self._latest_summaries(container))

    def is_reached(self, target: Target, *, container: str | None = None, since_us: int | None = None,
                   until_us: int | None = None) -> Reachability:
        """Whether ``target`` was seen on a call path, in one container or any, within the
        time range, with the evidence and what the answer covers."""
        query.Matcher(target)  # a malformed question fails before any read
        return query.reachability(target, self.summaries(container, since_us=since_us, until_us=until_us))

    def watched(self, functions: Sequence[str], containers: Sequence[str], start_us: int,
                end_us: int) -> list[Watch] | None:
        """How long the probes on each of ``functions`` of the agents that observed
        ``containers`` (all agents when empty) were watched within [start_us, end_us), from the
        statistics topic (consumer/watched.py), both topics read once; None when the
        statistics topic cannot be read."""
        agents = self._agents_of(containers) if containers else None
        topic = self.topics.statistics
        try:
            ranges = self.reader.ranges_since(topic, max(0, start_us // 1000 - CLOCK_SLACK_MS))
        except ConsumerError as exc:
            log.warning("watched time of %s unknown: %s", ", ".join(functions), exc)
            return None
        reports = []
        for record in self.reader.read(topic, ranges):
            if record.value is not None:
                decoded = self._decode(record.value, STATISTICS, f"{topic}[{record.partition}]@{record.offset}")
                if decoded is not None:
                    reports.append(decoded)
        return [watched(function, reports, start_us, end_us, agents) for function in functions]

    def _agents_of(self, containers: Sequence[str]) -> set[str]:
        """The agents whose module maps place a process in one of the containers."""
        wanted = set(containers)
        topic = self.topics.modules
        try:
            ranges = self.reader.whole_topic(topic)
        except ConsumerError:
            return set()
        agents = set()
        for record in self.reader.read(topic, ranges):
            if record.value is None:
                continue
            decoded = self._decode(record.value, MODULE_MAP, f"{topic}[{record.partition}]@{record.offset}")
            if decoded is not None and decoded["container_id"] in wanted:
                agents.add(decoded["agent_id"])
        return agents

    def _latest_summaries(self, container: str | None = None, since_us: int | None = None,
                          until_us: int | None = None) -> list[Summary]:
        """The latest summary per key, read as a stream and kept only when it is of the
        container and overlaps the time range: memory follows the answer, not the topic.
        With since_us, the read starts at the first record that recent (offsets by time)."""
        topic = self.topics.summaries
        if since_us is None:
            ranges = self.reader.whole_topic(topic)
        else:
            ranges = self.reader.ranges_since(topic, max(0, since_us // 1000 - CLOCK_SLACK_MS))
        # Summary keys start with the container id and '|': other containers' records are
        # skipped before they are decoded. container may be a prefix of an id (query.select
        # then resolves it to the one id, or refuses an ambiguous prefix).
        prefix = None if container is None else container.encode()
        latest: dict[bytes | None, Summary] = {}
        for record in self.reader.read(topic, ranges):
            if prefix is not None and record.key is not None and not record.key.startswith(prefix):
                continue
            if record.value is None:  # a tombstone deletes the window
                latest.pop(record.key, None)
                continue
            decoded = self._decode(record.value, SUMMARY, f"{topic}[{record.partition}]@{record.offset}")
            if decoded is None:
                continue
            summary = Summary.from_record(decoded)
            if (container is None or summary.container_id.startswith(container)) and \
                    query.in_time(summary, since_us, until_us):
                latest[record.key] = summary
            else:
                latest.pop(record.key, None)  # a later write of the key moved out of the question
        return list(latest.values())

    def _state_from_topic(self, container: str) -> ContainerState | None:
        topic = self.topics.latest
        wanted = container.encode()
        found: dict[str, Any] | None = None
        try:
            ranges = self.reader.whole_topic(topic)
        except TopicNotFoundError:
            return None
        for record in self.reader.read(topic, ranges):
            if record.key != wanted:
                continue
            if record.value is None:
                found = None
                continue
            found = self._decode(record.value, CONTAINER_STATE, f"{topic}[{record.partition}]@{record.offset}")
        return None if found is None else state_from_record(found)

    def _decode(self, value: bytes, schema: str, where: str) -> dict[str, Any] | None:
        try:
            return codec.decode(value, self.registry, schema).record
        except SchemaError as exc:
            self.skipped[type(exc).__name__] += 1
            log.warning("%s: record skipped: %s", where, exc)
            return None


def state_from_record(record: Mapping[str, Any]) -> ContainerState:
    """A decoded ContainerState record (schemas/ContainerState.avsc) as the typed view."""
    paths = []
    for path in record["call_paths"]:
        symbols = tuple(path["symbols"])
        paths.append(PathTotal(
            symbols=symbols,
            function_signatures=tuple(path["function_signatures"]) or symbols,
            node_hashes=tuple(path["node_hashes"]) or (None,) * len(symbols),
            libraries=tuple(path["libraries"]) or (None,) * len(symbols),
            purl=path.get("purl"),
            runtime_type=path["runtime_type"],
            path_hash=path["path_hash"],
            callstack_hash=path["callstack_hash"],
            observation_count=path["observation_count"],
            first_observed_at_us=path["first_observed_at_us"],
            last_observed_at_us=path["last_observed_at_us"],
            windows=path["windows"],
            binary_digests=tuple(path.get("binary_digests") or ()),
            binary_offsets=tuple(path.get("binary_offsets") or ()),
            purls=tuple(path.get("purls") or ()),
            executables=tuple(Executable.from_record(e) for e in path.get("executables") or ()),
        ))
    return ContainerState(
        container_id=record["container_id"],
        first_window_start_us=record["first_window_start_us"],
        last_window_start_us=record["last_window_start_us"],
        windows=record["windows"],
        total_events=record["total_events"],
        late_events=record["late_events"],
        first_observed_at_us=record["first_observed_at_us"],
        last_observed_at_us=record["last_observed_at_us"],
        paths=tuple(paths),
        raw_records=record["raw_records"],
        detected_runtimes=tuple(record["detected_runtimes"]),
    )
