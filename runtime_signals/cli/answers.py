"""`signals summaries`, `signals reachable` and `signals export`: the questions people ask."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runtime_signals.cli.capture import parse_time_ms
from runtime_signals.cli.common import add_connection_arguments, connection
from runtime_signals.consumer.errors import QueryError
from runtime_signals.consumer.models import Coverage, Reachability, Summary, Target, iso
from runtime_signals.consumer.summaries import short_symbol
from runtime_signals.evidence.export import Finding, VulnerableFunction

TEXT_LIMIT = 20
# `reachable` (and `summaries`) exit status: 0 reached (or summaries printed); 1 an error;
# 2 a usage error; 3 not observed in the windows watched; 4 nothing known (no summary in range).
EXIT_NOT_OBSERVED = 3
EXIT_NOTHING_KNOWN = 4

if TYPE_CHECKING:
    from runtime_signals.consumer import SignalsClient

SUMMARIES_EPILOG = """\
examples:
  signals summaries
  signals summaries --container host:3d1219c7 --since 1h --json
  signals summaries --symbol parse_image_header          # only the paths through it
  signals summaries --limit 0                              # every path of every window

Paths are listed most calls first; the text shows 20 per window (--limit), --json all.
exit status: 0 summaries printed; 4 none on the topic for this filter (yet); 1 an error.
"""

REACHABLE_EPILOG = """\
examples:
  signals reachable --function parse_image_header
  signals reachable --function golang.org/x/net/html.Parse --purl pkg:golang/golang.org/x/net
  signals reachable --node-hash sha256:… --container host:3d1219c7 --since 7d --json

A function that was never observed is reported with what was observed instead (containers,
windows, calls of probed functions): only probed functions can be seen, and only while watched.
A name close to what was asked ("parse_headr") is suggested.

exit status:
  0  REACHED: observed on at least one call path
  3  NOT OBSERVED: summaries exist for the range asked, and no path holds it
  4  NO DATA: no summary in the range asked (nothing is known yet)
  1  an error (broker unreachable, bad argument; the message names it); 2 a usage error
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
    add_connection_arguments(parser, default_bootstrap)
    parser.add_argument("--container", help="only this container id, or a unique prefix of it (host:3d1219c7)")
    parser.add_argument("--since", type=parse_time_ms, metavar="TIME", help="windows ending after TIME")
    parser.add_argument("--until", type=parse_time_ms, metavar="TIME", help="windows starting before TIME")


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--function", "--symbol", dest="function", help="function name or signature")
    parser.add_argument("--purl", help="package URL (without a version: any version)")
    parser.add_argument("--node-hash", help="node hash (schemas/HASHING.md) of a function")


def _add_limit(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help=f"at most N {what} (text default {TEXT_LIMIT}, JSON default all; 0: all)")


def add_summaries_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    _add_common(parser, default_bootstrap)
    _add_target(parser)
    _add_limit(parser, "call paths per window, most calls first")
    parser.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="metadata timeout (default: %(default)s)")


def add_reachable_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    _add_common(parser, default_bootstrap)
    _add_target(parser)
    _add_limit(parser, "call paths, most calls first")
    parser.add_argument("--json", action="store_true", help="JSON for machines instead of a table")


def add_export_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    _add_common(parser, default_bootstrap)
    parser.add_argument("--functions", type=Path,
                        help="OSV JSON, or PURL FUNCTION [ID] lines (required for openvex and cyclonedx)")
    parser.add_argument("--format", choices=["openvex", "cyclonedx", "flamegraph", "folded", "speedscope"],
                        default="openvex",
                        help="evidence document, or a picture of the call paths: flamegraph (self-contained "
                             "SVG; HTML when -o ends in .html), folded stacks, speedscope JSON")
    _add_target(parser)
    parser.add_argument("--spec-version", choices=["1.5", "1.6"], default="1.6", help="CycloneDX version")
    parser.add_argument("--vulnerability", help="vulnerability id for text lines that have none")
    parser.add_argument("--product", help="name every container as this one product (a PURL or IRI)")
    parser.add_argument("--author", default="runtime-signals", help="OpenVEX author (default: %(default)s)")
    parser.add_argument("--plan", metavar="PLAN_ID",
                        help="add to each OpenVEX statement what this probe plan watched, where and for how long "
                             "(from the plan status topic; `signals plan status`)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")


