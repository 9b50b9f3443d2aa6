"""Cost per Python function call of the Python-function probes (bpf/pyfunc.bpf.c), against
the same interpreter and code unprobed (issue 14, point 6).

Four runs of benchmarks/targets/pyloop.py on Debian's python3.11 (the interpreter here with
USDT markers), each a loop of N calls of a one-line function:
  - unprobed: no marker attached, the semaphores are 0 and the markers are skipped;
  - no-op marker (floor): a program that only counts, on the function__return marker the
    probes use (its semaphore raised): the trap every Python call then pays;
  - attached, other function: the probe program on the marker, filtering for a function
    the loop never calls: what every Python call of every process pays while a Python
    probe is attached anywhere;
  - probed: the probe matches the looped function: every call is recorded and read.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .native import NOOP_SOURCE
from .procs import BenchmarkError

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "targets" / "pyloop.py"
PYTHON = Path("/usr/bin/python3.11")


@dataclass(frozen=True)
class PythonProbePlan:
    calls: int = 200_000
    repeats: int = 3


def _timed(calls: int) -> tuple[float, subprocess.Popen[str]]:
    process = subprocess.Popen([str(PYTHON), str(WORKLOAD), str(calls)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("calls="):
        process.kill()
        raise BenchmarkError(f"{WORKLOAD} printed {line!r} instead of its timing")
    fields = dict(part.split("=", 1) for part in line.split())
    return float(fields["ns_per_call"]), process


def _release(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    process.wait(30)


def _median_ns(calls: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        ns, process = _timed(calls)
        _release(process)
        runs.append(ns)
    return statistics.median(runs)


class _NoopMarker:
    """noop.bpf.c on function__return, through a tracefs event with the semaphore."""

    def __init__(self, marker_offset: int, semaphore_offset: int) -> None:
        import bcc

        from runtime_signals.agent import bpfsys
        from runtime_signals.agent.tracefs import UprobeEvents

        self._bpf = bcc.BPF(src_file=str(NOOP_SOURCE).encode())
        fd = self._bpf.load_func(b"on_call", bcc.BPF.KPROBE).fd
        self._events = UprobeEvents(name_prefix="benchnoop")
        event_id = self._events.create(0, str(PYTHON), marker_offset, semaphore_offset)
        self._link = bpfsys.attach_trace_event(fd, event_id, 0, "no-op on python:function__return")

    def close(self) -> None:
        self._link.close()
        self._events.remove_all()
        self._bpf.cleanup()


def run(plan: PythonProbePlan) -> dict[str, Any]:
    from runtime_signals.agent.pyprobes import (
        PythonProbeSpec,
        PythonTracer,
        interpreter_markers,
    )

    markers = interpreter_markers(PYTHON) if PYTHON.exists() else {}
    if not markers:
        # Not a failure of the code under test: this host has nothing to measure it on.
        return {"skipped": f"{PYTHON} with USDT function markers is not installed (Debian 12's python3.11 has them)"}
    result: dict[str, Any] = {"interpreter": str(PYTHON), "calls": plan.calls, "repeats": plan.repeats}
    result["unprobed_ns_per_call"] = _median_ns(plan.calls, plan.repeats)

    marker = markers["function__return"]
    noop = _NoopMarker(marker.file_offset, marker.semaphore_file_offset)
    try:
        result["noop_ns_per_call"] = _median_ns(plan.calls, plan.repeats)
    finally:
        noop.close()

    tracer = PythonTracer()
    received = [0]
    tracer.on_event(lambda _call: received.__setitem__(0, received[0] + 1))
    try:
        other = tracer.add_probe(PythonProbeSpec.parse("python:pyloop:never_called"))
        tracer.attach_interpreter(PYTHON)
        result["attached_other_ns_per_call"] = _median_ns(plan.calls, plan.repeats)
        tracer.set_enabled(other, False)
        probed = tracer.add_probe(PythonProbeSpec.parse("python:pyloop:work"))
        stop = threading.Event()
        reader = threading.Thread(target=lambda: [tracer.poll(50) for _ in iter(stop.is_set, True)], daemon=True)
        reader.start()
        runs = []
        for _ in range(plan.repeats):
            ns, process = _timed(plan.calls)
            runs.append(ns)
            _release(process)
        stop.set()
        reader.join(5)
        tracer.drain()
        result["probed_ns_per_call"] = statistics.median(runs)
        result["probed_kernel_counters"] = tracer.probe_counters(probed)
        result["records_read"] = received[0]
        result["marker_counters"] = tracer.global_counters()
    finally:
        tracer.close()
    floor = result["noop_ns_per_call"] - result["unprobed_ns_per_call"]
    result["attached_extra_ns_per_call"] = result["attached_other_ns_per_call"] - result["unprobed_ns_per_call"]
    result["probed_extra_ns_per_call"] = result["probed_ns_per_call"] - result["unprobed_ns_per_call"]
    result["attached_over_floor"] = result["attached_extra_ns_per_call"] / floor if floor > 0 else None
    return result


def markdown(section: dict[str, Any] | None) -> list[str]:
    title = "5. Python-function probes: cost per Python call (floor: a no-op program on the same marker)"
    if section is None:
        return [f"## {title}", "", "not run", ""]
    if "error" in section:
        return [f"## {title}", "", f"FAILED: {section['error']}", ""]
    if "skipped" in section:
        return [f"## {title}", "", f"skipped: {section['skipped']}", ""]
    counters = section["probed_kernel_counters"]
    intro = (f"{section['interpreter']}, {section['calls']:,} calls of a one-line function per run, median of "
             f"{section['repeats']} runs. Probed run: kernel counters {counters}, {section['records_read']:,} "
             "records read.")
    header = ("| unprobed ns/call | no-op marker ns/call | attached (other function) ns/call | probed ns/call "
              "| attached extra / no-op extra |")
    row = (f"| {section['unprobed_ns_per_call']:,.1f} | {section['noop_ns_per_call']:,.0f} | "
           f"{section['attached_other_ns_per_call']:,.0f} | {section['probed_ns_per_call']:,.0f} | "
           f"{section['attached_over_floor'] or 0:.2f} |")
    return [f"## {title}", "", intro, "", header, "|---:|---:|---:|---:|---:|", row, ""]
