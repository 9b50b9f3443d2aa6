"""The topics of the pipeline, with the settings they are created with.

Both sides import these names; a deployment may prefix them (TopicNames.with_prefix)
to run several pipelines on one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Raw events are kept long enough to reprocess a day's capture after a processor fix.
RAW_RETENTION_MS = 7 * 24 * 3600 * 1000
# Summaries, paths and latest states are compacted (the last write of a key wins) and also
# deleted once older than this: their keys carry the window, so compaction alone keeps
# every window ever emitted and the topics only grow. A container still running writes its
# latest state every window, so only the states of containers gone this long disappear.
# Configurable: kafka.output_retention_ms (`signals kafka topics --output-retention-ms`).
OUTPUT_RETENTION_MS = 30 * 24 * 3600 * 1000
# A summary or latest state carries every path of its container (about 1.4 KB each), so the
# broker's default 1 MiB would refuse a container with more than ~700 distinct paths.
# Producers of those records raise their request size to match (processor/app.py).
LARGE_RECORD_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TopicNames:
    """Names of every topic the pipeline reads or writes."""

    raw: str = "signals.raw.v1"                 # RuntimeCallEvent + AgentWatermark, key = container id
    summaries: str = "signals.summaries.v1"     # RuntimeSignalSummary per container per window
    paths: str = "signals.paths.v1"             # ObservedCallPath per path per window
    statistics: str = "signals.statistics.v1"   # SignalStatistics per agent
    symbols: str = "signals.symbols.v1"         # SymbolTable chunks, key = "<digest>/<chunk>", compacted
    modules: str = "signals.modules.v1"         # ModuleMap per process, compacted
    latest: str = "signals.latest.v1"           # latest state per container, compacted
    late: str = "signals.late.v1"               # raw records that arrived after their window closed
    dlq: str = "signals.dlq.v1"                 # undecodable/invalid raw records, reason in headers
    plans: str = "signals.plans.v1"             # ProbePlan, key = plan id, compacted (tombstone: removed)
    plan_status: str = "signals.plan-status.v1"  # PlanStatus, key = "<plan id>/<host>", compacted

    def roles(self) -> dict[str, str]:
        """Each topic's name -> its role (the field name: raw, symbols, ...), which stays
        the same under any prefix (record signatures cover the role, runtime_signals.kafka.provenance)."""
        return {name: role for role, name in self.__dict__.items()}

    def with_prefix(self, prefix: str) -> TopicNames:
        """Every name prefixed; ``ux.svc`` is read as ``ux.svc.`` (normalize_prefix)."""
        prefix = normalize_prefix(prefix)
        return replace(self, **{name: prefix + value for name, value in self.__dict__.items()})


def normalize_prefix(prefix: str) -> str:
    """A topic prefix as it is used: empty, or ending in ``.``. ``ux.svc`` would otherwise
    name ``ux.svcsignals.raw.v1``, a topic nobody writes; every part normalises the same way,
    so agents, processors and readers always meet on the same names."""
    prefix = prefix.strip()
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


@dataclass(frozen=True)
class TopicSettings:
    """How a topic is created: partitions and broker-side configuration."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_settings(names: TopicNames, partitions: int = 3,
                   output_retention_ms: int = OUTPUT_RETENTION_MS) -> list[TopicSettings]:
    """The creation settings of every topic, for `signals kafka topics` and the tests."""
    if output_retention_ms <= 0:
        raise ValueError(f"output_retention_ms={output_retention_ms}: must be positive (milliseconds)")
    # Summaries are keyed by container + window: compaction keeps the last write of a
    # window, so a re-emitted window replaces rather than adds; delete drops old windows.
    compact = {"cleanup.policy": "compact,delete", "min.compaction.lag.ms": "60000",
               "retention.ms": str(output_retention_ms)}
    return [
        # Log-append time: the broker, not the writer, stamps each raw record, and the
        # processor bounds event times and watermarks by that stamp (docs/processor.md,
        # "What the clock trusts"); a writer-set CreateTime would let a writer move it.
        TopicSettings(names.raw, partitions, {"retention.ms": str(RAW_RETENTION_MS), "compression.type": "producer",
                                              "message.timestamp.type": "LogAppendTime"}),
        TopicSettings(names.summaries, partitions, {**compact, "max.message.bytes": str(LARGE_RECORD_MAX_BYTES)}),
        TopicSettings(names.paths, partitions, dict(compact)),
        TopicSettings(names.statistics, 1, {"retention.ms": str(24 * 3600 * 1000)}),
        # Symbol tables are needed for as long as any raw event may be reprocessed.
        TopicSettings(names.symbols, partitions, {"cleanup.policy": "compact"}),
        # Module maps of exited processes must not pile up forever: compacted, and deleted
        # after the raw events that could refer to them have gone.
        TopicSettings(names.modules, partitions, {"cleanup.policy": "compact,delete",
                                                  "retention.ms": str(RAW_RETENTION_MS)}),
        TopicSettings(names.latest, partitions, {"cleanup.policy": "compact,delete",
                                                 "retention.ms": str(output_retention_ms),
                                                 "max.message.bytes": str(LARGE_RECORD_MAX_BYTES)}),
        TopicSettings(names.late, partitions, {"retention.ms": str(RAW_RETENTION_MS)}),
        TopicSettings(names.dlq, partitions, {"retention.ms": str(RAW_RETENTION_MS)}),
        # Every agent reads every plan: one partition keeps them in publish order, and plans
        # are few. Compacted with no time limit: a plan holds until its tombstone.
        TopicSettings(names.plans, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}),
        # One record per (plan, node), the latest kept: the fleet view is a read of the topic.
        TopicSettings(names.plan_status, partitions, dict(compact)),
    ]