def _us(time_ms: int | None) -> int | None:
    return None if time_ms is None else time_ms * 1000


def _target(args: argparse.Namespace) -> Target | None:
    if not (args.function or args.purl or args.node_hash):
        return None
    return Target(function=args.function, node_hash=args.node_hash, purl=args.purl)


def _limit(args: argparse.Namespace) -> int | None:
    """Rows to show: None for all."""
    if args.limit is not None and args.limit < 0:
        raise QueryError(f"--limit {args.limit}: give 0 (all) or a positive number")
    if args.limit == 0 or (args.limit is None and args.json):
        return None
    return TEXT_LIMIT if args.limit is None else int(args.limit)


def run_summaries(args: argparse.Namespace) -> int:
    from runtime_signals.consumer.summaries import format_table, latest_summaries, read_topic, select_records, to_json

    link = connection(args)
    topic = link.topics.summaries
    records = select_records(latest_summaries(read_topic(link.bootstrap, topic, args.timeout_s, link.kafka_config)),
                             container=args.container, since_us=_us(args.since), until_us=_us(args.until),
                             target=_target(args))
    limit = _limit(args)
    if args.json:
        if limit is not None:
            records = [dict(r, call_paths=sorted(r["call_paths"], key=lambda p: -p["observation_count"])[:limit])
                       for r in records]
        print(to_json(records))
    elif records:
        print(format_table(records, limit=limit), end="")
    if not records:
        print(f"no summaries on {topic} (for this filter): a window is summarised once the agents' "
              f"watermarks pass its end plus the allowed lateness; `signals watch` shows calls as they arrive",
              file=sys.stderr)
        return EXIT_NOTHING_KNOWN
    return 0


def run_reachable(args: argparse.Namespace) -> int:
    from runtime_signals.consumer import SignalsClient, query

    target = _target(args)
    if target is None:
        raise QueryError("say what to look for: --function, --purl and/or --node-hash")
    link = connection(args)
    client = SignalsClient(link.bootstrap, link.topics, kafka_config=link.kafka_config)
    query.Matcher(target)  # a malformed question fails before any read
    summaries = list(client.summaries(args.container, since_us=_us(args.since), until_us=_us(args.until)))
    answer = query.reachability(target, summaries)
    coverage = answer.coverage
    if not answer.reached and target.function and coverage.windows and coverage.first_window_start_us is not None \
            and coverage.last_window_end_us is not None:
        # Not observed: for how long was it watched at all? (consumer/watched.py)
        watches = client.watched([target.function], coverage.containers, coverage.first_window_start_us,
                                 coverage.last_window_end_us)
        answer = dataclasses.replace(answer, coverage=dataclasses.replace(
            coverage, watched=watches[0] if watches else None))
    suggestions = [] if answer.reached or not target.function else did_you_mean(target.function, summaries)
    if args.json:
        document = answer.to_json()
        limit = _limit(args)
        if limit is not None:
            document["paths"] = document["paths"][:limit]
        document["did_you_mean"] = suggestions
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(format_answer(answer, limit=_limit(args), suggestions=suggestions), end="")
    if answer.reached:
        return 0
    return EXIT_NOT_OBSERVED if answer.coverage.windows else EXIT_NOTHING_KNOWN


def did_you_mean(function: str, summaries: Sequence[Summary], count: int = 3) -> list[str]:
    """Observed names close to a function that was not found: a typo (parse_headr), another
    case, or a name given without its namespace or parameters."""
    names = sorted({name for s in summaries for p in s.call_paths
                    for name in (*p.symbols, *p.function_signatures) if not name.startswith("sha256:")})
    wanted = function.strip()
    lowered = wanted.lower()
    close = [n for n in names if n.lower() == lowered or (lowered in n.lower() and len(lowered) >= 4)]
    close += difflib.get_close_matches(wanted, names, n=count, cutoff=0.75)
    return list(dict.fromkeys(close))[:count]


