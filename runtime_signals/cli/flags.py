"""Command-line flags made from the configuration schema: one flag per setting that operators
change per run, for the agent and the processor alike.

Flags only override: each defaults to None, so whatever the command line does not say comes
from the TOML file, then SIGNALS_* variables, then the schema's one default
(runtime_signals.config.load_config). A flag's help is its setting's doc, so the two cannot
drift; validation is the schema's, and names the setting and the flag that set it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime_signals.config.schema import AgentSettings, KafkaSettings, ProcessorSection


@dataclass(frozen=True)
class Flag:
    """--flag for setting <section>.<name>; a flag spelled --no-X turns a boolean setting
    off (there is no --X: X is on by default)."""

    group: str
    flag: str
    section: str
    name: str

    @property
    def setting(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def dest(self) -> str:
        return f"{self.section}__{self.name}"


_SECTIONS: Mapping[str, type] = {"kafka": KafkaSettings, "agent": AgentSettings, "processor": ProcessorSection}

KAFKA_FLAGS: tuple[Flag, ...] = (
    Flag("kafka", "--bootstrap", "kafka", "bootstrap_servers"),
    Flag("kafka", "--topic-prefix", "kafka", "topic_prefix"),
)

# The output topics' retention: the processor forgets containers' latest state after it
# (`signals kafka topics` has the same --output-retention-ms, applied to the topics).
RETENTION_FLAGS: tuple[Flag, ...] = (
    Flag("kafka", "--output-retention-ms", "kafka", "output_retention_ms"),
)

AGENT_FLAGS: tuple[Flag, ...] = tuple(Flag(group, flag, "agent", name) for group, flag, name in (
    ("probes", "--ringbuf-pages", "ringbuf_pages"),
    ("probes", "--watermark-interval-ms", "watermark_interval_ms"),
    ("probes", "--target-rescan-interval-ms", "target_rescan_interval_ms"),
    ("probes", "--no-hold-processes", "hold_processes"),
    ("probes", "--no-plans", "plans"),
    ("overhead control", "--no-dedup", "dedup"),
    ("overhead control", "--dedup-entries", "dedup_entries"),
    ("probes", "--unwind-rows", "unwind_rows"),
    ("overhead control", "--rate-limit", "rate_limit_per_s"),
    ("overhead control", "--rate-burst", "rate_burst"),
    ("overhead control", "--no-budget", "budget"),
    ("overhead control", "--budget-quiet-s", "budget_quiet_s"),
    ("overhead control", "--budget-min-rate", "budget_min_rate_per_s"),
    ("overhead control", "--budget-backoff-s", "budget_backoff_s"),
    ("overhead control", "--budget-max-backoff-s", "budget_max_backoff_s"),
    ("statistics and health", "--statistics-interval-ms", "statistics_interval_ms"),
    ("statistics and health", "--metrics-port", "metrics_port"),
    ("statistics and health", "--metrics-address", "metrics_address"),
    ("delivery", "--spool-dir", "spool_dir"),
    ("delivery", "--spool-max-bytes", "spool_max_bytes"),
    ("delivery", "--producer-queue-max-kbytes", "producer_queue_max_kbytes"),
    ("delivery", "--producer-queue-max-messages", "producer_queue_max_messages"),
    ("delivery", "--shutdown-flush-timeout-ms", "shutdown_flush_timeout_ms"),
))

PROCESSOR_FLAGS: tuple[Flag, ...] = tuple(Flag(group, flag, "processor", name) for group, flag, name in (
    ("windows", "--window-ms", "window_ms"),
    ("windows", "--allowed-lateness-ms", "allowed_lateness_ms"),
    ("windows", "--agent-idle-ms", "agent_idle_ms"),
    ("windows", "--symbol-wait-ms", "symbol_wait_ms"),
    ("windows", "--max-pending-windows", "max_pending_windows"),
    ("windows", "--max-event-ahead-ms", "max_event_ahead_ms"),
    ("windows", "--agent-flush-interval-ms", "agent_flush_interval_ms"),
    ("group", "--app-id", "app_id"),
    ("group", "--group-instance-id", "group_instance_id"),
    ("group", "--output-topic-prefix", "output_topic_prefix"),
    ("group", "--checkpoint-interval-ms", "checkpoint_interval_ms"),
    ("group", "--session-timeout-ms", "session_timeout_ms"),
    ("group", "--inflight-dir", "inflight_dir"),
    ("operations", "--latest-states-in-memory", "latest_states_in_memory"),
    ("operations", "--latest-paths-in-memory", "latest_paths_in_memory"),
    ("operations", "--metrics-port", "metrics_port"),
    ("operations", "--loglevel", "loglevel"),
))


def _field_type(section: type, name: str) -> type:
    kind = typing.get_type_hints(section)[name]
    inner = [a for a in typing.get_args(kind) if a is not type(None)]
    chosen = inner[0] if inner else kind
    assert isinstance(chosen, type), f"{section.__name__}.{name}: a flag needs a plain type"
    return chosen


def add_arguments(parser: argparse.ArgumentParser, flags: tuple[Flag, ...]) -> None:
    """One argparse option per flag, grouped; help from the setting's doc and default."""
    groups: dict[str, Any] = {}
    for flag in flags:
        section = _SECTIONS[flag.section]
        field = {f.name: f for f in dataclasses.fields(section)}[flag.name]
        group = groups.get(flag.group)
        if group is None:
            group = groups[flag.group] = parser.add_argument_group(flag.group)
        doc = str(field.metadata.get("doc", "")).replace("%", "%%")
        default = "unset" if field.default is None else field.default
        if flag.flag.startswith("--no-"):
            group.add_argument(flag.flag, dest=flag.dest, action="store_false", default=None,
                               help=f"{flag.setting} = false: {doc} (default: on)")
            continue
        group.add_argument(flag.flag, dest=flag.dest, type=_field_type(section, flag.name), default=None,
                           metavar=flag.name.upper(), help=f"{doc} ({flag.setting}; default: {default})")


def flag_names(flags: tuple[Flag, ...]) -> dict[str, str]:
    """{"<section>.<setting>": "--flag"}, for messages that name the flag that set a value."""
    return {flag.setting: flag.flag for flag in flags}


def flag_settings(args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict[str, Any]:
    """{"<section>.<setting>": value} for each flag; None where the flag was not given."""
    return {flag.setting: getattr(args, flag.dest) for flag in flags}
