"""results.json -> a markdown table (results.md) and the scaling plot (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _failed(section: dict[str, Any] | None, title: str) -> list[str] | None:
    if section is None:
        return [f"## {title}", "", "not run", ""]
    if "error" in section:
        return [f"## {title}", "", f"FAILED: {section['error']}", ""]
    return None


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Benchmark results", "",
        f"{meta['date']} · `{meta['command']}` · {meta['cpus']} CPUs ({meta['cpu_model']}), "
        f"{meta['memory_gib']} GiB, Linux {meta['kernel']}, Python {meta['python']} · commit "
        f"{meta['commit']}{' (tree modified)' if meta['tree_dirty'] else ''} · "
        f"{meta.get('duration_s', 0):.0f} s · load average {meta['load_average_start'][0]:.1f} at the start, "
        f"{meta.get('load_average_end', [0])[0]:.1f} at the end"
        + (" · QUICK: toy sizes, the figures mean nothing" if meta["quick"] else ""), "",
    ]
    lines += _probe(results.get("probe_agent")) + _unwind(results.get("unwind")) + _hot(results.get("hot"))
    lines += _agent(results.get("probe_agent")) + _processor(results.get("processor"))
    lines += _latency(results.get("latency")) + _watch(results.get("watch"))
    if "python_probe" in results:
        from .python_probe import markdown as python_probe_markdown

        lines += python_probe_markdown(results["python_probe"])
    lines += _windows(results.get("windows"))
    if "fleet" in results and "error" not in results["fleet"]:
        from .fleet_bench import markdown as fleet_markdown

        lines += fleet_markdown(results["fleet"])
    return "\n".join(lines)


def _probe(section: dict[str, Any] | None) -> list[str]:
    title = "1. Probe cost per call (floor: a no-op uprobe that only counts)"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    rows = [[_f(r["calls"]), _f(r["unprobed_ns_per_call"], 1), _f(r["noop_ns_per_call"]),
             _f(r["full_ns_per_call"]), _f(r["cost_ratio"], 2)] for r in section["rows"] if r.get("paths", 1) == 1]
    leaf = section["leaf"]
    rows.append([f"{_f(leaf['calls'])} (leaf: single-stepped)", _f(leaf["unprobed_ns_per_call"], 1),
                 _f(leaf["noop_ns_per_call"]), _f(leaf["full_ns_per_call"]), _f(leaf["cost_ratio"], 2)])
    return [f"## {title}", "", f"Agent flags: `{' '.join(section['agent_flags']) or '(defaults)'}`; median of " f"{section['rows'][0]['repeats']} runs; every call went through the ring buffer " f"({_f(section['call_events_on_topic'])} call events on the raw topic for " f"{_f(section['calls_sent'])} calls; kernel counters {section['kernel_counters']}).", "", *_table(["calls per run", "unprobed ns/call", "no-op uprobe ns/call", "full probe ns/call", "(full − unprobed) / (no-op − unprobed)"], rows)]


def _unwind(section: dict[str, Any] | None) -> list[str]:
    title = "1c. Stack walk cost per call, 17 frames: frame pointers and CFI rules vs `stackcount -U`"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    rows = [[r["build"], _f(r["unprobed_ns_per_call"], 1), _f(r["noop_ns_per_call"]),
             _f(r["stackcount_ns_per_call"]), _f(r["agent_ns_per_call"]), _f(r["stackcount_vs_floor"], 2),
             _f(r["agent_vs_floor"], 2), _f(r["agent_vs_stackcount"], 2),
             "; ".join(f"{k}: {_f(v)}" for k, v in r.get("reported_frames_and_end", {}).items())]
            for r in section["rows"]]
    lines = [f"## {title}", "", f"{_f(section['calls'])} calls per run, median of {section['repeats']} runs; "
             "ratios are (probed - unprobed) / (floor - unprobed).", ""]
    lines += _table(["build", "unprobed ns", "no-op ns", "stackcount -U ns", "agent ns", "stackcount / no-op",
                     "agent / no-op", "agent / stackcount", "agent's paths (calls)"], rows)
    rules = [[r["binary"], _f(r.get("file_bytes")), _f(r.get("fdes")), _f(r.get("rows")), _f(r.get("row_bytes")),
              _f(r.get("build_s"), 1), r.get("error") or ""] for r in section["rules"]]
    if not section["rules"]:
        return lines
    lines += ["Unwind rules per binary (built once per digest, by a child interpreter of the agent):", ""]
    lines += _table(["binary", "file bytes", "FDEs", "rows", "map bytes", "build s", "note"], rules)
    return lines


def _hot(section: dict[str, Any] | None) -> list[str]:
    title = "1b. A hot function under the agent's overhead controls"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    rows = []
    for r in section["rows"]:
        if "skipped" in r:
            rows.append([r["mode"], r["skipped"]] + [""] * 8)
            continue
        ratio = (r["probed_ns_per_call"] - r["unprobed_ns_per_call"]) / max(
            r["noop_ns_per_call"] - r["unprobed_ns_per_call"], 1e-9)
        rows.append([r["mode"], _f(r["unprobed_calls_per_s"] / 1e6, 2), _f(r["slowdown_percent"]),
                     _f(r["noop_slowdown_percent"]), _f(ratio, 2), f"{r['paths_reported']}/{r['paths']}",
                     f"{_f(r['calls_reported'])} / {_f(r['calls'])}", _f(r["records"]),
                     f"after {r['attached_s_before_detach']:.1f} s of {r['probed_run_s']:.1f} s"
                     if r["budget_detached"] else "no", _f(r.get("second_run_slowdown_percent"))])
    return [f"## {title}", "", f"{section['paths']} call paths, {_f(section['calls_per_run'])} calls per run; slowdown = " "(probed − unprobed) / unprobed time of the whole run.", "", *_table(["mode", "unprobed M calls/s", "slowdown %", "no-op uprobe slowdown %", "(probed − unprobed) / (no-op − unprobed)", "paths reported", "calls reported / made", "raw records", "budget detached the probe", "slowdown % of a second run (probe detached)"], rows)]


def _agent(section: dict[str, Any] | None) -> list[str]:
    title = "2. Agent throughput (floor: encode + produce the same records)"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    rows = [[_f(r["calls"]), _f(r.get("paths", 1)), _f(r["agent_events_per_s"]), _f(r["floor_events_per_s"]),
             _f(r["agent_vs_floor"], 2), _f(r["agent_cpu_s_per_million"], 1),
             _f(r["floor_cpu_s_per_million"], 1)] for r in section["rows"]]
    return [f"## {title}", "", *_table(["events", "distinct stacks", "agent events/s", "floor events/s", "agent / floor",
                                        "agent CPU s per M events", "floor CPU s per M events"], rows)]


def _processor(section: dict[str, Any] | None) -> list[str]:
    title = "3. Processor throughput (floor: consume + decode the same records) and memory"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    timed = [r for r in section["rows"] if r["kind"] != "memory"]
    rows = [[r["kind"], _f(r["workers"]), _f(r["events"]), _f(r["containers"]), _f(r["paths"]),
             _f(r["events_per_s"]), _f(r["floor_events_per_s"]), _f(r["worker_vs_floor"], 2),
             _f(r.get("engine_events_per_s")), _f(r["worker_cpu_s_per_million"], 1),
             _f(r.get("floor_cpu_s_per_million"), 1), _f(r["peak_rss_bytes"] / MIB, 1)] for r in timed]
    memory = [[_f(r["distinct_paths_per_window"]), _f(r["events"]), _f(r["windows"]),
               f"{_f(r['containers'])} × {_f(r['paths'])}", _f(r["peak_rss_bytes"] / MIB, 1),
               _f(r["rss_bytes"] / MIB, 1)] for r in section["rows"] if r["kind"] == "memory"]
    flags = " ".join(section.get("worker_flags", [])) or "(defaults)"
    return [f"## {title}", "", f"{section['partitions']} raw partitions, {section['window_ms']} ms windows, worker flags `{flags}`; " "time from the first record produced to the last window's summary; engine = " "processor.engine.Engine in-process, no Kafka. Peak RSS here includes the consumer's " "backlog (records are produced faster than one worker takes them).", "", *_table(["stage", "workers", "events", "containers", "paths per container", "worker events/s", "floor events/s", "worker / floor", "engine events/s", "worker CPU s per M", "floor CPU s per M", "peak RSS MiB"], rows), "Memory of a fresh worker against the paths it holds: one window produced at a time (then its " "summaries awaited), so no backlog builds up.", "", *_table(["distinct paths per window", "events", "windows", "containers × paths", "peak RSS MiB", "RSS at the end MiB"], memory)]


def _latency(section: dict[str, Any] | None) -> list[str]:
    title = "4. End-to-end latency: call → its closed window's summary"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    rows = [[_f(r["rate_per_s"]), _f(r["calls"]), _f(r["p50_ms"]), _f(r["p99_ms"]),
             _f(r["p50_minus_window_ms"]), _f(r["p99_minus_window_ms"]), _f(r["after_close_p50_ms"]),
             _f(r["after_close_p99_ms"])] for r in section["rows"]]
    floor_ms = section["allowed_lateness_ms"] + section["watermark_interval_ms"]
    return [f"## {title}", "", f"{section['window_ms']} ms windows, {section['allowed_lateness_ms']} ms allowed lateness, agent " f"watermarks every {section['watermark_interval_ms']} ms: a window cannot close before " f"lateness + up to one watermark interval after its end ({floor_ms} ms at most).", "", *_table(["calls/s", "calls", "p50 ms", "p99 ms", "p50 − window ms", "p99 − window ms", "after window end p50 ms", "after window end p99 ms"], rows)]


def _watch(section: dict[str, Any] | None) -> list[str]:
    title = "5. First (provisional) answer: call → its line in `signals watch`"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    return [f"## {title}", "", f"Agent defaults (in-kernel dedup, watermarks every {section['watermark_interval_ms']} ms: a call is " f"sent when its interval ends), no processor: the floor is one interval. Start-up: the time " f"`signals watch` took to read the symbols and modules topics and reach the raw topic.", "", *_table(["calls/s", "calls", "lines", "p50 ms", "p99 ms", "max ms", "after 2 s: p50 ms", "after 2 s: p99 ms", "watch start-up s"], [[_f(section["rate_per_s"]), _f(section["calls"]), _f(section["lines"]), _f(section["p50_ms"]), _f(section["p99_ms"]), _f(section["max_ms"]), _f(section["steady_p50_ms"]), _f(section["steady_p99_ms"]), _f(section["watch_startup_s"], 1)]])]


def _windows(section: dict[str, Any] | None) -> list[str]:
    title = "6. Window attribution: each call in its own window"
    failed = _failed(section, title)
    if failed:
        return failed
    assert section is not None
    rows = [[_f(section["calls"]), _f(section["windows"]), _f(section["raw_records"]),
             _f(section["records_spanning_windows"]), _f(section["calls_in_spanning_records"]),
             _f(section["calls_in_another_window"]), _f(section["calls_within_1ms_of_a_boundary"])]]
    return [f"## {title}", "", f"{section['window_ms']} ms windows, agent flushes every {section['watermark_interval_ms']} ms, " f"paced calls on a few stacks (folded in the kernel). Floor: 0 records spanning a window; calls " f"counted in another window than their own clock's at most the calls stamped within 1 ms of a " f"boundary.", "", *_table(["calls", "windows", "raw records", "records spanning windows", "calls in them", "calls in another window", "calls within 1 ms of a boundary"], rows)]


def plot(results: dict[str, Any], path: Path) -> None:
    """Six panels: how each cost grows with the work."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(16, 9))
    panels = [_plot_probe, _plot_agent, _plot_processor_events, _plot_processor_containers,
              _plot_memory, _plot_latency]
    for axis, panel in zip(axes.flat, panels, strict=False):
        try:
            panel(axis, results)
        except (KeyError, TypeError, ValueError) as exc:  # a stage not run or failed
            axis.set_title(panel.__name__.removeprefix("_plot_").replace("_", " "))
            axis.text(0.5, 0.5, f"no data ({type(exc).__name__}: {exc})"[:80], ha="center", transform=axis.transAxes)
        axis.grid(True, alpha=0.3)
    meta = results["meta"]
    figure.suptitle(f"runtime-signals benchmarks · {meta['date']} · {meta['cpus']} CPUs, {meta['memory_gib']} GiB"
                    + (" · QUICK (toy sizes)" if meta["quick"] else ""))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_probe(axis: Any, results: dict[str, Any]) -> None:
    rows = [r for r in results["probe_agent"]["rows"] if r.get("paths", 1) == 1]
    calls = [r["calls"] for r in rows]
    for key, label in (("unprobed_ns_per_call", "unprobed"), ("noop_ns_per_call", "no-op uprobe (floor)"),
                       ("full_ns_per_call", "agent's full probe")):
        axis.plot(calls, [r[key] for r in rows], marker="o", label=label)
    axis.set(xscale="log", yscale="log", xlabel="calls per run", ylabel="ns per call",
             title="1. probe cost per call")
    axis.legend()


