"""Pictures of observed call paths: folded stacks, a flame graph (self-contained SVG) and
speedscope's JSON file format.

A "sample" here is one observed call of a probed function, weighted by how often that call
path was seen (observation_count): the width of a frame is the number of calls that went
through it. Everything is a pure function of the paths, sorted, so the same summaries
always give the same bytes.
"""

from __future__ import annotations

import hashlib
import html
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime_signals.consumer.models import Summary, Target
from runtime_signals.consumer.query import Matcher
from runtime_signals.consumer.summaries import short_symbol

Stacks = Counter[tuple[str, ...]]  # entry point first, probed function last -> calls

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def stacks_of(summaries: Iterable[Summary], target: Target | None = None) -> Stacks:
    """Calls per call path (symbols, entry point first) over the summaries; with a target,
    only the paths that hold it. Paths with the same names but different binary locations
    (two builds, two return addresses in one function) fold into one stack."""
    matcher = Matcher(target) if target is not None else None
    stacks: Stacks = Counter()
    for summary in summaries:
        for path in summary.call_paths:
            if matcher is not None and matcher.match(path) is None:
                continue
            stacks[tuple(short_symbol(s) for s in path.symbols)] += path.observation_count
    return stacks


def folded(stacks: Mapping[tuple[str, ...], int]) -> str:
    """Brendan Gregg's folded format, one ``a;b;c calls`` line per stack, sorted (flamegraph.pl,
    inferno and speedscope read it). A ';' inside a name would split a frame: it becomes ':'."""
    return "".join(f"{';'.join(f.replace(';', ':') for f in stack)} {calls}\n"
                   for stack, calls in sorted(stacks.items()) if stack)


def speedscope(stacks: Mapping[tuple[str, ...], int], name: str) -> dict[str, Any]:
    """The stacks in speedscope's file format: one sampled profile, each stack a sample
    weighted by its calls (unit "none": the weights are calls, not time)."""
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, calls in sorted(stacks.items()):
        if not stack:
            continue
        samples.append([frames.setdefault(f, len(frames)) for f in stack])
        weights.append(calls)
    total = sum(weights)
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": "runtime-signals",
        "activeProfileIndex": 0,
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0, "endValue": total,
                      "samples": samples, "weights": weights}],
    }


@dataclass
class _Node:
    name: str
    calls: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[tuple[str, ...], int]) -> _Node:
    root = _Node("all calls")
    for stack, calls in stacks.items():
        root.calls += calls
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node(frame))
            node.calls += calls
    return root


def _colour(name: str) -> str:
    # Warm flame colours, chosen by the name so a function keeps its colour across pictures.
    digest = hashlib.sha256(name.encode()).digest()
    return f"rgb({205 + digest[0] % 50},{80 + digest[1] % 130},{digest[2] % 60})"


ROW_PX = 18
WIDTH_PX = 1200
_CHAR_PX = 7.0  # average width of a 12 px monospace glyph


def svg(stacks: Mapping[tuple[str, ...], int], title: str, *, highlight: str | None = None) -> str:
    """A flame graph as one self-contained SVG (no script, no external file): entry points at
    the bottom, probed functions on top, each frame as wide as the calls that went through
    it, its full name and calls in a tooltip. Frames named ``highlight`` are outlined."""
    root = _tree(stacks)
    depth = max((len(s) for s in stacks if s), default=0)
    height = (depth + 1) * ROW_PX + 40
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
        f'viewBox="0 0 {WIDTH_PX} {height}" font-family="monospace" font-size="12" class="flamegraph">'),
        f'<title>{html.escape(title)}</title>',
        f'<text x="{WIDTH_PX / 2}" y="16" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
    ]
    if root.calls == 0:
        parts.append(f'<text x="{WIDTH_PX / 2}" y="40" text-anchor="middle">no call path observed</text></svg>')
        return "\n".join(parts) + "\n"
    scale = (WIDTH_PX - 20) / root.calls

    def draw(node: _Node, level: int, x: float) -> None:
        width = node.calls * scale
        y = height - (level + 1) * ROW_PX - 4
        share = 100.0 * node.calls / root.calls
        label = f"{node.name} ({node.calls} calls, {share:.1f}%)"
        stroke = ' stroke="#1040c0" stroke-width="2"' if highlight is not None and node.name == highlight else ""
        fill = "rgb(220,220,220)" if level == 0 else _colour(node.name)
        parts.append(f'<g class="frame" data-calls="{node.calls}"><title>{html.escape(label)}</title>'
                     f'<rect x="{x:.2f}" y="{y}" width="{max(width - 0.5, 0.5):.2f}" height="{ROW_PX - 1}" '
                     f'fill="{fill}" rx="2"{stroke}/>')
        room = int((width - 6) / _CHAR_PX)
        if room >= 3:
            text = node.name if len(node.name) <= room else node.name[:room - 1] + "…"
            parts.append(f'<text x="{x + 3:.2f}" y="{y + ROW_PX - 5}">{html.escape(text)}</text>')
        parts.append("</g>")
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, level + 1, child_x)
            child_x += child.calls * scale

    draw(root, 0, 10.0)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def html_page(stacks: Mapping[tuple[str, ...], int], title: str) -> str:
    """The SVG in a minimal HTML page with the folded stacks below it, for a browser."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body>\n{svg(stacks, title)}<pre class=\"folded\">{html.escape(folded(stacks))}</pre>\n"
            "</body></html>\n")
