"""`signals watch`: calls and call paths as they arrive on the raw topic, before any window
closes. Frames are named with the processor's own code (processor.intake decodes and checks
each record, processor.symbolize + symbol_store name the frames from the symbols and modules
topics), so a path reads here as it will in the summary; but nothing is windowed, deduplicated
across agents' retries or checked for lateness, so every figure is marked provisional. The
final answer is the summaries' (`signals reachable`, `signals summaries`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, TextIO

from runtime_signals.cli.capture import parse_time_ms
from runtime_signals.cli.common import Connection, add_connection_arguments, connection

EPILOG = """\
examples:
  signals watch                                   # new calls from now on, until Ctrl-C
  signals watch --function decode_image           # only paths through decode_image
  signals watch --since 10m --duration-s 30       # the last ten minutes, then 30 s more
  signals watch --container host:3d1219c7 --json  # one JSON object a call record

Every line is PROVISIONAL: a call as the agent sent it, not yet counted into a window. On exit
(Ctrl-C, --duration-s, --max-calls) the calls seen are totalled per path, most calls first.
The final answer comes from the summaries once windows close: `signals reachable`.
exit status: 0 (calls seen or not); 1 an error, e.g. the broker or the raw topic is missing.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    add_connection_arguments(parser, default_bootstrap)
    parser.add_argument("--container", help="only this container id, or ids starting with it")
    parser.add_argument("--function", "--symbol", dest="function",
                        help="only paths with a frame of this name (or signature)")
    parser.add_argument("--since", type=parse_time_ms, metavar="TIME",
                        help="start at records stamped at or after TIME (default: now; 0: the topic's start)")
    parser.add_argument("--duration-s", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    parser.add_argument("--max-calls", type=int, metavar="N", help="stop once N calls were shown")
    parser.add_argument("--symbol-wait-ms", type=int, default=2_000,
                        help="how long a call waits for its binaries' symbol tables before it is shown with "
                             "unnamed frames (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=20, help="paths in the closing tally (default: %(default)s; "
                                                              "0: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object a line instead of text")


@dataclass
class _Pending:
    call: Any               # processor.intake.CallRecord
    arrived_s: float
    timestamp_ms: int


class Watch:
    """Decode, name, filter and print raw records; total them per path."""

    def __init__(self, link: Connection, args: argparse.Namespace, out: TextIO) -> None:
        from runtime_signals.processor.symbol_store import SymbolStore
        from runtime_signals.schemas import codec

        self.args = args
        self.out = out
        self.registry = codec.SchemaRegistry.default()
        self.store = SymbolStore()
        self.pending: list[_Pending] = []
        self.paths: Counter[tuple[str, ...]] = Counter()
        self.counts: Counter[str] = Counter()
        self.link = link

    # --- one record ------------------------------------------------------------------
    def take(self, value: bytes | None, timestamp_ms: int) -> None:
        from runtime_signals.processor.intake import CallRecord, Rejected, read_raw

        intake = read_raw(value, self.registry)
        if isinstance(intake, Rejected):
            self.counts[f"rejected:{intake.reason}"] += 1
            return
        if not isinstance(intake, CallRecord):
            self.counts["watermarks"] += 1
            return
        if self.args.container and not intake.container_id.startswith(self.args.container):
            self.counts["other_containers"] += 1
            return
        self.pending.append(_Pending(intake, time.monotonic(), timestamp_ms))

    def flush(self, force: bool = False) -> None:
        """Show the pending calls whose symbol tables have arrived, or that waited long enough."""
        from runtime_signals.processor.symbolize import digests_to_resolve

        now = time.monotonic()
        waiting = []
        for item in self.pending:
            call = item.call
            ready = self.store.has_all(digests_to_resolve(call.frames, call.top_symbol))
            if ready or force or (now - item.arrived_s) * 1000 >= self.args.symbol_wait_ms:
                self._show(item, ready)
            else:
                waiting.append(item)
        self.pending = waiting

    def _show(self, item: _Pending, named: bool) -> None:
        from runtime_signals.consumer.models import iso
        from runtime_signals.consumer.summaries import short_symbol
        from runtime_signals.processor.symbolize import resolve_frames
        from runtime_signals.schemas.hashing import RECIPE_V2

        call = item.call
        frames = resolve_frames(call.frames, call.identities, call.top_symbol, call.top_signature,
                                call.top_purl, self.store)
        wanted = self.args.function
        if wanted and not any(f.symbol == wanted or f.signature == wanted or f.signature.startswith(wanted + "(")
                              for f in frames):
            self.counts["other_functions"] += 1
            return
        symbols = tuple(short_symbol(f.symbol) for f in frames)
        self.paths[symbols] += call.observation_count
        self.counts["calls"] += call.observation_count
        self.counts["records"] += 1
        if not named:
            self.counts["records_unnamed"] += 1
        if self.args.json:
            self.out.write(json.dumps({
                "provisional": True, "container_id": call.container_id, "observed_at_us": call.observed_at_us,
                "observed_at_iso": iso(call.observed_at_us), "calls": call.observation_count,
                "symbols": [f.symbol for f in frames], "purl": frames[-1].purl if frames else None,
                "frames": [f.evidence() for f in frames], "hash_recipe": RECIPE_V2,
                "runtime_type": call.runtime_type, "symbol_tables_complete": named,
            }, sort_keys=True) + "\n")
        else:
            stamp = (iso(call.observed_at_us) or "")[11:23]
            note = "" if named else "  (symbol tables not arrived: frames unnamed)"
            self.out.write(f"{stamp}  provisional  {call.container_id:<20} {call.observation_count:>6}×  "
                           + " → ".join(symbols) + note + "\n")
        self.out.flush()

    def done(self) -> bool:
        return self.args.max_calls is not None and self.counts["calls"] >= self.args.max_calls

    def tally(self) -> str:
        limit = self.args.limit or None
        rows = sorted(self.paths.items(), key=lambda item: (-item[1], item[0]))
        lines = [(f"provisional tally: {self.counts['calls']} calls on {len(rows)} path(s) from "
                 f"{self.counts['records']} records on {self.link.topics.raw} (not windowed: the final answer is "
                 f"`signals reachable` once windows close)")]
        for symbols, calls in rows[:limit]:
            lines.append(f"  {calls:>8}  " + " → ".join(symbols))
        hidden = rows[limit:] if limit is not None else []
        if hidden:
            lines.append(f"  … {len(hidden)} more path(s), {sum(c for _, c in hidden)} calls (--limit 0 shows all)")
        skipped = {k: v for k, v in sorted(self.counts.items()) if k not in ("calls", "records")}
        if skipped:
            lines.append("  also: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
        return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from runtime_signals.cli.capture import _stop_on_signals
    from runtime_signals.consumer.kafka import OffsetRange, TopicReader
    from runtime_signals.processor.kafka_io import BinaryFeed

    link = connection(args)
    topics = link.topics
    reader = TopicReader(link.bootstrap, link.kafka_config)
    partitions = reader.partitions(topics.raw)  # the one clean error when the broker or topic is missing
    if args.since is None:
        starts = {p: high for p, (_, high) in reader.watermarks(topics.raw, partitions).items()}
    else:
        marks = reader.watermarks(topics.raw, partitions)
        found = reader.offsets_for_time(topics.raw, partitions, args.since)
        starts = {}
        for p in partitions:
            offset = found[p]
            starts[p] = marks[p][1] if offset is None else offset
    watch = Watch(link, args, sys.stdout)
    feed = BinaryFeed(link.kafka_config, topics.symbols, topics.modules, watch.store, watch.registry,
                      group_id=f"runtime-signals-watch-{time.monotonic_ns()}")
    print(f"watching {topics.raw} on {link.bootstrap}: PROVISIONAL calls as they arrive (not windowed); "
          f"Ctrl-C to stop", file=sys.stderr)
    stop = _stop_on_signals()
    deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
    try:
        feed.catch_up(timeout_s=30.0)
        print(f"following {topics.raw} ({len(watch.store)} symbol tables loaded)", file=sys.stderr, flush=True)

        def idle() -> None:
            feed.poll()
            watch.flush()
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()

        ranges = [OffsetRange(p, starts[p], None) for p in partitions]
        for record in reader.read(topics.raw, ranges, stop=stop, on_idle=idle):
            watch.take(record.value, record.timestamp_ms)
            feed.poll()
            watch.flush()
            if watch.done() or (deadline is not None and time.monotonic() >= deadline):
                stop.set()
        # Calls still waiting for their tables are shown, unnamed, rather than lost.
        feed.poll()
        watch.flush(force=True)
    finally:
        feed.close()
    print(watch.tally(), end="", file=sys.stderr if args.json else sys.stdout)
    return 0
