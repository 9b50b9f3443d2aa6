"""Uprobe events defined in tracefs, for their kernel hit counters.

The agent attaches its program to a perf event opened on a tracefs uprobe event (not an
anonymous uprobe PMU event) because tracefs keeps an exact hit count per event
(uprobe_profile: every trap into the uprobe, counted by the kernel before any program
runs). The breakpoint outlives the program when a probe is detached: unlinking the
program is immediate, but the kernel removes the breakpoint only after RCU grace periods,
~100 ms later, and calls in between trap without running the program. Attaching has a
similar, shorter gap. Those calls are invisible to the program but not to the hit count:
hits - calls the program counted = calls lost in transitions, exactly.

Events are named rsig_<agent pid>_<probe index> in group rsig_<agent pid>; events left by
an agent that died are removed at start.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path

from runtime_signals.agent.errors import ProbeError

log = logging.getLogger(__name__)

_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
_GROUP = re.compile(r"rsig_(\d+)$")


def tracefs_root() -> Path:
    for root in _MOUNTS:
        if (root / "uprobe_events").exists():
            return root
    raise ProbeError("no tracefs with uprobe_events (mount tracefs on /sys/kernel/tracing; the kernel needs "
                     "CONFIG_UPROBE_EVENTS)")


class UprobeEvents:
    """The tracefs uprobe events of this agent process."""

    def __init__(self, root: Path | None = None, owner_pid: int | None = None, name_prefix: str = "") -> None:
        self.root = root or tracefs_root()
        self.owner_pid = owner_pid or os.getpid()
        self.group = f"rsig_{self.owner_pid}"
        # Tells apart the events of the agent's programs in its one group ("ld" for the loader
        # hooks of agent/loadwatch.py, a prefix for the Python markers, "" for the probes).
        self.name_prefix = name_prefix
        self._names: dict[int, str] = {}
        self.remove_stale()

    def create(self, index: int, path: str, file_offset: int, ref_ctr_offset: int = 0) -> int:
        """Define the event for probe `index` at file_offset of path; returns its tracefs id.
        ref_ctr_offset: file offset of a USDT semaphore, which the kernel then raises in
        every process mapping the file while the event is in use (and lowers after)."""
        if any(c.isspace() for c in path):
            raise ProbeError(f"{path}: tracefs cannot name a file whose path holds whitespace")
        name = f"{self.group}_{self.name_prefix}{index}"
        ref_ctr = f"(0x{ref_ctr_offset:x})" if ref_ctr_offset else ""
        self._write(f"p:{self.group}/{name} {path}:0x{file_offset:x}{ref_ctr}",
                    f"defining uprobe {path}+0x{file_offset:x}{ref_ctr}")
        self._names[index] = name
        try:
            return int((self.root / "events" / self.group / name / "id").read_text())
        except (OSError, ValueError) as exc:
            raise ProbeError(f"tracefs event {self.group}/{name} has no readable id: {exc}") from exc

    def hits(self) -> dict[int, int]:
        """Kernel hit count of each of this agent's events, by probe index."""
        by_name = {name: index for index, name in self._names.items()}
        counts: dict[int, int] = {}
        try:
            text = (self.root / "uprobe_profile").read_text()
        except OSError:
            return counts
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[-2] in by_name:
                counts[by_name[fields[-2]]] = int(fields[-1])
        return counts

    def remove(self, index: int, timeout_s: float = 5.0) -> bool:
        """Delete probe index's event once no perf event uses it; whether it is gone."""
        name = self._names.get(index)
        if name is None or not self._remove(name, timeout_s):
            return False
        del self._names[index]
        return True

    def remove_all(self, timeout_s: float = 5.0) -> None:
        """Delete this agent's events once no perf event uses them any more."""
        for index in list(self._names):
            self.remove(index, timeout_s)

    def _remove(self, name: str, timeout_s: float, group: str | None = None) -> bool:
        # Closed perf events let go of the event after RCU grace periods: EBUSY meanwhile.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._write(f"-:{group or self.group}/{name}", f"removing uprobe event {name}")
                return True
            except ProbeError as exc:
                if not isinstance(exc.__cause__, OSError) or exc.__cause__.errno != errno.EBUSY:
                    log.warning("%s", exc)
                    return False
                if time.monotonic() >= deadline:
                    (log.warning if timeout_s else log.debug)("uprobe event %s still busy after %.0fs; left in "
                                                              "tracefs", name, timeout_s)
                    return False
                time.sleep(0.05)

    def remove_stale(self, timeout_s: float = 0.0) -> None:
        """Delete events of agents that are no longer running (a crash leaves them behind).
        An event still in use (a dead agent's probe pinned in bpffs, agent/pinning.py) is
        left until that probe is taken over: tried once at start, again after adoption."""
        events = self.root / "events"
        for group_dir in events.glob("rsig_*"):
            match = _GROUP.match(group_dir.name)
            if not match or Path(f"/proc/{match.group(1)}").exists():
                continue
            try:
                names = [e.name for e in os.scandir(group_dir) if e.is_dir()]
            except FileNotFoundError:
                continue  # removed meanwhile (another agent on the node cleaning up too)
            for name in names:
                self._remove(name, timeout_s, group=group_dir.name)

    def _write(self, line: str, what: str) -> None:
        try:
            fd = os.open(self.root / "uprobe_events", os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise ProbeError(f"{what} in {self.root / 'uprobe_events'} failed: {exc.strerror} "
                             f"(see {self.root / 'error_log'})") from exc
