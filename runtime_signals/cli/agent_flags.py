"""The command-line layer of the agent's settings: one flag per setting of agent/config.py
that operators change per run (sizes, overhead control, statistics, delivery).

The flags only override: each defaults to None, so whatever the command line does not
say comes from the TOML file, then SIGNALS_AGENT__* variables, then the schema's
default (runtime_signals/config.load_config). A flag's help is its setting's doc, so the
two cannot drift; validation is the schema's, and names the setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from runtime_signals.agent.config import AgentSettings

# (argparse group, flag, setting of AgentSettings). A flag spelled --no-X turns the
# boolean setting off; there is no --X, since X is on by default.
FLAGS: tuple[tuple[str, str, str], ...] = (
    ("probes", "--ringbuf-pages", "ringbuf_pages"),
    ("probes", "--watermark-interval-ms", "watermark_interval_ms"),
    ("probes", "--target-rescan-interval-ms", "target_rescan_interval_ms"),
    ("probes", "--no-hold-processes", "hold_processes"),
    ("overhead control", "--no-dedup", "dedup"),
    ("overhead control", "--dedup-entries", "dedup_entries"),
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
)

_DEST_PREFIX = "agent__"  # argparse dest of each flag: agent__<setting>


def _field_type(name: str) -> type:
    kind = typing.get_type_hints(AgentSettings)[name]
    inner = [a for a in typing.get_args(kind) if a is not type(None)]
    return inner[0] if inner else kind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fields = {f.name: f for f in dataclasses.fields(AgentSettings)}
    groups: dict[str, Any] = {}
    for group_name, flag, name in FLAGS:
        group = groups.get(group_name)
        if group is None:
            group = groups[group_name] = parser.add_argument_group(group_name)
        field = fields[name]
        doc = str(field.metadata.get("doc", "")).replace("%", "%%")
        default = "unset" if field.default is None else field.default
        dest = _DEST_PREFIX + name
        if flag.startswith("--no-"):
            group.add_argument(flag, dest=dest, action="store_false", default=None,
                               help=f"agent.{name} = false: {doc} (default: on)")
            continue
        group.add_argument(flag, dest=dest, type=_field_type(name), default=None, metavar=name.upper(),
                           help=f"{doc} (agent.{name}; default: {default})")


def flag_names() -> dict[str, str]:
    """{"agent.<setting>": "--flag"}, for messages that name the flag that set a value."""
    return {f"agent.{name}": flag for _, flag, name in FLAGS}


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """{"agent.<setting>": value} for each flag of FLAGS; None where the flag was not given."""
    return {f"agent.{name}": getattr(args, _DEST_PREFIX + name) for _, _, name in FLAGS}