def _plot_agent(axis: Any, results: dict[str, Any]) -> None:
    rows = [r for r in results["probe_agent"]["rows"] if r.get("paths", 1) == 1]
    events = [r["calls"] for r in rows]
    axis.plot(events, [r["agent_events_per_s"] for r in rows], marker="o", label="agent")
    distinct = [r for r in results["probe_agent"]["rows"] if r.get("paths", 1) > 1]
    if distinct:
        axis.plot([r["calls"] for r in distinct], [r["agent_events_per_s"] for r in distinct], marker="^",
                  label=f"agent, {distinct[0]['paths']:,} distinct stacks")
    axis.plot(events, [r["floor_events_per_s"] for r in rows], marker="s", label="floor: encode + produce")
    axis.set(xscale="log", yscale="log", xlabel="events per run", ylabel="events/s", title="2. agent throughput")
    axis.legend()


def _plot_processor_events(axis: Any, results: dict[str, Any]) -> None:
    rows = [r for r in results["processor"]["rows"] if r["kind"] == "throughput"]
    for workers in sorted({r["workers"] for r in rows}):
        mine = [r for r in rows if r["workers"] == workers]
        events = [r["events"] for r in mine]
        axis.plot(events, [r["events_per_s"] for r in mine], marker="o", label=f"{workers} worker(s)")
        axis.plot(events, [r["floor_events_per_s"] for r in mine], marker="s", linestyle="--",
                  label=f"floor: {workers} consume + decode")
        if workers == 1:
            axis.plot(events, [r["engine_events_per_s"] for r in mine], marker="^", linestyle=":",
                      label="Engine in-process")
    axis.set(xscale="log", yscale="log", xlabel="events", ylabel="events/s", title="3. processor throughput")
    axis.legend(fontsize="small")


