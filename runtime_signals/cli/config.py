"""`signals config check|reference`: the effective configuration, or the settings table."""

from __future__ import annotations

import argparse
import sys

from runtime_signals.config import CONFIG_ENV, SettingsError, load_config, reference_table, render

EPILOG = """\
examples:
  signals config check --config /etc/runtime-signals/signals.toml
  SIGNALS_KAFKA__SASL_PASSWORD=... signals config check     # secrets print as ***
  signals config reference                                  # the settings table (Markdown)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check", "reference"],
                        help="check: validate and print the effective configuration; reference: the settings table")
    parser.add_argument("--config", help=f"TOML configuration file (default: ${CONFIG_ENV})")


def run(args: argparse.Namespace) -> int:
    """`signals config check|reference`; exit 0 when valid, 1 with the problems when not."""
    if args.action == "reference":
        print(reference_table(), end="")
        return 0
    try:
        config = load_config(args.config)
    except SettingsError as exc:
        print(f"signals config check: {exc}", file=sys.stderr)
        return 1
    print(render(config), end="")
    return 0
