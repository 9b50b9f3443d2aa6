"""Probe plans from Kafka: attached and detached while the agent runs, answered with a status.

`signals plan --publish` writes ProbePlan records (schemas/ProbePlan.avsc) to the compacted
plans topic, key = plan id, a tombstone to withdraw one. Every agent reads that topic from its
start on a thread of its own (partitions assigned, nothing committed: every agent sees every
plan), turns each plan's targets into agent targets named ``plan.<id>.targets[<i>]``, hands
them to the TargetManager (agent/targets.py) and scans at once; a new version of a plan
replaces the old one, a tombstone removes it and detaches what only it used.

After each change, and whenever a rescan attached more, the agent publishes a PlanStatus
(key ``<plan id>/<host>``) to the plan status topic: the probes in place, what is not on this
node, the errors. A plan that does not decode or does not make sense (an unknown
format_version, a key that is not its plan_id, an empty binary) is refused: its status says
why by name, nothing of it is attached, and the agent goes on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from runtime_signals.agent.targets import TargetManager
from runtime_signals.config.schema import TargetSettings
from runtime_signals.schemas import codec
from runtime_signals.schemas.errors import SchemaError
from runtime_signals.schemas.topics import TopicNames

log = logging.getLogger(__name__)

PROBE_PLAN = "io.runtimesignals.ProbePlan"
PLAN_STATUS = "io.runtimesignals.PlanStatus"
FORMAT_VERSIONS = frozenset({1})
LANGUAGES = frozenset({"go", "rust", "c"})
_PLAN_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_GLOB = re.compile(r"([*?\[])")
# Plans are few (one per advisory batch), each bounded by the record size the topic accepts.
MAX_PLANS = 1000
_POLL_S = 0.5


class StatusSink(Protocol):
    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None, calls: int = 0) -> None: ...


def exact(symbol: str) -> str:
    """A symbol name as a TargetSettings pattern matching only itself: Go's ``pkg.(*T).M``
    holds a ``*`` that the target scanner would read as a glob."""
    return _GLOB.sub(r"[\1]", symbol)


def plan_problems(plan_id: str, record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What makes a decoded ProbePlan unusable, by field name; empty when it is usable."""
    where = f"plan.{plan_id}"
    problems = []
    if record.get("format_version") not in FORMAT_VERSIONS:
        problems.append((f"{where}.format_version", f"{record.get('format_version')!r} is not a version this agent "
                         f"reads ({', '.join(map(str, sorted(FORMAT_VERSIONS)))}); upgrade the agent"))
    if record.get("plan_id") != plan_id:
        problems.append((f"{where}.plan_id", f"{record.get('plan_id')!r} differs from the record key {plan_id!r}"))
    if not _PLAN_ID.fullmatch(plan_id):
        problems.append((where, "a plan id is 1 to 200 of A-Z a-z 0-9 . _ -"))
    for index, target in enumerate(record.get("targets") or []):
        name = f"{where}.targets[{index}]"
        if target["language"] not in LANGUAGES:
            problems.append((f"{name}.language", f"{target['language']!r}: this agent probes {sorted(LANGUAGES)}"))
        settings = TargetSettings(binary=target["binary"], symbols=list(target["symbols"]),
                                  containers=list(target.get("containers") or []))
        problems += [(f"{name}.{field_name}", reason) for field_name, reason in settings.problems()]
    return problems


@dataclass
class _Plan:
    offset: int
    record: dict[str, Any] | None          # None: refused
    indices: list[int] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    active_since_us: int | None = None
    last_status: tuple[Any, ...] | None = None


