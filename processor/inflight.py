"""Which raw record each partition was processing, kept where a dying worker leaves it.

A record that crashes the worker process itself (native code: a SIGSEGV, an abort) leaves
no exception to catch and no DLQ record: the worker restarts from its checkpoint, meets the
same record and dies again, for ever, and then on every worker the partition moves to.
So before the engine handles a record, the worker writes its offset into a small file per
partition, mapped into memory (a store, no system call: the kernel keeps the page when the
process dies), and marks it done afterwards. On restart, a record found in flight is a
suspect. A suspect that is in flight again at the next death has killed the worker twice:
the restarted worker routes it to the DLQ (reason killed_worker) instead of handling it.
Two deaths, not one, because a worker also dies for reasons no record causes (kill -9, a
node drained mid-record), and a good record must not be dead-lettered for that.

Residual: the files live on the worker's own disk (an emptyDir that survives container
restarts, docs/deploy.md). A partition that moves to another machine starts with no
suspects, so a poison record costs each machine two restarts at most, not infinitely many.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
from pathlib import Path

log = logging.getLogger(__name__)

# offset (-1: none), in flight (0/1), deaths at this offset already seen; little-endian.
_SLOT = struct.Struct("<qqq")
DEATHS_BEFORE_DLQ = 2


class InflightLog:
    """One mapped slot file per raw partition under directory."""

    def __init__(self, directory: Path, raw_topic: str) -> None:
        self._directory = directory
        self._name = re.sub(r"[^A-Za-z0-9._-]", "_", raw_topic)
        self._slots: dict[int, mmap.mmap] = {}
        self._deaths: dict[int, tuple[int, int]] = {}  # partition -> (offset, deaths seen)

    def open(self, partition: int) -> tuple[int, int] | None:
        """Map the partition's slot; returns (offset, deaths) of a record that was in flight
        when the last worker holding this file died, else None."""
        if partition not in self._slots:
            self._directory.mkdir(parents=True, exist_ok=True)
            path = self._directory / f"{self._name}.{partition}.inflight"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _SLOT.size:
                    os.ftruncate(fd, _SLOT.size)
                    os.pwrite(fd, _SLOT.pack(-1, 0, 0), 0)
                self._slots[partition] = mmap.mmap(fd, _SLOT.size)
            finally:
                os.close(fd)
        offset, in_flight, deaths = _SLOT.unpack_from(self._slots[partition], 0)
        if not in_flight or offset < 0:
            # A suspect not reached again before the last worker stopped stays a suspect.
            if offset >= 0 and deaths > 0:
                self._deaths[partition] = (offset, deaths)
            else:
                self._deaths.pop(partition, None)
            return None
        self._deaths[partition] = (offset, deaths + 1)
        _SLOT.pack_into(self._slots[partition], 0, offset, 0, deaths + 1)
        log.warning("raw partition %d: offset %d was being processed when a worker died (%d time(s))",
                    partition, offset, deaths + 1)
        return offset, deaths + 1

    def is_poison(self, partition: int, offset: int) -> bool:
        """Whether this record has been in flight at DEATHS_BEFORE_DLQ worker deaths."""
        known = self._deaths.get(partition)
        return known is not None and known[0] == offset and known[1] >= DEATHS_BEFORE_DLQ

    def begin(self, partition: int, offset: int) -> None:
        slot = self._slots.get(partition)
        if slot is not None:
            known = self._deaths.get(partition)
            deaths = known[1] if known is not None and known[0] == offset else 0
            _SLOT.pack_into(slot, 0, offset, 1, deaths)

    def end(self, partition: int, offset: int) -> None:
        slot = self._slots.get(partition)
        if slot is not None:
            _SLOT.pack_into(slot, 0, offset, 0, 0)

    def close(self, partition: int | None = None) -> None:
        chosen = list(self._slots) if partition is None else [partition]
        for p in chosen:
            slot = self._slots.pop(p, None)
            if slot is not None:
                slot.close()
            self._deaths.pop(p, None)
