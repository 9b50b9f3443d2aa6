"""`signals summaries`, `signals reachable` and `signals export`: the questions people ask."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runtime_signals.cli.capture import parse_time_ms

if TYPE_CHECKING:
    from runtime_signals.schemas.topics import TopicNames

SUMMARIES_EPILOG = """\
examples:
  signals summaries
  signals summaries --container host:3d1219c7 --since 1h --json
  signals summaries --symbol parse_image_header          # only the paths through it
"""

REACHABLE_EPILOG = """\
examples:
  signals reachable --function parse_image_header
  signals reachable --function golang.org/x/net/html.Parse --purl pkg:golang/golang.org/x/net
  signals reachable --node-hash sha256:… --container host:3d1219c7 --since 7d --json

A function that was never observed is reported with what was observed instead (containers,
windows, calls of probed functions): only probed functions can be seen, and only while watched.
"""

EXPORT_EPILOG = """\
examples:
  signals export --functions GO-2024-1234.json --format openvex -o vex.json
  signals export --functions vulnerable.txt --format cyclonedx --spec-version 1.5
  signals export --functions vulnerable.txt --format openvex --product pkg:oci/shop@sha256:…

--functions takes OSV JSON (affected[].ecosystem_specific symbols) or a text file with one
`PURL FUNCTION [VULNERABILITY-ID]` a line. Reached functions are `affected` (OpenVEX) or
`exploitable` (CycloneDX) with their call paths as evidence; others are `under_investigation` /
`in_triage` with the observation window, never `not_affected`.
"""


def _add_common(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    # Connection flags default to the shared configuration (--config FILE or $SIGNALS_CONFIG,
    # then SIGNALS_KAFKA__* variables), as the agent's and the processor's do: in a container
    # the configuration names the cluster, not the command line.
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $SIGNALS_CONFIG)")
    parser.add_argument("--bootstrap", default=None,
                        help=f"Kafka bootstrap servers (setting: kafka.bootstrap_servers; default {default_bootstrap})")
    parser.add_argument("--topic-prefix", default=None,
                        help="prefix of the pipeline's topic names (setting: kafka.topic_prefix)")
    parser.add_argument("--container", help="only this container id")
    parser.add_argument("--since", type=parse_time_ms, metavar="TIME", help="windows ending after TIME")
    parser.add_argument("--until", type=parse_time_ms, metavar="TIME", help="windows starting before TIME")


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--function", "--symbol", dest="function", help="function name or signature")
    parser.add_argument("--purl", help="package URL (without a version: any version)")
    parser.add_argument("--node-hash", help="node hash (schemas/HASHING.md) of a function")


def add_summaries_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    _add_common(parser, default_bootstrap)
    _add_target(parser)
    parser.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="metadata timeout (default: %(default)s)")


def add_reachable_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    _add_common(parser, default_bootstrap)
    _add_target(parser)
    parser.add_argument("--json", action="store_true", help="JSON for machines instead of a table")


def add_export_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    _add_common(parser, default_bootstrap)
    parser.add_argument("--functions", required=True, type=Path, help="OSV JSON, or PURL FUNCTION [ID] lines")
    parser.add_argument("--format", choices=["openvex", "cyclonedx"], default="openvex")
    parser.add_argument("--spec-version", choices=["1.5", "1.6"], default="1.6", help="CycloneDX version")
    parser.add_argument("--vulnerability", help="vulnerability id for text lines that have none")
    parser.add_argument("--product", help="name every container as this one product (a PURL or IRI)")
    parser.add_argument("--author", default="runtime-signals", help="OpenVEX author (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")


def _connection(args: argparse.Namespace) -> tuple[str, TopicNames, dict[str, str]]:
    """Bootstrap servers, topic names and librdkafka settings (TLS, SASL) from the
    configuration, with --bootstrap and --topic-prefix winning when given."""
    from runtime_signals.config import load_config
    from runtime_signals.schemas.topics import TopicNames

    kafka = load_config(args.config, flags={"kafka.bootstrap_servers": args.bootstrap,
                                            "kafka.topic_prefix": args.topic_prefix},
                        flag_names={"kafka.bootstrap_servers": "--bootstrap",
                                    "kafka.topic_prefix": "--topic-prefix"}).kafka
    return kafka.bootstrap_servers, TopicNames().with_prefix(kafka.topic_prefix), kafka.librdkafka_config()


def _us(time_ms: int | None) -> int | None:
    return None if time_ms is None else time_ms * 1000


def _target(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from runtime_signals.consumer.models import Target

    if not (args.function or args.purl or args.node_hash):
        return None
    return Target(function=args.function, node_hash=args.node_hash, purl=args.purl)


def run_summaries(args: argparse.Namespace) -> int:
    from runtime_signals.consumer.summaries import format_table, latest_summaries, read_topic, select_records, to_json

    bootstrap, topics, kafka_config = _connection(args)
    records = select_records(latest_summaries(read_topic(bootstrap, topics.summaries, args.timeout_s, kafka_config)),
                             container=args.container, since_us=_us(args.since), until_us=_us(args.until),
                             target=_target(args))
    print(to_json(records) if args.json else format_table(records), end="")
    return 0


def run_reachable(args: argparse.Namespace) -> int:
    from runtime_signals.consumer import SignalsClient
    from runtime_signals.consumer.errors import QueryError

    target = _target(args)
    if target is None:
        raise QueryError("say what to look for: --function, --purl and/or --node-hash")
    bootstrap, topics, kafka_config = _connection(args)
    client = SignalsClient(bootstrap, topics, kafka_config=kafka_config)
    answer = client.is_reached(target, container=args.container, since_us=_us(args.since),
                               until_us=_us(args.until))
    if args.json:
        print(json.dumps(answer.to_json(), indent=2, sort_keys=True))
    else:
        print(format_answer(answer), end="")
    return 0


def format_answer(answer) -> str:  # type: ignore[no-untyped-def]
    """A Reachability for people: the verdict, the evidence table, the coverage."""
    from runtime_signals.consumer.models import iso

    from runtime_signals.consumer.summaries import short_symbol

    coverage = answer.coverage
    span = f"{iso(coverage.first_window_start_us)} .. {iso(coverage.last_window_end_us)}"
    lines = []
    if answer.reached:
        containers = sorted({p.container_id for p in answer.paths})
        lines.append(f"{answer.target.describe()}: REACHED in {len(containers)} container(s): "
                     f"{answer.observation_count} calls, first {iso(answer.first_observed_at_us)}, "
                     f"last {iso(answer.last_observed_at_us)}")
        lines.append(f"  {'calls':>8}  {'windows':>7}  {'container':<20}  call path (entry point → [target] → probed function)")
        for path in answer.paths:
            symbols = [short_symbol(s) for s in path.symbols]
            symbols[path.matched_frame] = f"[{symbols[path.matched_frame]}]"
            note = "" if path.purl_verified else "  (package unconfirmed)"
            lines.append(f"  {path.observation_count:>8}  {path.windows:>7}  {path.container_id:<20}  "
                         + " → ".join(symbols) + note)
    elif coverage.windows == 0:
        lines.append(f"{answer.target.describe()}: NO DATA: no summary in the range asked; nothing is known")
    else:
        lines.append(f"{answer.target.describe()}: NOT OBSERVED in {', '.join(coverage.containers)} during {span}")
        lines.append("  only probed functions can be observed, and only while watched: this is not proof "
                     "that it never runs")
    if coverage.windows:
        lines.append(f"coverage: {len(coverage.containers)} container(s), {coverage.windows} window(s) {span}, "
                     f"{coverage.total_events} calls of probed functions, {coverage.dropped_events} dropped, "
                     f"{coverage.late_events} late; probed functions seen: "
                     f"{', '.join(short_symbol(s) for s in coverage.probed_functions) or 'none'}")
    return "\n".join(lines) + "\n"


def run_export(args: argparse.Namespace) -> int:
    from runtime_signals.consumer import SignalsClient

    from runtime_signals.evidence import cyclonedx, export, openvex
    from runtime_signals.capture.writer import tool_version

    functions = export.load_vulnerable_functions(args.functions, args.vulnerability)
    if not functions:
        raise export.ExportError(f"{args.functions}: no vulnerable function named in it")
    bootstrap, topics, kafka_config = _connection(args)
    client = SignalsClient(bootstrap, topics, kafka_config=kafka_config)
    summaries = list(client.summaries(args.container, since_us=_us(args.since), until_us=_us(args.until)))
    found = export.findings(functions, summaries, product=args.product)
    tool = tool_version()
    if args.format == "openvex":
        document = openvex.document(found, author=args.author, tooling=tool)
    else:
        name, _, version = tool.partition(" ")
        document = cyclonedx.bom(found, tool_name=name, tool_version=version, spec_version=args.spec_version)
    text = json.dumps(document, indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        reached = sum(1 for f in found if f.answer.reached)
        print(f"wrote {args.format} to {args.output}: {len(found)} finding(s), {reached} reached", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
