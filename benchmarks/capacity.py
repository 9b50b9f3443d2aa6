"""The capacity model of docs/capacity.md, from measured figures: tables and the plot.

    python -m benchmarks.capacity [--inputs docs/capacity-inputs.json] [--plot docs/capacity.png]

The inputs (CPU per record and per emitted path, bytes on the broker) come from
`python -m benchmarks.fleet_engine` and `python -m benchmarks.fleet_bench` runs on fleet
recordings; docs/capacity-inputs.json says which figure came from where.

A deployment: N nodes; S distinct active stacks per node per watermark interval I (s); D
distinct call paths per node per window of T s (D <= S T / I: fewer when paths repeat
across intervals); P raw partitions, one worker each.
- An agent sends one record per distinct stack per interval (dedup) and one watermark to
  every partition per interval: (S + P) / I records/s per node.
- A worker spends c_in per call record, c_wm per watermark, c_path per path it emits (the
  path's record, its share of the summary and of the latest state), and has u CPU
  seconds per second.
- Every partition carries every node's watermarks, N / I per second, whatever P is.
So P workers need P u >= N (S c_in / I + D c_path / T) + P N c_wm / I, that is
P >= N (S c_in / I + D c_path / T) / (u - N c_wm / I): finite only while N c_wm / I < u.
Past N_max = u I / c_wm nodes one partition's watermarks alone fill a worker and no
number of partitions or workers helps: where the model, and the design, stop.

Storage follows the topics' settings (schemas/topics.py): the raw topic is kept for its
retention; summaries and paths, keyed by container and window, lose nothing to compaction
and are deleted after the output retention; the latest states are compacted to one per
container, and what compaction cannot yet touch is a partition's active segment (it rolls
at 1 GiB or after 7 days, the broker's defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime_signals.schemas.topics import OUTPUT_RETENTION_MS, RAW_RETENTION_MS

REPO = Path(__file__).resolve().parent.parent
DAY_S = 86_400
DAY_MS = DAY_S * 1000
# The broker's defaults for a segment's roll (log.segment.bytes, log.roll.ms): compaction
# and deletion only ever touch closed segments.
SEGMENT_BYTES = 1 << 30
SEGMENT_ROLL_S = 7 * DAY_S


@dataclass(frozen=True)
class Measured:
    call_cpu_us: float            # worker CPU per call record, intake only (c_in)
    watermark_cpu_us: float       # worker CPU per watermark record (c_wm)
    path_cpu_us: float            # worker CPU per emitted path, its summary and latest shares included
    call_disk_bytes: float        # a call record on the raw topic, compressed (zstd), one replica
    watermark_disk_bytes: float
    path_output_disk_bytes: float       # summaries + paths + latest written per emitted path, compressed
    # Of those, the summaries' and paths' share: one key per container-window, so compaction
    # removes none of it and it stays until the output retention deletes it.
    path_retained_disk_bytes: float
    usable_cpu: float = 0.7       # CPU seconds per second a worker may spend (headroom for bursts)
    replication: int = 3
    raw_retention_days: float = RAW_RETENTION_MS / DAY_MS
    output_retention_days: float = OUTPUT_RETENTION_MS / DAY_MS

    @classmethod
    def load(cls, path: Path) -> Measured:
        values = json.loads(path.read_text())
        return cls(**{k: v["value"] if isinstance(v, dict) else v for k, v in values.items()
                      if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Fleet:
    nodes: int
    stacks: float            # S: distinct active stacks per node per watermark interval
    interval_s: float        # I: the agents' watermark interval
    window_s: float = 60.0   # T: the processor's window (the default)
    paths_per_window: float | None = None   # D per node; None: S T / I, no path repeating

    @property
    def paths(self) -> float:
        worst = self.stacks * self.window_s / self.interval_s
        return worst if self.paths_per_window is None else min(worst, self.paths_per_window)


def node_records_per_s(stacks: float, interval_s: float, partitions: int) -> float:
    return (stacks + partitions) / interval_s


def max_nodes(m: Measured, interval_s: float) -> float:
    """Nodes past which one partition's watermarks fill a worker."""
    return m.usable_cpu * interval_s / (m.watermark_cpu_us * 1e-6)


def workers_needed(m: Measured, fleet: Fleet) -> int | None:
    """Workers (= raw partitions) for the fleet; None beyond max_nodes."""
    spare = m.usable_cpu - fleet.nodes * m.watermark_cpu_us * 1e-6 / fleet.interval_s
    if spare <= 0:
        return None
    work = fleet.nodes * (fleet.stacks * m.call_cpu_us / fleet.interval_s
                          + fleet.paths * m.path_cpu_us / fleet.window_s) * 1e-6
    return max(1, math.ceil(work / spare))


