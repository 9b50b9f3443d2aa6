"""The `signals` command: one entry point for every part of runtime-signals."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from agent import cli as agent_cli
from processor import cli as processor_cli

DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")

DESCRIPTION = """\
runtime-signals: which functions really run inside your containers.

  agent       observe probed functions with eBPF uprobes and publish raw call events
  processor   turn raw call events into per-container call-path summaries (faust worker)
  summaries   print the summaries on the summary topic
  kafka       run a local Apache Kafka broker for development (up, down, status, topics)
  demo        the whole pipeline on this machine against a bundled workload
"""


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="signals", description=DESCRIPTION, formatter_class=formatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = commands.add_parser("agent", help="run the eBPF node agent", epilog=agent_cli.EPILOG,
                                formatter_class=formatter,
                                description="Attach uprobes to functions and publish every call to Kafka.")
    agent_cli.add_arguments(agent, DEFAULT_BOOTSTRAP)

    processor = commands.add_parser("processor", help="run a processor worker", epilog=processor_cli.EPILOG,
                                    formatter_class=formatter,
                                    description="Window, aggregate and summarize raw call events.")
    processor_cli.add_arguments(processor, DEFAULT_BOOTSTRAP)

    summaries = commands.add_parser(
        "summaries", help="print summaries", formatter_class=formatter,
        description="Read the summary topic from the beginning and print the latest summary of each window.",
        epilog="examples:\n  signals summaries\n  signals summaries --container host:abc --json",
    )
    summaries.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    summaries.add_argument("--topic-prefix", default="")
    summaries.add_argument("--container", help="only this container id")
    summaries.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    summaries.add_argument("--timeout-s", type=float, default=10.0, help="how long to read (default: %(default)s)")

    kafka = commands.add_parser(
        "kafka", help="local Kafka broker for development", formatter_class=formatter,
        description="Provision Apache Kafka from Maven Central into a cache outside the repo and run it "
                    "in KRaft mode on loopback.",
        epilog="examples:\n  signals kafka up\n  signals kafka topics --partitions 3\n  signals kafka down",
    )
    kafka.add_argument("action", choices=["up", "down", "status", "topics"])
    kafka.add_argument("--topic-prefix", default="", help="with topics: prefix of the topic names")
    kafka.add_argument("--partitions", type=int, default=3, help="with topics: partitions (default: %(default)s)")

    demo = commands.add_parser(
        "demo", help="run the pipeline against the bundled workload", formatter_class=formatter,
        description="Start a local broker, the processor and the agent; run deploy/demo/workload.c; "
                    "print the summary it produced.",
    )
    demo.add_argument("--uploads", type=int, default=7, help="calls through handle_upload (default: %(default)s)")
    demo.add_argument("--previews", type=int, default=5, help="calls through handle_preview (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from agent.errors import AgentError
    from schemas.errors import SchemaError

    try:
        if args.command == "agent":
            return agent_cli.run(args)
        if args.command == "processor":
            return processor_cli.run(args)
        if args.command == "summaries":
            return _summaries(args)
        if args.command == "kafka":
            return _kafka(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.uploads, args.previews)
    except (AgentError, SchemaError, LookupError) as exc:
        print(f"signals {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


def _summaries(args: argparse.Namespace) -> int:
    from schemas.topics import TopicNames

    from .summaries import format_table, latest_summaries, read_topic, to_json

    topic = TopicNames().with_prefix(args.topic_prefix).summaries
    summaries = latest_summaries(read_topic(args.bootstrap, topic, args.timeout_s))
    if args.container:
        summaries = [s for s in summaries if s["container_id"] == args.container]
    print(to_json(summaries) if args.json else format_table(summaries), end="")
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from schemas.topics import TopicNames, topic_settings

    from . import localkafka

    config = localkafka.LocalKafkaConfig.from_env()
    if args.action == "up":
        print(localkafka.up(config))
    elif args.action == "down":
        localkafka.down(config)
    elif args.action == "status":
        print(localkafka.status(config))
    else:
        names = TopicNames().with_prefix(args.topic_prefix)
        localkafka.ensure_topics(config.bootstrap, [
            localkafka.TopicSpec(t.name, t.partitions, t.config) for t in topic_settings(names, args.partitions)
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
