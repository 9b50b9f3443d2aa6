"""Every output record fits its topic, whatever the inputs were. Pure functions.

Intake bounds each raw record (processor/intake.py), but a window's outputs grow with what
several records and the symbol tables bring together: a path of 256 frames named by 4 KiB
symbols with 4 KiB library paths is a few MiB, a container with tens of thousands of distinct
stacks makes a summary beyond any record limit. An output the broker refuses stops the worker,
and the restarted worker meets the same window again: so nothing is sent that cannot fit.
What does not fit is reduced in a way that shows it, never silently:

- a path record over max_path_bytes goes out *unnamed*: its frames as their frame identities
  (as for frames without a symbol table), no signatures, no library paths; its node hashes and
  path hash follow from that, so it is a different, honest path, not a falsified one;
- a summary over max_summary_bytes keeps the call paths that fit (in its usual order) and
  counts the calls of the others in dropped_events ("known to be missing here"); every path is
  still on the paths topic, whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runtime_signals.schemas import hashing

Encode = Callable[[dict[str, Any]], bytes]


def unnamed_path(record: dict[str, Any], identities: Sequence[str]) -> None:
    """Rewrite a path record in place as its unnamed form (frame identities only)."""
    purls = [record["purl"]] * len(identities)  # the path's PURL is its top frame's
    node_hashes = [hashing.node_hash(purl if i == len(identities) - 1 else None, identity)
                   for i, (purl, identity) in enumerate(zip(purls, identities))]
    record.update(symbols=list(identities), function_signatures=list(identities),
                  libraries=[None] * len(identities), node_hashes=node_hashes,
                  path_hash=hashing.path_hash(node_hashes))


def refresh_summary(summary: dict[str, Any]) -> None:
    """The summary fields derived from its call paths, after paths changed."""
    paths = sorted(summary["call_paths"], key=lambda r: (r["path_hash"], r["callstack_hash"]))
    path_hashes = sorted({p["path_hash"] for p in paths})
    summary.update(call_paths=paths, observed_symbols=sorted({s for p in paths for s in p["symbols"]}),
                   observed_node_hashes=sorted({h for p in paths for h in p["node_hashes"]}),
                   observed_path_hashes=path_hashes, combined_path_hash=hashing.combined_path_hash(path_hashes))


def fit_summary(summary: dict[str, Any], encode: Encode, max_bytes: int) -> tuple[bytes, int]:
    """The encoded summary, with call paths dropped from its end until it fits; returns the
    bytes and how many paths were dropped (their calls added to dropped_events)."""
    encoded = encode(summary)
    if len(encoded) <= max_bytes:
        return encoded, 0
    paths = summary["call_paths"]
    # Paths are about equally large: a first cut in proportion, then one at a time.
    keep = max(0, min(len(paths) - 1, len(paths) * max_bytes // len(encoded) - 1))
    while True:
        kept, dropped = paths[:keep], paths[keep:]
        trimmed = dict(summary, call_paths=kept,
                       dropped_events=summary["dropped_events"] + sum(p["observation_count"] for p in dropped))
        refresh_summary(trimmed)
        encoded = encode(trimmed)
        if len(encoded) <= max_bytes or keep == 0:
            summary.clear()
            summary.update(trimmed)
            return encoded, len(dropped)
        keep -= 1