class PlanFollower:
    """Applies the plans topic to a TargetManager and publishes what each plan attached."""

    def __init__(self, manager: TargetManager, sink: StatusSink, topics: TopicNames, *,
                 consumer_config: Mapping[str, Any], host: str, agent_id: str,
                 registry: codec.SchemaRegistry | None = None, status_interval_ms: int = 5000) -> None:
        self._manager = manager
        self._sink = sink
        self._topics = topics
        self._consumer_config = dict(consumer_config)
        self._host = host
        self._agent_id = agent_id
        self._registry = registry or codec.SchemaRegistry.default()
        self._status_interval_s = status_interval_ms / 1000
        self._plans: dict[str, _Plan] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {"plans_active": 0, "plans_refused": 0, "plan_records": 0,
                                       "statuses_published": 0}

    # --- one record of the plans topic -------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """Take one plans-topic record into effect (a tombstone removes its plan)."""
        self.counts["plan_records"] += 1
        plan_id = (key or b"").decode("utf-8", "replace")
        with self._lock:
            old = self._plans.pop(plan_id, None)
            if value is None:
                if old is not None:
                    if old.indices:
                        self._manager.remove_targets(old.indices)
                    self._publish(plan_id, _Plan(offset, None), "REMOVED")
                    log.info("plan %s removed (offset %d): its probes are detached", plan_id, offset)
                self._update_counts()
                return
            if len(self._plans) >= MAX_PLANS:
                plan = _Plan(offset, None, errors=[(f"plan.{plan_id}", f"this agent holds {MAX_PLANS} plans "
                                                    "already (agent/plans.py MAX_PLANS); remove some")])
            else:
                plan = self._take(plan_id, value, offset)
            self._plans[plan_id] = plan
            self._update_counts()
        # A new version of a plan is taken on before the old one goes: the functions both name
        # keep their uprobe (no call missed in between, no probe slot spent again).
        if plan.record is not None:
            self._manager.scan()
        if old is not None and old.indices:
            self._manager.remove_targets(old.indices)
        self.publish_status(plan_id, force=True)

    def _take(self, plan_id: str, value: bytes, offset: int) -> _Plan:
        try:
            record = codec.decode(value, self._registry, PROBE_PLAN).record
        except SchemaError as exc:
            reason = f"the record at {self._topics.plans} offset {offset} is not a ProbePlan: {exc}"
            log.error("plan %s refused: %s", plan_id, reason)
            return _Plan(offset, None, errors=[(f"plan.{plan_id}", reason)])
        problems = plan_problems(plan_id, record)
        if problems:
            for name, reason in problems:
                log.error("plan %s refused: %s: %s", plan_id, name, reason)
            return _Plan(offset, None, errors=problems)
        targets = [TargetSettings(binary=t["binary"], symbols=[exact(s) for s in t["symbols"]],
                                  containers=list(t.get("containers") or []))
                   for t in record["targets"]]
        names = [f"plan.{plan_id}.targets[{i}]" for i in range(len(targets))]
        indices = self._manager.add_targets(targets, names)
        log.info("plan %s (offset %d): %d target(s) taken on", plan_id, offset, len(targets))
        return _Plan(offset, record, indices, active_since_us=time.time_ns() // 1000)

    def _update_counts(self) -> None:
        self.counts["plans_active"] = sum(1 for p in self._plans.values() if p.record is not None)
        self.counts["plans_refused"] = sum(1 for p in self._plans.values() if p.record is None)

    # --- statuses ----------------------------------------------------------------------
    def publish_status(self, plan_id: str, *, force: bool = False) -> bool:
        """Publish the plan's status if it changed since the last one (or force); True if published."""
        with self._lock:
            plan = self._plans.get(plan_id)
            if plan is None:
                return False
            return self._publish(plan_id, plan, "ACTIVE" if plan.record is not None else "REFUSED", force=force)

    def publish_all(self) -> int:
        with self._lock:
            plan_ids = list(self._plans)
        return sum(self.publish_status(plan_id) for plan_id in plan_ids)

    def _publish(self, plan_id: str, plan: _Plan, state: str, force: bool = True) -> bool:
        attached: list[dict[str, str]] = []
        not_present: list[dict[str, str]] = []
        errors = [{"name": n, "reason": r} for n, r in plan.errors]
        targets = plan.record["targets"] if plan.record is not None else []
        for index, target in zip(plan.indices, targets, strict=True):
            attached += [{"binary": target["binary"], "file": file, "symbol": symbol}
                         for file, symbol in self._manager.attached_for(index)]
            for name, reason in sorted(self._manager.problems_for(index).items()):
                # An attach the kernel refused is an error; a file or symbol not here is not.
                (errors if "attaching in" in reason else not_present).append({"name": name, "reason": reason})
        attached.sort(key=lambda p: (p["binary"], p["file"], p["symbol"]))
        summary = (state, plan.offset, tuple(tuple(p.values()) for p in attached),
                   tuple(tuple(p.values()) for p in not_present), tuple(tuple(e.values()) for e in errors))
        if not force and summary == plan.last_status:
            return False
        plan.last_status = summary
        value = codec.encode({
            "plan_id": plan_id, "host": self._host, "agent_id": self._agent_id, "state": state,
            "plan_offset": plan.offset, "active_since_us": plan.active_since_us,
            "observed_at_us": time.time_ns() // 1000, "attached": attached,
            "not_present": not_present, "errors": errors}, PLAN_STATUS, self._registry)
        self._sink.produce(self._topics.plan_status, f"{plan_id}/{self._host}".encode(), value)
        self.counts["statuses_published"] += 1
        log.info("plan %s: %s, %d probe(s) attached, %d not present, %d error(s)", plan_id, state, len(attached),
                 len(not_present), len(errors))
        return True

    # --- the thread ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> threading.Thread:
        """Follow the plans topic until stop is set, on a daemon thread."""
        thread = threading.Thread(target=self._loop, args=(stop,), name="plan-follower", daemon=True)
        thread.start()
        return thread

    def _loop(self, stop: threading.Event) -> None:
        config = {**self._consumer_config, "group.id": f"runtime-signals-agent-plans-{self._agent_id}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        consumer = Consumer(config)
        try:
            assigned = False
            next_status = time.monotonic() + self._status_interval_s
            while not stop.is_set():
                if not assigned:
                    assigned = self._assign(consumer)
                    if not assigned:
                        stop.wait(2.0)
                        continue
                message = consumer.poll(_POLL_S)
                error = message.error() if message is not None else None
                if message is not None and error is None:
                    try:
                        self.apply(message.key(), message.value(), message.offset() or 0)
                    except Exception:  # a plan must never stop the agent
                        log.exception("plan record at %s offset %s could not be applied", self._topics.plans,
                                      message.offset())
                elif error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("plans topic %s: %s", self._topics.plans, error.str())
                if time.monotonic() >= next_status:
                    # Rescans attach plan targets as processes map them: say so.
                    self.publish_all()
                    next_status = time.monotonic() + self._status_interval_s
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> bool:
        topic = self._topics.plans
        try:
            metadata = consumer.list_topics(topic, timeout=5.0)
        except Exception as exc:  # a broker away: retried, the agent runs on
            log.warning("plans topic %s: no metadata yet (%s); retrying", topic, exc)
            return False
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            log.warning("plans topic %s: %s; retrying (create it with `signals kafka topics`)", topic,
                        described.error.str() if described is not None and described.error else "not found")
            return False
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(described.partitions)])
        log.info("following plans on %s (%d partition(s))", topic, len(described.partitions))
        return True
