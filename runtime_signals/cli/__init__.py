"""The `signals` command: one entry point for every part of runtime-signals."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from runtime_signals.cli import agent as agent_cli
from runtime_signals.cli import processor as processor_cli

from runtime_signals.cli import answers as cli_answers, capture as cli_capture
from runtime_signals import config as config_cli

DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")

DESCRIPTION = """\
runtime-signals: which functions really run inside your containers.

  agent       observe probed functions with eBPF uprobes and publish raw call events
  processor   turn raw call events into per-container call-path summaries (faust-streaming
              worker; checkpoints of its own keep it exact across kill -9 and rebalances)
  summaries   print the summaries on the summary topic
  reachable   was a function called, by which call paths? (with the evidence)
  export      OpenVEX or CycloneDX evidence for a list of vulnerable functions
  capture     a topic's records (offsets or time range) into an Avro container file
  replay      a capture file, or a topic's range, back into a topic
  kafka       run a local Apache Kafka broker for development (up, down, status, topics)
  demo        the whole pipeline on this machine against a bundled workload
  config      check the configuration (file + SIGNALS_* variables), secrets hidden
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
        "summaries", help="print summaries", formatter_class=formatter, epilog=cli_answers.SUMMARIES_EPILOG,
        description="Read the summary topic from the beginning and print the latest summary of each window.",
    )
    cli_answers.add_summaries_arguments(summaries, DEFAULT_BOOTSTRAP)
    reachable = commands.add_parser(
        "reachable", help="was a function reached?", formatter_class=formatter, epilog=cli_answers.REACHABLE_EPILOG,
        description="Answer whether a function, node hash or package was seen on a call path, with the evidence.",
    )
    cli_answers.add_reachable_arguments(reachable, DEFAULT_BOOTSTRAP)
    export = commands.add_parser(
        "export", help="OpenVEX / CycloneDX evidence", formatter_class=formatter, epilog=cli_answers.EXPORT_EPILOG,
        description="Emit OpenVEX or CycloneDX for a list of vulnerable functions, with observed paths as evidence.",
    )
    cli_answers.add_export_arguments(export, DEFAULT_BOOTSTRAP)
    capture = commands.add_parser(
        "capture", help="topic -> Avro container file", formatter_class=formatter, epilog=cli_capture.CAPTURE_EPILOG,
        description="Copy a topic's records, every byte kept, into an Avro Object Container File.",
    )
    cli_capture.add_capture_arguments(capture, DEFAULT_BOOTSTRAP)
    replay = commands.add_parser(
        "replay", help="capture file or topic -> topic", formatter_class=formatter, epilog=cli_capture.REPLAY_EPILOG,
        description="Produce a capture file's records, or a topic's range, into a topic: keys, timestamps, headers kept.",
    )
    cli_capture.add_replay_arguments(replay, DEFAULT_BOOTSTRAP)

    kafka = commands.add_parser(
        "kafka", help="local Kafka broker for development", formatter_class=formatter,
        description="Provision Apache Kafka from Maven Central into a cache outside the repo and run it "
                    "in KRaft mode on loopback.",
        epilog="examples:\n  signals kafka up\n  signals kafka topics --partitions 3\n  signals kafka down",
    )
    kafka.add_argument("action", choices=["up", "down", "status", "topics"])
    kafka.add_argument("--topic-prefix", default="", help="with topics: prefix of the topic names")
    kafka.add_argument("--partitions", type=int, default=3, help="with topics: partitions (default: %(default)s)")
    kafka.add_argument("--bootstrap", default=None,
                       help="with topics: the cluster to create them on (default: $KAFKA_BOOTSTRAP_SERVERS, "
                            "else the local broker)")
    kafka.add_argument("--output-retention-ms", type=int, default=None,
                       help="with topics: retention of the summaries, paths and latest-state topics "
                            "(default: kafka.output_retention_ms, 30 days)")
    kafka.add_argument("--replication-factor", type=int, default=1,
                       help="with topics: replicas of each topic (default: %(default)s; 3 on a production cluster)")
    kafka.add_argument("--config", metavar="FILE",
                       help="with topics: configuration whose [kafka] settings (address, TLS, SASL) reach the "
                            "cluster (default: $SIGNALS_CONFIG)")

    demo = commands.add_parser(
        "demo", help="run the pipeline against the bundled workload", formatter_class=formatter,
        description="Start a local broker, the processor and the agent; run the bundled workload (runtime_signals/devtools/data/workload.c); "
                    "print the summary it produced.",
    )
    demo.add_argument("--uploads", type=int, default=7, help="calls through handle_upload (default: %(default)s)")
    demo.add_argument("--previews", type=int, default=5, help="calls through handle_preview (default: %(default)s)")
    config = commands.add_parser("config", help="check or document the configuration", formatter_class=formatter,
                                 epilog=config_cli.EPILOG, description="The settings of every part: file + SIGNALS_*.")
    config_cli.add_arguments(config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from runtime_signals.agent.errors import AgentError
    from runtime_signals.processor.errors import ProcessorError
    from runtime_signals.consumer.errors import ConsumerError
    from runtime_signals.schemas.errors import SchemaError

    from runtime_signals.capture.writer import CaptureError
    from runtime_signals.evidence.export import ExportError
    from runtime_signals.capture.replay import ReplayError
    from runtime_signals.config.engine import SettingsError

    try:
        if args.command == "agent":
            return agent_cli.run(args)
        if args.command == "processor":
            return processor_cli.run(args)
        if args.command == "summaries":
            return cli_answers.run_summaries(args)
        if args.command == "reachable":
            return cli_answers.run_reachable(args)
        if args.command == "export":
            return cli_answers.run_export(args)
        if args.command == "capture":
            return cli_capture.run_capture(args)
        if args.command == "replay":
            return cli_capture.run_replay(args)
        if args.command == "kafka":
            return _kafka(args)
        if args.command == "config":
            return config_cli.run(args)
        if args.command == "demo":
            from runtime_signals.devtools.demo import run_demo

            return run_demo(args.uploads, args.previews)
    except (AgentError, ProcessorError, SchemaError, LookupError, ConsumerError, CaptureError, ReplayError,
            ExportError, SettingsError) as exc:
        print(f"signals {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


def _kafka(args: argparse.Namespace) -> int:
    from runtime_signals.devtools import localkafka

    config = localkafka.LocalKafkaConfig.from_env()
    if args.action == "up":
        print(localkafka.up(config))
    elif args.action == "down":
        localkafka.down(config)
    elif args.action == "status":
        print(localkafka.status(config))
    else:
        return _create_topics(args, config.bootstrap)
    return 0


def _create_topics(args: argparse.Namespace, local_bootstrap: str) -> int:
    """`signals kafka topics`: on the cluster the configuration names (TLS and SASL
    included), else on the local broker."""
    from runtime_signals.schemas.topics import TopicNames, topic_settings

    from runtime_signals.devtools import localkafka
    from runtime_signals.config import CONFIG_ENV, load_config
    from runtime_signals.kafka.security import KafkaSecurityError, check_access

    configured = args.config or any(os.environ.get(name) for name in (
        CONFIG_ENV, "KAFKA_BOOTSTRAP_SERVERS", "SIGNALS_KAFKA__BOOTSTRAP_SERVERS"))
    bootstrap = args.bootstrap or (None if configured else local_bootstrap)
    kafka_settings = load_config(args.config, flags={"kafka.bootstrap_servers": bootstrap,
                                                     "kafka.output_retention_ms": args.output_retention_ms}).kafka
    client = kafka_settings.librdkafka_config()
    names = TopicNames().with_prefix(args.topic_prefix)
    try:
        # A refused password or certificate is reported now, not as a create timeout.
        check_access(client)
        localkafka.ensure_topics(client["bootstrap.servers"], [
            localkafka.TopicSpec(t.name, t.partitions, t.config, args.replication_factor)
            for t in topic_settings(names, args.partitions, kafka_settings.output_retention_ms)
        ], client_config=client)
    except (KafkaSecurityError, localkafka.LocalKafkaError) as exc:
        print(f"signals kafka topics: {exc}", file=sys.stderr)
        return 1
    print(f"topics ready on {client['bootstrap.servers']}: {', '.join(t.name for t in topic_settings(names))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