def format_answer(answer: Reachability, *, limit: int | None = TEXT_LIMIT,
                  suggestions: Sequence[str] = ()) -> str:
    """A Reachability for people: the verdict, the evidence table (a row per distinct path
    and container, most calls first, never repeated), the coverage."""
    from runtime_signals.evidence.report import rows

    coverage = answer.coverage
    span = f"{iso(coverage.first_window_start_us)} .. {iso(coverage.last_window_end_us)}"
    lines = []
    if answer.reached:
        shown = rows(answer.paths)
        containers = sorted({r.container_id for r in shown})
        lines.append(f"{answer.target.describe()}: REACHED in {len(containers)} container(s): "
                     f"{answer.observation_count} calls, first {iso(answer.first_observed_at_us)}, "
                     f"last {iso(answer.last_observed_at_us)}")
        lines.append(f"  {'calls':>8}  {'container':<20}  call path (entry point → [target] → probed function)")
        for row in shown[:limit]:
            symbols = list(row.symbols)
            symbols[row.matched_frame] = f"[{symbols[row.matched_frame]}]"
            note = "" if row.purl_verified else "  (package unconfirmed)"
            stacks = f"  ({row.stacks} stacks)" if row.stacks > 1 else ""
            lines.append(f"  {row.calls:>8}  {row.container_id:<20}  " + " → ".join(symbols) + note + stacks)
        hidden = shown[limit:] if limit is not None else []
        if hidden:
            lines.append(f"  … {len(hidden)} more path(s), {sum(r.calls for r in hidden)} calls: --limit 0 shows "
                         f"them all, --json gives every field")
    elif coverage.windows == 0:
        lines.append(f"{answer.target.describe()}: NO DATA: no summary in the range asked; nothing is known")
    else:
        lines.append(f"{answer.target.describe()}: NOT OBSERVED in {_few(coverage.containers)} during {span}")
        lines += _watched_lines(coverage)
        lines.append("  only probed functions can be observed, and only while watched: this is not proof "
                     "that it never runs")
    if suggestions:
        lines.append(f"  did you mean: {', '.join(suggestions)}?")
    if coverage.windows:
        probed = [short_symbol(s) for s in coverage.probed_functions]
        lines.append(f"coverage: {len(coverage.containers)} container(s), {coverage.windows} window(s) {span}, "
                     f"{coverage.total_events} calls of probed functions, {coverage.dropped_events} dropped, "
                     f"{coverage.late_events} late; probed functions seen: {_few(probed, 10) or 'none'}")
    return "\n".join(lines) + "\n"


def _watched_lines(coverage: Coverage) -> list[str]:
    watch = coverage.watched
    if watch is None:
        return []
    if not watch.reports:
        return ["  watched time unknown: no statistics of these containers' agents in this span"]
    if not watch.probes:
        return [f"  no agent of {_few(coverage.containers)} reported a probe on {watch.function} in this span "
                f"({watch.reports} statistics record(s)): it was not watched"]
    agents = len({p.agent_id for p in watch.probes})
    return [f"  watched {watch.watched_us() / 1e6:.1f} s of {watch.span_us / 1e6:.1f} s by {len(watch.probes)} "
            f"probe(s) of {agents} agent(s) (at least; the rest: detached by the budget, agent down, or not "
            f"reported)"]


def _few(items: Sequence[str], most: int = 5) -> str:
    """A list that stays one line: the first few, then how many more."""
    shown = ", ".join(items[:most])
    return shown + (f", … ({len(items) - most} more)" if len(items) > most else "")


