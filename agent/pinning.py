"""What a killed agent leaves in the kernel, kept and taken over: maps and probe links
pinned in bpffs (/sys/fs/bpf/runtime-signals/<agent>/).

While the agent runs, its ring buffer, counters and dedup maps and every probe's BPF link
are pinned. A clean stop removes the pins (the probes detach, the maps are freed). A
SIGKILL, an OOM kill or a crash leaves them: the kernel keeps running the program, counting
every call and folding it into the dedup maps (or the ring buffer, until it is full, which
is counted too). The next agent of the same identity (agent/state.py) opens the pins
(PinnedGeneration), closes each old link once its own uprobe event on the same function
counts hits and before its program runs there (agent/bpfsys.attach_trace_event), so
every call is the old program's, the new one's, or a hit counted as probe_transition:
never both, never none. Then it reads what the old program collected (ring buffer, both
dedup maps) and its final counters, and removes the pins.

What this cannot keep: a node reboot empties bpffs (the agent then counts what the last
state said was not delivered as lost_at_restart and the time it was down as not watched).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime_signals.agent import bpfsys
from runtime_signals.agent.errors import BpfLoadError
from runtime_signals.agent.wire import COUNTER_NAMES

log = logging.getLogger(__name__)

PIN_ROOT = Path("/sys/fs/bpf/runtime-signals")
# The maps a new agent needs from an old one: what it collected and what it counted.
# The other maps of calltrace.bpf.c (probe_config, flush_clock, dedup_active, the unwind maps
# unwind_rows/unwind_tables/proc_mappings, announced, rate_state, scratch) are not pinned:
# the old program holds a reference to each, so they live as long as its pinned links, and
# the new agent never reads them (its own program has its own). While no agent runs they are
# not updated: the flush clock keeps its last NTP offset, and processes started meanwhile get
# no unwind rules (their walks fall back to frame pointers and say so in truncation_reason).
PINNED_MAPS = ("events", "counters", "dedup_a", "dedup_b")
_CPUS = os.cpu_count() or 1


def pin_directory(agent_id: str, root: Path = PIN_ROOT) -> Path:
    """Where the agent of this identity pins its objects (one directory per identity)."""
    return root / re.sub(r"[^A-Za-z0-9_.-]", "_", agent_id)


def remove_pins(directory: Path) -> None:
    """Remove a pin directory (each pin is a reference: the objects go with the last one),
    and its identity's directory once no run of it is left."""
    shutil.rmtree(directory, ignore_errors=True)
    try:
        directory.parent.rmdir()
    except OSError:
        pass  # another run of the identity, or not empty for another reason


def run_directory(agent_id: str, restarts: int, root: Path = PIN_ROOT) -> Path:
    """The pins of this agent process: its identity's directory, run number and pid (bpffs
    holds only pins and directories, so the owner is in the name)."""
    return pin_directory(agent_id, root) / f"run-{restarts}-{os.getpid()}"


_RUN = re.compile(r"run-\d+-(\d+)$")


def abandoned_generations(root: Path = PIN_ROOT, keep: tuple[Path, ...] = (),
                          max_age_s: float = 600.0) -> list[Path]:
    """Pin directories whose agent process is gone and that none took over for max_age_s:
    their probes would slow every probed call forever. A killed agent restarts within
    seconds (a DaemonSet's back-off stays under 5 minutes) and takes its own over first.
    A directory not named by run_directory is not judged (left alone)."""
    found = []
    for directory in root.glob("*/run-*"):
        match = _RUN.match(directory.name)
        if directory in keep or match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        try:
            age_s = time.time() - directory.stat().st_mtime
        except OSError:
            continue
        if age_s > max_age_s:
            found.append(directory)
    return found


def possible_cpus() -> int:
    """CPUs a per-CPU map holds a value for (the kernel's possible CPUs, not the online ones)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return _CPUS
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def read_percpu_counters(fd: int, probes: list[int]) -> dict[int, dict[str, int]]:
    """The calltrace counters (enum calltrace_counter) of each probe index, summed over CPUs,
    from the counters map's fd."""
    cpus = possible_cpus()
    values = (ctypes.c_uint64 * cpus)()
    found: dict[int, dict[str, int]] = {}
    lib = _lib()
    for probe in probes:
        counters = {}
        for i, name in enumerate(COUNTER_NAMES):
            key = ctypes.c_uint32(probe * len(COUNTER_NAMES) + i)
            if lib.bpf_lookup_elem(fd, ctypes.byref(key), ctypes.byref(values)) != 0:
                counters[name] = 0
                continue
            counters[name] = int(sum(values))
        found[probe] = counters
    return found


