"""`signals processor`: arguments and start-up of one processor worker."""

from __future__ import annotations

import argparse
import logging
import sys

from runtime_signals.schemas.topics import TopicNames

from runtime_signals.processor.errors import ProcessorError
from runtime_signals.processor.windows import WindowSpec

EPILOG = """\
examples:
  signals processor --bootstrap kafka:9092 --metrics-port 9464
  signals processor --window-ms 60000 --allowed-lateness-ms 10000   # one-minute windows
  signals processor --app-id replay-1 --output-topic-prefix replay-1.   # reprocess into other topics

Run more workers with the same --app-id to share the raw topic's partitions; give each a
stable --group-instance-id (a pod name) so that a restarted worker takes its partitions
back at once. Windows close on event time: agents' watermarks on every partition, never
the wall clock. Every call is counted exactly once across kill -9 and rebalances: see
docs/processor.md.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    # Flags marked "(setting: …)" default to the shared configuration (runtime_signals/config.py:
    # --config FILE, then SIGNALS_* variables); given, they win over both.
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $SIGNALS_CONFIG)")
    parser.add_argument("--bootstrap", default=None,
                        help=f"Kafka bootstrap servers (setting: kafka.bootstrap_servers; default {default_bootstrap})")
    parser.add_argument("--topic-prefix", default=None, help="prefix of every topic name (setting: kafka.topic_prefix)")
    parser.add_argument("--output-topic-prefix", default=None,
                        help="prefix of the output topics (summaries, paths, latest, late, dlq) when they "
                             "differ from the inputs' (default: --topic-prefix)")
    parser.add_argument("--window-ms", type=int, default=None,
                        help="tumbling window length in event time (setting: processor.window_ms; default 60000)")
    parser.add_argument("--allowed-lateness-ms", type=int, default=None,
                        help="how long after its end a window still takes calls (setting: "
                             "processor.allowed_lateness_ms; default 5000)")
    parser.add_argument("--agent-idle-ms", type=int, default=30_000,
                        help="event time after which an agent that sends no watermark stops holding "
                             "windows open (default: %(default)s)")
    parser.add_argument("--symbol-wait-ms", type=int, default=10_000,
                        help="wall-clock time a closed window waits for its binaries' symbol tables before "
                             "it goes out with frames unnamed (default: %(default)s)")
    parser.add_argument("--max-pending-windows", type=int, default=10_000,
                        help="closed windows per partition that may wait for symbol tables (default: %(default)s)")
    parser.add_argument("--app-id", default=None,
                        help="consumer group id; also names the checkpoint topic (setting: processor.app_id; "
                             "default runtime-signals-processor)")
    parser.add_argument("--group-instance-id", default=None,
                        help="static group membership id of this worker (a pod name), for fast restarts")
    parser.add_argument("--checkpoint-interval-ms", type=int, default=1_000,
                        help="how often partitions are checkpointed (default: %(default)s)")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000,
                        help="consumer-group session timeout: how soon a dead worker's partitions move "
                             "(default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics on this port (default: off)")
    parser.add_argument("--loglevel", default=None, choices=["debug", "info", "warning", "error"],
                        help="setting: processor.loglevel; default info")


def run(args: argparse.Namespace) -> int:
    from runtime_signals.config import load_config

    from runtime_signals.processor.app import run_worker
    from runtime_signals.processor.settings import ProcessorSettings

    config = load_config(args.config, flags={  # raises SettingsError naming the setting
        "kafka.bootstrap_servers": args.bootstrap, "kafka.topic_prefix": args.topic_prefix,
        "processor.window_ms": args.window_ms, "processor.allowed_lateness_ms": args.allowed_lateness_ms,
        "processor.app_id": args.app_id, "processor.loglevel": args.loglevel,
    })
    args.bootstrap, args.topic_prefix = config.kafka.bootstrap_servers, config.kafka.topic_prefix
    args.window_ms, args.allowed_lateness_ms = config.processor.window_ms, config.processor.allowed_lateness_ms
    args.app_id, args.loglevel = config.processor.app_id, config.processor.loglevel
    logging.getLogger().setLevel(args.loglevel.upper())
    topics = TopicNames().with_prefix(args.topic_prefix)
    outputs = None if args.output_topic_prefix is None else TopicNames().with_prefix(args.output_topic_prefix)
    try:
        settings = ProcessorSettings(
            bootstrap_servers=args.bootstrap,
            window=WindowSpec(size_ms=args.window_ms, allowed_lateness_ms=args.allowed_lateness_ms),
            topics=topics,
            output_topics=outputs,
            app_id=args.app_id,
            group_instance_id=args.group_instance_id,
            agent_idle_ms=args.agent_idle_ms,
            symbol_wait_ms=args.symbol_wait_ms,
            max_pending_windows=args.max_pending_windows,
            latest_retention_ms=config.kafka.output_retention_ms,
            checkpoint_interval_ms=args.checkpoint_interval_ms,
            session_timeout_ms=args.session_timeout_ms,
            metrics_port=args.metrics_port,
            kafka_config=config.kafka.librdkafka_config(),
        )
        run_worker(settings)
    except ProcessorError as exc:
        print(f"signals processor: {exc}", file=sys.stderr)
        return 1
    return 0