def run_export(args: argparse.Namespace) -> int:
    from runtime_signals.consumer import SignalsClient
    from runtime_signals.evidence import flamegraph

    functions = None
    if args.format in ("openvex", "cyclonedx"):
        if args.functions is None:
            raise QueryError(f"--format {args.format} needs --functions FILE (OSV JSON or PURL FUNCTION [ID] lines)")
        functions = _vulnerable_functions(args)  # a bad file is reported before any connection is tried
    link = connection(args)
    client = SignalsClient(link.bootstrap, link.topics, kafka_config=link.kafka_config)
    summaries = list(client.summaries(args.container, since_us=_us(args.since), until_us=_us(args.until)))
    if functions is not None:
        text, findings = evidence_document(args, summaries, functions=functions, client=client)
        if getattr(args, "plan", None):
            text = _with_plan_coverage(args, text)
        found = f"{len(findings)} finding(s), {sum(1 for f in findings if f.answer.reached)} reached"
    else:
        target = _target(args)
        stacks = flamegraph.stacks_of(summaries, target)
        title = _picture_title(link.topics.summaries, args, target)
        if args.format == "folded":
            text = flamegraph.folded(stacks)
        elif args.format == "speedscope":
            text = json.dumps(flamegraph.speedscope(stacks, title), indent=1) + "\n"
        elif args.output is not None and args.output.suffix in (".html", ".htm"):
            text = flamegraph.html_page(stacks, title)
        else:
            text = flamegraph.svg(stacks, title)
        found = f"{len(stacks)} call path(s), {sum(stacks.values())} calls"
        if not stacks:
            print(f"signals export: no call path on {link.topics.summaries} for this filter", file=sys.stderr)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.format} to {args.output}: {found}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _with_plan_coverage(args: argparse.Namespace, text: str) -> str:
    """The OpenVEX document with each statement's status_notes saying what the plan watched."""
    from runtime_signals.cli.plan import read_statuses
    from runtime_signals.evidence.plan import watched_notes

    if args.format != "openvex":
        raise QueryError("--plan: only --format openvex carries the plan's coverage (status_notes)")
    statuses = [s for s in read_statuses(args) if s["plan_id"] == args.plan]
    document = json.loads(text)
    for statement in document["statements"]:
        names = [name for function in _vulnerable_functions(args)
                 if function.vulnerability == statement["vulnerability"]["name"] for name in function.names]
        statement["status_notes"] = statement.get("status_notes", "") + "\n" + watched_notes(statuses, names)
    return json.dumps(document, indent=2) + "\n"


def _with_watched(client: SignalsClient, finding: Finding) -> Finding:
    """The finding of a function not observed, with how long its probes watched it (the
    longest of its names)."""
    coverage = finding.answer.coverage
    start, end = coverage.first_window_start_us, coverage.last_window_end_us
    if finding.answer.reached or not coverage.windows or start is None or end is None:
        return finding
    watches = client.watched(finding.functions, coverage.containers, start, end)
    if not watches:
        return finding
    best = max(watches, key=lambda w: (w.watched_us(), len(w.probes)))
    answer = dataclasses.replace(finding.answer, coverage=dataclasses.replace(coverage, watched=best))
    return dataclasses.replace(finding, answer=answer)


def _picture_title(topic: str, args: argparse.Namespace, target: Target | None) -> str:
    scope = [f"container {args.container}" if args.container else "all containers"]
    if target is not None:
        scope.append(f"paths through {target.describe()}")
    if args.since is not None or args.until is not None:
        scope.append(f"windows {iso(_us(args.since))} .. {iso(_us(args.until))}")
    return f"observed call paths — {', '.join(scope)} ({topic})"


def _vulnerable_functions(args: argparse.Namespace) -> list[VulnerableFunction]:
    from runtime_signals.evidence import export

    functions = export.load_vulnerable_functions(args.functions, args.vulnerability)
    if not functions:
        raise export.ExportError(f"{args.functions}: no vulnerable function named in it")
    return functions


def evidence_document(args: argparse.Namespace, summaries: Sequence[Summary], fmt: str | None = None,
                      functions: list[VulnerableFunction] | None = None,
                      client: SignalsClient | None = None) -> tuple[str, list[Finding]]:
    """The OpenVEX or CycloneDX document of --functions over the summaries, as JSON text, and
    the findings it states; with a client, a function not observed says how long it was watched."""
    from runtime_signals.capture.writer import tool_version
    from runtime_signals.evidence import cyclonedx, export, openvex

    if functions is None:
        functions = _vulnerable_functions(args)
    found = export.findings(functions, summaries, product=args.product)
    if client is not None:
        found = [_with_watched(client, finding) for finding in found]
    tool = tool_version()
    if (fmt or args.format) == "openvex":
        document = openvex.document(found, author=args.author, tooling=tool)
    else:
        name, _, version = tool.partition(" ")
        document = cyclonedx.bom(found, tool_name=name, tool_version=version, spec_version=args.spec_version)
    return json.dumps(document, indent=2) + "\n", found
