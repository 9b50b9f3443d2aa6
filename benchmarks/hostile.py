"""Hostile-input figures of issue 12, engine only (no broker, no BPF): what one partition
costs when tens of thousands of agent ids write watermarks to it. Before the event clock
kept its agents in a heap, 40,000 ids took 73.5 s (every watermark scanned every agent).

    python -m benchmarks.hostile [--agents 10000 20000 40000] [--out benchmarks/hostile-results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec

WATERMARK = "io.runtimesignals.AgentWatermark"
NOW_US = 1_790_000_000_000_000


def agents_seconds(agents: int, rounds: int) -> dict[str, Any]:
    """`rounds` watermarks from each of `agents` ids, interleaved as agents send them, through
    one partition's engine; returns the wall time and the cost per watermark."""
    registry = codec.SchemaRegistry.default()
    values = [codec.encode({"agent_id": f"node-{n:06d}/{n}", "host": f"node-{n:06d}",
                            "watermark_us": NOW_US - 1_000_000 + r * 100_000 + n % 1000, "sequence": r + 1},
                           WATERMARK, registry)
              for r in range(rounds) for n in range(agents)]
    engine = Engine(EngineSettings(WindowSpec(60_000, 5_000), "raw", symbol_wait_ms=0), NoSymbols(), registry)
    engine.assign(0, None)
    started = time.perf_counter()
    for offset, value in enumerate(values):
        engine.handle(0, offset, b"agent", value, (), NOW_US + offset)
    checkpoint = engine.checkpoint(0)
    seconds = time.perf_counter() - started
    assert checkpoint is not None
    return {"agents": agents, "watermarks": len(values), "seconds": round(seconds, 3),
            "us_per_watermark": round(seconds / len(values) * 1e6, 2),
            "checkpoint_bytes": len(checkpoint.encode(registry))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    parser.add_argument("--rounds", type=int, default=3, help="watermarks per agent (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [agents_seconds(n, args.rounds) for n in args.agents]
    print("| agents | watermarks | seconds | µs per watermark | checkpoint bytes |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['agents']:,} | {row['watermarks']:,} | {row['seconds']:.2f} | {row['us_per_watermark']:.1f} "
              f"| {row['checkpoint_bytes']:,} |")
    if args.out:
        args.out.write_text(json.dumps({"python": platform.python_version(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