def _plot_processor_containers(axis: Any, results: dict[str, Any]) -> None:
    rows = [r for r in results["processor"]["rows"] if r["kind"] == "containers"]
    containers = [r["containers"] for r in rows]
    axis.plot(containers, [r["events_per_s"] for r in rows], marker="o", label="1 worker")
    axis.plot(containers, [r["floor_events_per_s"] for r in rows], marker="s", linestyle="--",
              label="floor: consume + decode")
    axis.set(xscale="log", yscale="log", xlabel="containers (same events)", ylabel="events/s",
             title="3. processor throughput vs containers")
    axis.legend()


def _plot_memory(axis: Any, results: dict[str, Any]) -> None:
    rows = [r for r in results["processor"]["rows"] if r["kind"] == "memory"]
    for row in rows:
        axis.scatter(row["distinct_paths_per_window"], row["peak_rss_bytes"] / MIB,
                     s=30 + 60 * (row["events"] / max(r["events"] for r in rows)))
        axis.annotate(f"{row['events']:,} events", (row["distinct_paths_per_window"], row["peak_rss_bytes"] / MIB),
                      textcoords="offset points", xytext=(6, -10), fontsize="small")
    axis.set(xscale="log", xlabel="distinct call paths per window", ylabel="worker peak RSS (MiB)",
             title="3. processor memory vs paths (not events)")


def _plot_latency(axis: Any, results: dict[str, Any]) -> None:
    section = results["latency"]
    rows = section["rows"]
    rates = [r["rate_per_s"] for r in rows]
    axis.plot(rates, [r["p50_ms"] for r in rows], marker="o", label="p50")
    axis.plot(rates, [r["p99_ms"] for r in rows], marker="s", label="p99")
    axis.axhline(section["window_ms"], color="grey", linestyle=":", label="window length")
    axis.set(xscale="log", xlabel="calls/s", ylabel="call → summary (ms)", title="4. end-to-end latency")
    axis.legend()