def _bcc() -> Any:
    # The one bcc import (agent/probes.py); imported here, not at the top: probes imports this module.
    from runtime_signals.agent.probes import import_bcc

    return import_bcc()


def _lib() -> ctypes.CDLL:
    return _bcc().libbcc.lib  # type: ignore[no-any-return]


class PinnedGeneration:
    """The pins an earlier agent process left: its maps, and the links of its probes."""

    def __init__(self, directory: Path, map_fds: dict[str, int], links: dict[int, Path]) -> None:
        self.directory = directory
        self.map_fds = map_fds
        self.links = links  # probe index -> pin of its link

    @classmethod
    def open(cls, directory: Path) -> PinnedGeneration | None:
        """The generation pinned at directory, or None when nothing is (a clean stop, a
        reboot). A directory missing a map is removed and reported: nothing can be read."""
        if not directory.is_dir():
            return None
        fds: dict[str, int] = {}
        try:
            for name in PINNED_MAPS:
                fds[name] = bpfsys.pinned(directory / name)
        except Exception as exc:  # any failure: the pins are unusable
            log.error("pins in %s are incomplete (%s): removed; what the previous agent left there is lost", directory,
                      exc)
            for fd in fds.values():
                os.close(fd)
            shutil.rmtree(directory, ignore_errors=True)
            return None
        links = {int(p.name): p for p in (directory / "links").glob("*") if p.name.isdigit()}
        return cls(directory, fds, links)

    def close_link(self, index: int) -> bool:
        """Detach the old probe `index` before returning. Removing the pin alone would drop
        the last reference from the pin's side, which the kernel frees on a workqueue, later:
        the old program could still run while the new probe runs. So the link is opened
        first, the pin removed, and the last reference dropped by closing that fd, which
        frees the link synchronously (bpf_link_release)."""
        pin = self.links.pop(index, None)
        if pin is None:
            return False
        try:
            fd = bpfsys.pinned(pin)
        except BpfLoadError:
            pin.unlink(missing_ok=True)
            return True
        pin.unlink(missing_ok=True)
        os.close(fd)
        return True

    def close_links(self) -> int:
        closed = 0
        for index in list(self.links):
            closed += self.close_link(index)
        return closed

    def drain(self, event_type: type[ctypes.Structure], dedup_key: type[ctypes.Structure],
              on_record: Callable[[ctypes.Structure], None]) -> int:
        """Hand every record the old program left (ring buffer, then both dedup maps) to
        on_record; returns how many. Call after close_links(): nothing writes any more."""
        lib = _lib()
        records = 0
        pointer = ctypes.POINTER(event_type)

        def _one(_ctx: object, data: ctypes.c_void_p, _size: int) -> int:
            nonlocal records
            records += 1
            on_record(ctypes.cast(data, pointer).contents)
            return 0

        callback = _bcc().libbcc._RINGBUF_CB_TYPE(_one)
        ring = lib.bpf_new_ringbuf(self.map_fds["events"], callback, None)
        if not ring:
            log.error("the pinned ring buffer %s cannot be read: its records are lost (counted)",
                      self.directory / "events")
        else:
            try:
                lib.bpf_consume_ringbuf(ring)
            finally:
                lib.bpf_free_ringbuf(ring)
        for name in ("dedup_a", "dedup_b"):
            records += _drain_hash(lib, self.map_fds[name], event_type, dedup_key, on_record)
        return records

    def counters(self, probes: list[int]) -> dict[int, dict[str, int]]:
        return read_percpu_counters(self.map_fds["counters"], probes)

    def remove(self) -> None:
        """Close and unpin everything: the old maps are freed."""
        self.close_links()
        for fd in self.map_fds.values():
            os.close(fd)
        self.map_fds = {}
        remove_pins(self.directory)


def _drain_hash(lib: ctypes.CDLL, fd: int, event_type: type[ctypes.Structure], dedup_key: type[ctypes.Structure],
                on_record: Callable[[ctypes.Structure], None]) -> int:
    # One key at a time (get_next_key, lookup, delete): a map nobody writes any more, read
    # once, at start-up; simpler than batching and as exact.
    key, next_key, value = dedup_key(), dedup_key(), event_type()
    drained = 0
    first = True
    while lib.bpf_get_next_key(fd, None if first else ctypes.byref(key), ctypes.byref(next_key)) == 0:
        first = False
        if lib.bpf_lookup_elem(fd, ctypes.byref(next_key), ctypes.byref(value)) == 0:
            on_record(value)
            drained += 1
        ctypes.memmove(ctypes.byref(key), ctypes.byref(next_key), ctypes.sizeof(key))
    return drained
