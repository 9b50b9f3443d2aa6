"""Python-function targets in a running agent: find the interpreters (every process whose
executable or a mapped libpython carries CPython's USDT markers), attach their markers
once per file, and turn the calls the kernel reports into RuntimeCallEvent records.

Records are built at each collection (the collector's watermark tick): the calls of one
(probe, process, thread's first call, Python path) read since the last tick fold into one
record with their count, as the native program's dedup maps do.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from runtime_signals.agent.budget import Action, Budget, BudgetSettings
from runtime_signals.agent.clock import BootClock
from runtime_signals.agent.errors import ProbeError
from runtime_signals.agent.perfmap import JitModule
from runtime_signals.agent.probes import ProbeLimits
from runtime_signals.agent.processes import ProcessInfo
from runtime_signals.agent.pycalls import PythonCallNamer, call_record
from runtime_signals.agent.pyprobes import (
    AttachedPythonProbe,
    PythonCall,
    PythonProbeSpec,
    PythonTracer,
)
from runtime_signals.agent.selectors import TargetFilters
from runtime_signals.agent.stats import ProbeFigures
from runtime_signals.agent.wire import PythonProcess

log = logging.getLogger(__name__)

# Python paths remembered per probe and process, to tell a new one (the budget's signal).
MAX_REMEMBERED_PATHS = 1 << 16
_INTERPRETER = re.compile(r"(?:^|/)(?:lib)?python\d\.\d+[a-z]*(?:\.so[.\d]*)?$")


@dataclass(frozen=True, slots=True)
class BuiltRecord:
    record: dict[str, Any]
    calls: int


def interpreter_paths(proc: Path) -> list[str]:
    """Files of the process that may be a CPython interpreter: its executable, and any
    mapped libpythonX.Y.so (paths as the process sees them)."""
    found = []
    try:
        exe = str((proc / "exe").readlink())
        if _INTERPRETER.search(exe):
            found.append(exe)
        for line in (proc / "maps").read_text().splitlines():
            fields = line.split(None, 5)
            if len(fields) == 6 and "x" in fields[1] and _INTERPRETER.search(fields[5]):
                found.append(fields[5])
    except OSError:
        return []
    return sorted(set(found))


class PythonTargets:
    """Python probes of one agent: the tracer, the interpreter scan and the record builder."""

    def __init__(self, tracer: PythonTracer, namer: PythonCallNamer, describe: Callable[[int, int], ProcessInfo],
                 filters: TargetFilters, *, host: str, agent_id: str, proc_root: Path = Path("/proc"),
                 rescan_interval_ms: int = 10_000,
                 on_code_unit: Callable[[int, JitModule], None] | None = None,
                 describe_interpreter: Callable[[int], PythonProcess | None] | None = None,
                 budget: BudgetSettings | None = None) -> None:
        self._tracer = tracer
        self._namer = namer
        self._describe = describe
        self._filters = filters
        self._host = host
        self._agent_id = agent_id
        self._proc_root = proc_root
        self._rescan_s = rescan_interval_ms / 1000
        self._on_code_unit = on_code_unit  # each located frame: its module map entry and symbol table
        # A process's interpreter as the program walks its frames (agent/pyframes.py): its
        # return-site records then carry the Python path, not the function alone.
        self._describe_interpreter = describe_interpreter
        # The adaptive budget (agent/budget.py), as for native probes. Switching one probe off
        # saves its records; the markers' trap, which every Python call of the interpreter
        # pays, goes only when every probe is off: then the markers are detached.
        self._budget = Budget(budget or BudgetSettings(enabled=False))
        self._enabled: dict[int, bool] = {}
        self._limits: dict[int, ProbeLimits | None] = {}
        self._paths: LRUCache[tuple[Any, ...], bool] = LRUCache(MAX_REMEMBERED_PATHS)
        self._new_paths: Counter[int] = Counter()
        self._next_scan = 0.0
        self._clock = BootClock()
        self._pending: list[PythonCall] = []
        self._interpreters: dict[int, str] = {}  # pid -> interpreter file as it sees it
        self._without_markers: set[tuple[int, int]] = set()
        self.counts: Counter[str] = Counter()
        self.dropped_calls: Counter[str] = Counter()
        tracer.on_event(self._pending.append)

    @property
    def probes(self) -> list[AttachedPythonProbe]:
        return self._tracer.probes

    def add(self, spec: PythonProbeSpec, limits: ProbeLimits | None = None) -> AttachedPythonProbe:
        """A probe with the agent's rate limit (its dedup flag does not apply: calls are folded per tick)."""
        probe = self._tracer.add_probe(spec, limits)
        self._enabled[probe.index] = True
        self._limits[probe.index] = limits
        self._budget.track(probe.index, time.monotonic_ns())
        return probe

    def scan(self) -> int:
        """Attach the markers of interpreters not seen before; returns files attached."""
        attached = 0
        running: list[int] = []
        interpreter_pids: set[int] = set()
        for entry in os.scandir(self._proc_root):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            pid = int(entry.name)
            proc = Path(entry.path)
            for path in interpreter_paths(proc):
                interpreter_pids.add(pid)
                host_path = proc / "root" / path.lstrip("/")
                try:
                    st = os.stat(host_path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in self._without_markers:
                    continue
                try:
                    if self._tracer.attach_interpreter(host_path, path):
                        attached += 1
                        self._interpreters[pid] = path
                        running.append(pid)
                    else:
                        self._without_markers.add((st.st_dev, st.st_ino))
                        self.counts["interpreters_without_markers"] += 1
                except ProbeError as exc:
                    self.counts["attach_failed"] += 1
                    log.warning("python probes: %s", exc)
        # Processes running Python when the markers came on: their outer frames were entered unseen.
        self._tracer.mark_preexisting(running)
        self._describe_interpreters(interpreter_pids)
        self.counts["scans"] += 1
        return attached

    def _describe_interpreters(self, pids: set[int]) -> None:
        """Describe the interpreters of pids not described yet; forget those gone."""
        if self._describe_interpreter is None:
            return
        described = self._tracer.described_pids()
        for pid in described - pids:
            self._tracer.forget_pid(pid)
        for pid in sorted(pids - described):
            description = self._describe_interpreter(pid)
            if description is None:
                self.counts["interpreters_not_described"] += 1
            elif self._tracer.describe_process(pid, description):
                self.counts["interpreters_described"] += 1

    def poll(self) -> None:
        """Move what the kernel has sent into the pending calls (the pump calls this every
        turn, so the ring buffer empties between collections)."""
        self._tracer.drain()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Rescan for interpreters every rescan interval on a thread of its own: reading every
        process's maps must not hold up the event pump."""

        def loop() -> None:
            while not stop.wait(self._rescan_s):
                try:
                    self.scan()
                except Exception:  # a scan that fails is retried at the next interval
                    self.counts["scan_failed"] += 1
                    log.exception("python probes: scanning for interpreters failed")

        thread = threading.Thread(target=loop, name="python-targets", daemon=True)
        thread.start()
        return thread

    def collect(self) -> list[BuiltRecord]:
        """Every Python call read so far, folded and built into records."""
        self._tracer.drain()
        calls, self._pending[:] = list(self._pending), []
        folded: dict[tuple[Any, ...], tuple[PythonCall, int, int]] = {}
        for call in calls:
            key = (call.probe_index, call.pid, call.flags, call.filename, call.funcname, call.lineno, call.frames)
            first, count, last_ns = folded.get(key, (call, 0, call.boot_ns))
            folded[key] = (first, count + 1, max(last_ns, call.boot_ns))
        for key in folded:
            path = (key[0], key[1], key[6])  # probe, process, Python path
            if self._paths.get(path) is None:
                self._paths[path] = True
                self._new_paths[key[0]] += 1
        built = []
        for first, count, last_ns in folded.values():
            try:
                record = self._build(first, count, last_ns)
            except Exception:  # a bad record is counted and logged; it never stops the pump
                self.dropped_calls["agent_error"] += count
                log.exception("building the record of %d Python call(s) of pid %d failed", count, first.pid)
                continue
            if record is not None:
                built.append(BuiltRecord(record, count))
        return built

    def _build(self, call: PythonCall, count: int, last_ns: int) -> dict[str, Any] | None:
        probe = self._tracer.probes[call.probe_index]
        process = self._describe(call.pid, call.cgroup_id)
        if not self._filters.accepts(probe.spec.probe_id, process):
            self.dropped_calls["not_selected"] += count
            return None
        frames = self._namer.frames(call, self._interpreters.get(call.pid))
        if not self._namer.selects(probe.spec, frames[-1]):
            # The kernel compared co_name only: another function of that name. Not a loss.
            self.dropped_calls["not_selected"] += count
            return None
        if self._on_code_unit is not None:
            for frame in frames:
                if frame.binary_digest is not None:
                    name = frame.signature or frame.qualname or frame.path
                    self._on_code_unit(call.pid, JitModule(0, 0, name, frame.path, frame.binary_digest, frame.purl,
                                                           "python-code"))
        return call_record(call, count, frames, probe.spec, container_id=process.container_id, host=self._host,
                           agent_id=self._agent_id, wall_us=self._clock.wall_us(call.boot_ns), last_boot_ns=last_ns)

    def apply_budget(self, now_ns: int) -> None:
        """Switch off probes whose calls are well known, on again after their back-off; the
        markers go when every probe is off and come back with the first one re-armed."""
        for probe in self._tracer.probes:
            calls = self._tracer.probe_counters(probe)["calls"]
            action = self._budget.observe(probe.index, now_ns, calls, self._new_paths.pop(probe.index, 0))
            if action is Action.DETACH:
                self._set_enabled(probe, False)
                log.info("budget: switched off %s (no new Python path for %.0fs)", probe.spec.probe_id,
                         self._budget.settings.quiet_ns / 1e9)
            elif action is Action.REARM:
                try:
                    self._set_enabled(probe, True)
                    log.info("budget: switched on %s", probe.spec.probe_id)
                except ProbeError as exc:
                    self._budget.rearm_failed(probe.index, now_ns)
                    log.error("budget: switching on %s failed, retrying later: %s", probe.spec.probe_id, exc)

    def _set_enabled(self, probe: AttachedPythonProbe, enabled: bool) -> None:
        if enabled and not self._tracer.markers_attached:
            self._tracer.reattach_markers()
        self._tracer.set_enabled(probe, enabled, self._limits.get(probe.index))
        self._enabled[probe.index] = enabled
        if not any(self._enabled.values()) and self._tracer.markers_attached:
            self._tracer.detach_markers()
            self.counts["markers_detached"] += 1
            log.info("budget: every Python probe is off: the markers are detached until one is on again")

    def probe_figures(self, now_ns: int) -> list[ProbeFigures]:
        """Each Python probe's figures for SignalStatistics, as the native probes' are: a
        probe switched off by the budget is not watched (its calls are not recorded)."""
        figures = []
        for probe in self._tracer.probes:
            state = self._budget.state(probe.index)
            figures.append(ProbeFigures(probe.spec.probe_id, self._enabled.get(probe.index, False),
                                        self._tracer.probe_counters(probe)["calls"],
                                        self._budget.detached_ns(probe.index, now_ns),
                                        state.detach_count if state else 0))
        return figures

    def kernel_counters(self) -> dict[str, dict[str, int]]:
        return {probe.spec.probe_id: self._tracer.probe_counters(probe) for probe in self._tracer.probes}

    def kernel_totals(self) -> dict[str, int]:
        """The Python probes' kernel counters in the native program's names, so the agent's
        statistics add up over both programs: a call the kernel dropped for a switched-off
        probe appears as dropped "probe_disabled"."""
        totals: Counter[str] = Counter()
        for counters in self.kernel_counters().values():
            totals["calls"] += counters["calls"]
            totals["hits"] += counters["calls"]
            totals["drop_ringbuf_full"] += counters["drop_ringbuf_full"]
            totals["drop_rate_limited"] += counters["drop_rate_limited"]
            self.dropped_calls["probe_disabled"] = counters["drop_disabled"]
        return dict(totals)

    def stop(self) -> None:
        self._tracer.detach_markers()

    def close(self) -> None:
        self._tracer.close()
