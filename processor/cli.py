"""`signals processor`: arguments and start-up of one processor worker."""

from __future__ import annotations

import argparse

from schemas.topics import TopicNames

from .windows import WindowSpec

EPILOG = """\
examples:
  signals processor --bootstrap kafka:9092
  signals processor --window-ms 60000 --allowed-lateness-ms 10000   # one-minute windows

Run more workers with the same --app-id to share the raw topic's partitions.
Windows close on event time: agents' watermarks on every partition, never the wall clock.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    parser.add_argument("--bootstrap", default=default_bootstrap,
                        help="Kafka bootstrap servers (default: %(default)s; env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-prefix", default="", help="prefix of every topic name")
    parser.add_argument("--window-ms", type=int, default=60_000,
                        help="tumbling window length in event time (default: %(default)s)")
    parser.add_argument("--allowed-lateness-ms", type=int, default=5_000,
                        help="how long after its end a window still takes calls (default: %(default)s)")
    parser.add_argument("--app-id", default="runtime-signals-processor",
                        help="consumer group and faust app id (default: %(default)s)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    from .app import ProcessorSettings, run_worker

    settings = ProcessorSettings(
        bootstrap_servers=args.bootstrap,
        window=WindowSpec(size_ms=args.window_ms, allowed_lateness_ms=args.allowed_lateness_ms),
        topics=TopicNames().with_prefix(args.topic_prefix),
        app_id=args.app_id,
    )
    run_worker(settings, loglevel=args.loglevel)
    return 0
