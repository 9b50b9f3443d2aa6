"""The capacity model of docs/capacity.md, from measured figures: tables and the plot.

    python -m benchmarks.capacity [--inputs docs/capacity-inputs.json] [--plot docs/capacity.png]

The inputs (CPU per record class, bytes per record on the broker) come from
`python -m benchmarks.fleet_bench` runs on fleet recordings; docs/capacity.md says which.

The model, per deployment of N nodes, S distinct active stacks per node per watermark
interval, a watermark interval of I seconds and P raw partitions:
- an agent sends one record per distinct stack per interval (dedup) and one watermark to
  every partition per interval: (S + P) / I records/s per node;
- a worker spends c_call per call record and c_wm per watermark record (CPU seconds,
  including the outputs the records cause), and has u CPU seconds per second to spend;
- each partition carries the watermarks of every node, N / I per second, whatever P is.
With one partition per worker (P = W), W workers need W * u >= N (S c_call + W c_wm) / I, so
W >= (N S c_call / I) / (u - N c_wm / I): finite only while N c_wm / I < u. Past
N_max = u I / c_wm nodes one partition's watermarks alone fill a worker, and no number of
partitions or workers helps: that is where the model (and the design) stops.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAY_S = 86_400


@dataclass(frozen=True)
class Measured:
    call_cpu_us: float            # worker CPU per call record, outputs included
    watermark_cpu_us: float       # worker CPU per watermark record
    call_disk_bytes: float        # a call record on the raw topic, compressed (zstd), one replica
    watermark_disk_bytes: float
    output_disk_bytes_per_call: float   # summaries + paths + latest written per call record, compressed
    # Of those, what stays: summaries and paths are compacted with one key per container-window
    # (schemas/topics.py), so nothing of them is ever deleted; latest keeps one per container.
    retained_output_bytes_per_call: float
    usable_cpu: float = 0.7       # CPU seconds per second a worker may spend (headroom for bursts)
    replication: int = 3
    raw_retention_days: float = 7.0   # schemas/topics.py RAW_RETENTION_MS

    @classmethod
    def load(cls, path: Path) -> Measured:
        values = json.loads(path.read_text())
        return cls(**{k: v["value"] if isinstance(v, dict) else v for k, v in values.items()
                      if k in cls.__dataclass_fields__})


def node_records_per_s(stacks: float, interval_s: float, partitions: int) -> float:
    return (stacks + partitions) / interval_s


def max_nodes(m: Measured, interval_s: float) -> float:
    """Nodes past which one partition's watermarks fill a worker."""
    return m.usable_cpu * interval_s / (m.watermark_cpu_us * 1e-6)


def workers_needed(m: Measured, nodes: int, stacks: float, interval_s: float) -> int | None:
    """Workers (= raw partitions) for the fleet; None beyond max_nodes."""
    spare = m.usable_cpu - nodes * m.watermark_cpu_us * 1e-6 / interval_s
    if spare <= 0:
        return None
    return max(1, math.ceil(nodes * stacks * m.call_cpu_us * 1e-6 / interval_s / spare))


def plan(m: Measured, nodes: int, stacks: float, interval_s: float) -> dict[str, Any]:
    workers = workers_needed(m, nodes, stacks, interval_s)
    if workers is None:
        return {"nodes": nodes, "stacks": stacks, "interval_s": interval_s, "workers": None,
                "max_nodes": max_nodes(m, interval_s)}
    partitions = workers
    calls_per_s = nodes * stacks / interval_s
    watermarks_per_s = nodes * partitions / interval_s
    raw_bytes_per_s = calls_per_s * m.call_disk_bytes + watermarks_per_s * m.watermark_disk_bytes
    out_bytes_per_s = calls_per_s * m.output_disk_bytes_per_call
    return {
        "nodes": nodes, "stacks": stacks, "interval_s": interval_s, "workers": workers, "partitions": partitions,
        "raw_records_per_s": calls_per_s + watermarks_per_s, "watermark_share": watermarks_per_s /
        (calls_per_s + watermarks_per_s),
        "raw_mb_per_s": raw_bytes_per_s / 1e6, "output_mb_per_s": out_bytes_per_s / 1e6,
        "raw_storage_gb": raw_bytes_per_s * DAY_S * m.raw_retention_days * m.replication / 1e9,
        "output_gb_per_day": out_bytes_per_s * DAY_S * m.replication / 1e9,
        "retained_gb_per_day": calls_per_s * m.retained_output_bytes_per_call * DAY_S * m.replication / 1e9,
        "max_nodes": max_nodes(m, interval_s),
    }


def table(m: Measured, fleets: tuple[int, ...], stacks: float, intervals_s: tuple[float, ...]) -> list[str]:
    lines = ["| nodes | watermark interval s | workers = partitions | raw records/s | of them watermarks | "
             "raw MB/s (compressed) | raw storage GB (retention x replicas) | outputs written GB/day | "
             "outputs kept for good, GB/day |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for nodes in fleets:
        for interval_s in intervals_s:
            p = plan(m, nodes, stacks, interval_s)
            if p["workers"] is None:
                lines.append(f"| {nodes:,} | {interval_s:g} | — past {p['max_nodes']:,.0f} nodes: one partition's "
                             f"watermarks fill a worker | | | | | | |")
                continue
            lines.append(f"| {nodes:,} | {interval_s:g} | {p['workers']:,} | {p['raw_records_per_s']:,.0f} | "
                         f"{p['watermark_share']:.0%} | {p['raw_mb_per_s']:,.1f} | {p['raw_storage_gb']:,.0f} | "
                         f"{p['output_gb_per_day']:,.0f} | {p['retained_gb_per_day']:,.0f} |")
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
            points = [(n, workers_needed(m, n, s, interval_s)) for n in nodes]
            shown = [(n, w) for n, w in points if w is not None]
            right.plot([n for n, _ in shown], [w for _, w in shown], style, marker="o",
                       label=f"S={s}, interval {interval_s:g} s")
        right.axvline(max_nodes(m, interval_s), color="grey", linestyle=style, linewidth=0.8)
    right.set(xscale="log", yscale="log", xlabel="nodes", ylabel="workers = raw partitions",
              title="Workers needed (vertical: where one partition's watermarks fill a worker)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=REPO / "docs" / "capacity-inputs.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "capacity.png")
    parser.add_argument("--stacks", type=float, default=50.0, help="distinct active stacks per node per interval")
    args = parser.parse_args(argv)
    measured = Measured.load(args.inputs)
    print("\n".join(table(measured, (1_000, 10_000, 50_000), args.stacks, (0.5, 2.0, 5.0, 30.0))))
    for interval_s in (0.5, 2.0, 5.0, 30.0):
        print(f"max nodes at {interval_s:g} s: {max_nodes(measured, interval_s):,.0f}")
    draw(measured, args.plot)
    print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
