"""`signals processor`: arguments and start-up of one processor worker."""

from __future__ import annotations

import argparse
import logging
import sys

from runtime_signals.cli import flags
from runtime_signals.config import load_config

EPILOG = """\
examples:
  signals processor --bootstrap kafka:9092 --metrics-port 9464
  signals processor --window-ms 60000 --allowed-lateness-ms 10000   # one-minute windows
  signals processor --app-id replay-1 --output-topic-prefix replay-1.   # reprocess into other topics

Run more workers with the same --app-id to share the raw topic's partitions; give each a
stable --group-instance-id (a pod name) so that a restarted worker takes its partitions
back at once. Windows close on event time: agents' watermarks on every partition, never
the wall clock. Every call is counted exactly once across kill -9 and rebalances: see
docs/processor.md. Every flag is also a setting (file, SIGNALS_PROCESSOR__*): `signals
config reference`.
"""

_FLAGS = flags.KAFKA_FLAGS + flags.RETENTION_FLAGS + flags.PROCESSOR_FLAGS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Flags default to None so that the config file and SIGNALS_* variables decide
    # whatever the command line does not say.
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $SIGNALS_CONFIG)")
    flags.add_arguments(parser, _FLAGS)


def run(args: argparse.Namespace) -> int:
    from runtime_signals.processor.app import run_worker
    from runtime_signals.processor.errors import ProcessorError
    from runtime_signals.processor.settings import ProcessorSettings

    config = load_config(args.config, flags=flags.flag_settings(args, _FLAGS),  # raises SettingsError
                         flag_names=flags.flag_names(_FLAGS))
    logging.getLogger().setLevel(config.processor.loglevel.upper())
    try:
        run_worker(ProcessorSettings.from_config(config))
    except ProcessorError as exc:
        print(f"signals processor: {exc}", file=sys.stderr)
        return 1
    return 0