def plan(m: Measured, fleet: Fleet) -> dict[str, Any]:
    workers = workers_needed(m, fleet)
    if workers is None:
        return {"workers": None, "max_nodes": max_nodes(m, fleet.interval_s)}
    calls_per_s = fleet.nodes * fleet.stacks / fleet.interval_s
    watermarks_per_s = fleet.nodes * workers / fleet.interval_s
    paths_per_s = fleet.nodes * fleet.paths / fleet.window_s
    raw_bytes_per_s = calls_per_s * m.call_disk_bytes + watermarks_per_s * m.watermark_disk_bytes
    kept_bytes_per_s = paths_per_s * m.path_retained_disk_bytes
    latest_bytes_per_s = paths_per_s * (m.path_output_disk_bytes - m.path_retained_disk_bytes)
    # Uncompacted latest states: each partition's active segment, full or a week old.
    latest_dirty_bytes = min(latest_bytes_per_s * SEGMENT_ROLL_S, workers * SEGMENT_BYTES)
    return {
        "workers": workers, "raw_records_per_s": calls_per_s + watermarks_per_s,
        "watermark_share": watermarks_per_s / (calls_per_s + watermarks_per_s),
        "raw_mb_per_s": raw_bytes_per_s / 1e6, "paths_per_s": paths_per_s,
        "output_mb_per_s": paths_per_s * m.path_output_disk_bytes / 1e6,
        "raw_storage_gb": raw_bytes_per_s * DAY_S * m.raw_retention_days * m.replication / 1e9,
        "outputs_storage_gb": kept_bytes_per_s * DAY_S * m.output_retention_days * m.replication / 1e9,
        "latest_dirty_gb": latest_dirty_bytes * m.replication / 1e9,
        "max_nodes": max_nodes(m, fleet.interval_s),
    }


def table(m: Measured, fleets: tuple[int, ...], stacks: float, paths: float | None,
          intervals_s: tuple[float, ...]) -> list[str]:
    lines = ["| nodes | watermark interval s | workers = partitions | raw records/s | of them watermarks | "
             "raw MB/s | raw storage GB | outputs MB/s | summaries + paths storage GB | "
             "latest states before compaction, GB at most |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for nodes in fleets:
        for interval_s in intervals_s:
            p = plan(m, Fleet(nodes, stacks, interval_s, paths_per_window=paths))
            if p["workers"] is None:
                lines.append(f"| {nodes:,} | {interval_s:g} | none: past {p['max_nodes']:,.0f} nodes one "
                             f"partition's watermarks fill a worker | | | | | | | |")
                continue
            lines.append(f"| {nodes:,} | {interval_s:g} | {p['workers']:,} | {p['raw_records_per_s']:,.0f} | "
                         f"{p['watermark_share']:.0%} | {p['raw_mb_per_s']:,.1f} | {p['raw_storage_gb']:,.0f} | "
                         f"{p['output_mb_per_s']:,.1f} | {p['outputs_storage_gb']:,.0f} | "
                         f"{p['latest_dirty_gb']:,.0f} |")
    return lines


def draw(m: Measured, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    stacks = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    for interval_s in (0.5, 1.0, 2.0, 5.0):
        left.plot(stacks, [node_records_per_s(s, interval_s, 12) for s in stacks], marker="o",
                  label=f"interval {interval_s:g} s")
    left.set(xscale="log", yscale="log", xlabel="distinct active stacks per node per interval",
             ylabel="raw records/s per node (12 partitions)", title="What one node sends")
    left.legend()
    nodes = [100, 300, 1000, 3000, 10_000, 30_000, 50_000, 100_000]
    for interval_s, style in ((0.5, "-"), (5.0, "--")):
        for s in (10, 50, 200):
            points = [(n, workers_needed(m, Fleet(n, s, interval_s, paths_per_window=4 * s))) for n in nodes]
            shown = [(n, w) for n, w in points if w is not None]
            right.plot([n for n, _ in shown], [w for _, w in shown], style, marker="o",
                       label=f"S={s}, interval {interval_s:g} s")
        right.axvline(max_nodes(m, interval_s), color="grey", linestyle=style, linewidth=0.8)
    right.set(xscale="log", yscale="log", xlabel="nodes", ylabel="workers = raw partitions",
              title="Workers needed, 60 s windows, D = 4 S\n(vertical: one partition's watermarks fill a worker)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=REPO / "docs" / "capacity-inputs.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "capacity.png")
    parser.add_argument("--stacks", type=float, default=13.0, help="S: distinct active stacks per node per interval")
    parser.add_argument("--paths", type=float, help="D: distinct paths per node per 60 s window (default: S T / I)")
    parser.add_argument("--output-retention-days", type=float, default=OUTPUT_RETENTION_MS / DAY_MS,
                        help="the summaries', paths' and latest states' retention (kafka.output_retention_ms)")
    args = parser.parse_args(argv)
    measured = replace(Measured.load(args.inputs), output_retention_days=args.output_retention_days)
    print("\n".join(table(measured, (1_000, 10_000, 50_000), args.stacks, args.paths, (0.5, 2.0, 5.0, 30.0))))
    for interval_s in (0.5, 2.0, 5.0, 30.0):
        print(f"max nodes at {interval_s:g} s: {max_nodes(measured, interval_s):,.0f}")
    draw(measured, args.plot)
    print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
