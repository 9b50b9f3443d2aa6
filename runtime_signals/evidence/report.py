"""`signals report`: one static HTML page for a list of advisories — what was reached, by
which call paths, where, what the observation covered, with links to the OpenVEX and
CycloneDX documents written beside it. No script and no external resource: the page is the
same bytes for the same summaries and opens anywhere, offline.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime_signals.consumer.display import PathFrames, path_labels
from runtime_signals.consumer.models import PathEvidence, iso
from runtime_signals.consumer.summaries import short_symbol
from runtime_signals.evidence import flamegraph
from runtime_signals.evidence.export import Finding

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.reached { color: #b00020; font-weight: bold; }
.not-observed { color: #8a6d00; font-weight: bold; }
.no-data { color: #666; font-weight: bold; }
code.path { white-space: normal; }
mark { background: #ffd54f; }
section.finding { border-top: 2px solid #ddd; padding-top: 0.5em; }
.note { color: #555; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Row:
    """One displayed call path: the evidence of every stack with these names in one container."""

    container_id: str
    symbols: tuple[str, ...]
    matched_frame: int
    calls: int
    stacks: int
    first_observed_at_us: int
    last_observed_at_us: int
    purl_verified: bool


def rows(paths: Sequence[PathEvidence]) -> list[Row]:
    """Evidence folded so that no displayed row repeats another, most calls first."""
    # Labels are the demangled names, with the call site where paths that print alike differ
    # (consumer.display): stacks that still print alike are one row.
    labels = path_labels([PathFrames(p.symbols, p.function_signatures, p.binary_offsets, p.binary_digests)
                          for p in paths])
    grouped: dict[tuple[str, tuple[str, ...], int], list[PathEvidence]] = {}
    for path, label in zip(paths, labels, strict=False):
        grouped.setdefault((path.container_id, tuple(label), path.matched_frame), []).append(path)
    folded = [Row(container, symbols, frame, sum(p.observation_count for p in group), len(group),
                  min(p.first_observed_at_us for p in group), max(p.last_observed_at_us for p in group),
                  all(p.purl_verified for p in group))
              for (container, symbols, frame), group in grouped.items()]
    return sorted(folded, key=lambda r: (-r.calls, r.container_id, r.symbols))


def verdict(finding: Finding) -> tuple[str, str]:
    """(css class, words) of a finding's answer."""
    if finding.answer.reached:
        return "reached", "REACHED"
    if finding.answer.coverage.windows == 0:
        return "no-data", "NO DATA (nothing observed in this scope)"
    return "not-observed", "NOT OBSERVED while watched"


def _path_html(row: Row) -> str:
    frames = [html.escape(short_symbol(s)) for s in row.symbols]
    frames[row.matched_frame] = f"<mark>{frames[row.matched_frame]}</mark>"
    return " → ".join(frames)


def _finding_html(index: int, finding: Finding) -> str:
    answer, coverage = finding.answer, finding.answer.coverage
    css, words = verdict(finding)
    where = finding.scope
    title = f"{finding.vulnerability} — {', '.join(finding.functions)}"
    out = [f'<section class="finding" id="finding-{index}">',
           f"<h2>{html.escape(title)}</h2>",
           f'<p>Verdict: <span class="{css}">{html.escape(words)}</span> in {html.escape(where)}'
           + (f", {answer.observation_count} calls, first {iso(answer.first_observed_at_us)}, "
              f"last {iso(answer.last_observed_at_us)}" if answer.reached else "") + "</p>"]
    meta = [("package", finding.purl or "any"), ("aliases", ", ".join(finding.aliases) or "none")]
    out.append("<p class=\"note\">" + "; ".join(f"{k}: {html.escape(v)}" for k, v in meta) + "</p>")
    shown = rows(answer.paths)
    if shown:
        out.append("<table class=\"paths\"><tr><th>calls</th><th>container</th>"
                   "<th>call path (entry point → <mark>vulnerable function</mark> → probed function)</th>"
                   "<th>first seen</th><th>last seen</th></tr>")
        for row in shown:
            note = "" if row.purl_verified else ' <span class="note">(package unconfirmed)</span>'
            stacks = f' <span class="note">({row.stacks} stacks)</span>' if row.stacks > 1 else ""
            out.append(f'<tr><td class="n">{row.calls}</td><td>{html.escape(row.container_id)}</td>'
                       f'<td><code class="path">{_path_html(row)}</code>{note}{stacks}</td>'
                       f"<td>{iso(row.first_observed_at_us)}</td><td>{iso(row.last_observed_at_us)}</td></tr>")
        out.append("</table>")
        stacks_by_path: Counter[tuple[str, ...]] = Counter()
        for row in shown:
            stacks_by_path[tuple(short_symbol(s) for s in row.symbols)] += row.calls
        out.append(flamegraph.svg(stacks_by_path, f"call paths through {finding.functions[0]}",
                                  highlight=short_symbol(shown[0].symbols[shown[0].matched_frame])))
    elif coverage.windows:
        out.append("<p class=\"note\">Only probed functions can be observed, and only while watched: not seeing a "
                   "call is not proof that it never runs.</p>")
    if coverage.windows:
        out.append(f"<p class=\"coverage\">Coverage: {len(coverage.containers)} container(s), {coverage.windows} "
                   f"window(s) {iso(coverage.first_window_start_us)} .. {iso(coverage.last_window_end_us)}, "
                   f"{coverage.total_events} calls of probed functions, {coverage.dropped_events} dropped, "
                   f"{coverage.late_events} late; probed functions seen: "
                   f"{html.escape(', '.join(short_symbol(s) for s in coverage.probed_functions) or 'none')}</p>")
    out.append("</section>")
    return "\n".join(out)


def render(findings: Sequence[Finding], *, title: str, source: str, documents: Mapping[str, str]) -> str:
    """The report page. ``documents`` maps a label ("OpenVEX") to the (relative) link of a
    document written beside the page; ``source`` says which topics were read."""
    summary_rows = []
    for index, finding in enumerate(findings):
        css, words = verdict(finding)
        summary_rows.append(f'<tr><td><a href="#finding-{index}">{html.escape(finding.vulnerability)}</a></td>'
                            f"<td>{html.escape(', '.join(finding.functions))}</td>"
                            f"<td>{html.escape(finding.scope)}</td>"
                            f'<td class="{css}">{html.escape(words)}</td>'
                            f'<td class="n">{finding.answer.observation_count}</td></tr>')
    links = " · ".join(f'<a href="{html.escape(href)}">{html.escape(label)}</a>' for label, href in documents.items())
    reached = sum(1 for f in findings if f.answer.reached)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (f"<p>{len(findings)} finding(s), <span class=\"reached\">{reached} reached</span>; read from "
        f"{html.escape(source)}.</p>"),
        f"<p>Evidence documents: {links or 'none written'}</p>",
        ("<table class=\"overview\"><tr><th>advisory</th><th>functions</th><th>where</th><th>verdict</th>"
        "<th>calls</th></tr>"),
        *summary_rows,
        "</table>",
        *(_finding_html(i, f) for i, f in enumerate(findings)),
        ("<p class=\"note\">Only probed functions can be observed, and only while watched. A path's calls are the "
        "calls of its probed function (the last frame) whose stack held the vulnerable function.</p>"),
        "</body></html>",
        "",
    ])
