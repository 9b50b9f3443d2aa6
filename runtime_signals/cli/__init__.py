"""The `signals` command: one entry point for every part of runtime-signals."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from runtime_signals.cli import agent as agent_cli
from runtime_signals.cli import answers as cli_answers
from runtime_signals.cli import capture as cli_capture
from runtime_signals.cli import config as config_cli
from runtime_signals.cli import demo as demo_cli
from runtime_signals.cli import inventory as inventory_cli
from runtime_signals.cli import kafka as kafka_cli
from runtime_signals.cli import plan as plan_cli
from runtime_signals.cli import processor as processor_cli
from runtime_signals.cli import report as cli_report
from runtime_signals.cli import watch as cli_watch

DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")

DESCRIPTION = """\
runtime-signals: which functions really run inside your containers.

  agent       observe probed functions with eBPF uprobes and publish raw call events
  processor   turn raw call events into per-container call-path summaries (faust-streaming
              worker; checkpoints of its own keep it exact across kill -9 and rebalances)
  summaries   print the summaries on the summary topic
  reachable   was a function called, by which call paths? (with the evidence)
  watch       calls and paths as they arrive on the raw topic (provisional: before windows close)
  export      OpenVEX / CycloneDX evidence, or a flame graph / folded stacks / speedscope profile
  inventory   which packages (PURL, version) are mapped in which containers and nodes
  plan        advisories -> probe plans every agent attaches live; `plan status`: per node
  report      a static HTML page for a list of advisories, with the evidence documents beside it
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
    agent_cli.add_arguments(agent)

    processor = commands.add_parser("processor", help="run a processor worker", epilog=processor_cli.EPILOG,
                                    formatter_class=formatter,
                                    description="Window, aggregate and summarize raw call events.")
    processor_cli.add_arguments(processor)

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
    watch = commands.add_parser(
        "watch", help="live, provisional: calls as they arrive", formatter_class=formatter, epilog=cli_watch.EPILOG,
        description="Follow the raw topic and print each call with its call path, named with the processor's own "
                    "symbolization. Provisional: nothing is windowed yet.",
    )
    cli_watch.add_arguments(watch, DEFAULT_BOOTSTRAP)
    export = commands.add_parser(
        "export", help="OpenVEX / CycloneDX evidence, flame graphs", formatter_class=formatter,
        epilog=cli_answers.EXPORT_EPILOG,
        description="Emit OpenVEX or CycloneDX for a list of vulnerable functions, with observed paths as evidence; "
                    "or a picture of the observed call paths (flame graph SVG/HTML, folded stacks, speedscope).",
    )
    cli_answers.add_export_arguments(export, DEFAULT_BOOTSTRAP)
    report = commands.add_parser(
        "report", help="HTML report for a list of advisories", formatter_class=formatter, epilog=cli_report.EPILOG,
        description="Write a static HTML page: for each advisory, what was reached, by which call paths, where, "
                    "and what the observation covered, with links to OpenVEX and CycloneDX documents.",
    )
    cli_report.add_arguments(report, DEFAULT_BOOTSTRAP)
    inventory = commands.add_parser(
        "inventory", help="packages mapped where", formatter_class=formatter, epilog=inventory_cli.EPILOG,
        description="List the packages (PURL, version) whose files processes map, per container and node.")
    inventory_cli.add_arguments(inventory, DEFAULT_BOOTSTRAP)
    plan = commands.add_parser(
        "plan", help="advisories -> probe plans for every agent", formatter_class=formatter,
        epilog=plan_cli.EPILOG,
        description="Turn OSV advisories into a probe plan, publish it for every agent, show what each node watches.")
    plan_cli.add_arguments(plan, DEFAULT_BOOTSTRAP)
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
        "kafka", help="local Kafka broker for development", formatter_class=formatter, epilog=kafka_cli.EPILOG,
        description="Provision Apache Kafka from Maven Central into a cache outside the repo and run it "
                    "in KRaft mode on loopback; create the topics on any cluster.",
    )
    kafka_cli.add_arguments(kafka)

    demo = commands.add_parser(
        "demo", help="run the pipeline against the bundled workload", formatter_class=formatter,
        description="Start a local broker, the processor and the agent; run the bundled workload "
                    "(runtime_signals/devtools/data/workload.c); print the summary it produced.",
    )
    demo_cli.add_arguments(demo)
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
    # librdkafka's own log (one line per failed connection attempt) stays quiet unless asked
    # for: a failure reaches the user once, as the command's error naming the cause.
    logging.getLogger("runtime_signals.librdkafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    from runtime_signals.agent.errors import AgentError
    from runtime_signals.capture.replay import ReplayError
    from runtime_signals.capture.writer import CaptureError
    from runtime_signals.config.engine import SettingsError
    from runtime_signals.consumer.errors import ConsumerError
    from runtime_signals.evidence.export import ExportError
    from runtime_signals.processor.errors import ProcessorError
    from runtime_signals.schemas.errors import SchemaError

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
        if args.command == "watch":
            return cli_watch.run(args)
        if args.command == "inventory":
            return inventory_cli.run(args)
        if args.command == "plan":
            return plan_cli.run(args)
        if args.command == "report":
            return cli_report.run(args)
        if args.command == "capture":
            return cli_capture.run_capture(args)
        if args.command == "replay":
            return cli_capture.run_replay(args)
        if args.command == "kafka":
            return kafka_cli.run(args)
        if args.command == "config":
            return config_cli.run(args)
        if args.command == "demo":
            return demo_cli.run(args)
    except (AgentError, ProcessorError, SchemaError, LookupError, ConsumerError, CaptureError, ReplayError,
            ExportError, SettingsError) as exc:
        print(f"signals {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or device the command was pointed at
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"signals {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose:
            raise
        print(f"signals {args.command}: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback; "
              f"please report it)", file=sys.stderr)
        return 1
    return 2
