"""`signals report`: a static HTML page for a list of advisories, with the OpenVEX and
CycloneDX documents beside it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime_signals.cli.capture import parse_time_ms
from runtime_signals.cli.common import add_connection_arguments, connection

EPILOG = """\
examples:
  signals report --functions vulnerable.txt -o report.html
  signals report --functions GO-2024-1234.json --container host:3d1219c7 --since 7d -o shop.html

Writes the page and, beside it, <name>.openvex.json and <name>.cdx.json, which the page links
to. For each advisory the page shows the verdict (REACHED / NOT OBSERVED while watched / NO
DATA), the call paths with the vulnerable function marked, where they ran, a flame graph of
them, and what the observation covered. The page has no script and loads nothing: open it
anywhere, offline.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    add_connection_arguments(parser, default_bootstrap)
    parser.add_argument("--functions", required=True, type=Path, help="OSV JSON, or PURL FUNCTION [ID] lines")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the HTML page to write")
    parser.add_argument("--container", help="only this container id, or a unique prefix of it")
    parser.add_argument("--since", type=parse_time_ms, metavar="TIME", help="windows ending after TIME")
    parser.add_argument("--until", type=parse_time_ms, metavar="TIME", help="windows starting before TIME")
    parser.add_argument("--vulnerability", help="vulnerability id for text lines that have none")
    parser.add_argument("--product", help="name every container as this one product (a PURL or IRI)")
    parser.add_argument("--author", default="runtime-signals", help="OpenVEX author (default: %(default)s)")
    parser.add_argument("--spec-version", choices=["1.5", "1.6"], default="1.6", help="CycloneDX version")
    parser.add_argument("--title", default="Runtime reachability report", help="page title")


def run(args: argparse.Namespace) -> int:
    from runtime_signals.cli.answers import evidence_document
    from runtime_signals.consumer import SignalsClient
    from runtime_signals.evidence import export, report

    link = connection(args)
    client = SignalsClient(link.bootstrap, link.topics, kafka_config=link.kafka_config)
    us = (None if args.since is None else args.since * 1000, None if args.until is None else args.until * 1000)
    summaries = list(client.summaries(args.container, since_us=us[0], until_us=us[1]))
    functions = export.load_vulnerable_functions(args.functions, args.vulnerability)
    if not functions:
        raise export.ExportError(f"{args.functions}: no vulnerable function named in it")
    found = export.findings(functions, summaries, product=args.product)
    output: Path = args.output
    stem = output.name.rsplit(".", 1)[0]
    documents = {"OpenVEX": output.with_name(f"{stem}.openvex.json"),
                 "CycloneDX": output.with_name(f"{stem}.cdx.json")}
    for label, path in documents.items():
        text, _ = evidence_document(args, summaries, "openvex" if label == "OpenVEX" else "cyclonedx")
        path.write_text(text, encoding="utf-8")
    page = report.render(found, title=args.title, source=f"{link.topics.summaries} on {link.bootstrap}",
                         documents={label: path.name for label, path in documents.items()})
    output.write_text(page, encoding="utf-8")
    reached = sum(1 for f in found if f.answer.reached)
    print(f"wrote {output} ({len(found)} finding(s), {reached} reached), "
          f"{documents['OpenVEX'].name}, {documents['CycloneDX'].name}", file=sys.stderr)
    return 0
