"""Per-process module maps for the processor: which file, at which address and offset,
with its digest, build id and package, published to the compacted modules topic.

A map is built off the event pump's thread: it digests every mapped file the process
has (a JVM maps a hundred), which the pump must not wait for. The DigestCache is shared
with the pump, so a file is still hashed once.

Bounded: at most MAX_QUEUED maps wait; a map offered to a full queue is counted
("queue_full") and not published (the processor then names that process's packages only
from other maps, and its windows may wait out their symbol wait: both counted there).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from runtime_signals.agent.perfmap import JitModule
from runtime_signals.agent.processes import NodeFiles, ProcessInfo
from runtime_signals.agent.procmaps import FileIdentity, Mapping, file_identity, signed64
from runtime_signals.agent.publisher import Publisher
from runtime_signals.agent.symtab import read_build_id
from runtime_signals.schemas import codec

log = logging.getLogger(__name__)

MODULE_MAP = "io.runtimesignals.ModuleMap"
MAX_QUEUED = 4096
MAX_BUILD_IDS = 1 << 16
MAX_KNOWN_ENTRIES = 1 << 16


def module_map_key(host: str, pid: int, start_ticks: int) -> str:
    """Compaction key: one process, whatever its pid is reused for later."""
    return f"{host}/{pid}/{start_ticks}"


class ModuleMapBuilder:
    """Turns a process's mappings into a ModuleMap record (digests, build ids, purls cached)."""

    def __init__(self, node: NodeFiles, host: str, agent_id: str) -> None:
        self._digests = node.digests
        self._purls = node.purls
        self.host = host
        self._agent_id = agent_id
        self._build_ids: LRUCache[FileIdentity, str | None] = LRUCache(MAX_BUILD_IDS)
        # Each mapping's entry as last built while its file could be read: a map rebuilt
        # after the process exited (a code unit met in a late record) keeps its files'
        # digests and packages instead of losing them. Keyed (pid, start ticks, start, path).
        self._entries: LRUCache[tuple[int, int, int, str], dict[str, Any]] = LRUCache(MAX_KNOWN_ENTRIES)

    @property
    def build_ids_cached(self) -> int:
        return len(self._build_ids)

    @property
    def entries_known(self) -> int:
        return len(self._entries)

    def _build_id(self, path: Path) -> str | None:
        identity = file_identity(path)
        if identity is None:
            return None
        if identity not in self._build_ids:
            self._build_ids[identity] = read_build_id(path)
        return self._build_ids[identity]

    def record(self, process: ProcessInfo, mappings: list[Mapping], version: int,
               jit: Sequence[JitModule] = ()) -> dict[str, Any]:
        modules: list[dict[str, Any]] = []
        for mapping in sorted(mappings, key=lambda m: m.start):
            host_path = process.root / mapping.path.lstrip("/")
            key = (process.pid, process.start_ticks, mapping.start, mapping.path)
            entry = {
                "path": mapping.path,
                "start_address": signed64(mapping.start),
                "end_address": signed64(mapping.end),
                "file_offset": mapping.file_offset,
                "binary_digest": self._digests.digest(host_path),
                "build_id": self._build_id(host_path),
                "purl": self._purls.purl(process.root, mapping.path),
            }
            known = self._entries.get(key)
            if entry["binary_digest"] is None and known is not None:
                entry = dict(known)  # the file is gone with its process: what was read while it lived
            elif entry["binary_digest"] is not None:
                self._entries[key] = entry
            modules.append(entry)
        # JIT code the runtime named in its perf map: its address range, the map as path,
        # the digest of its name (agent/perfmap.py), no build id.
        for blob in sorted(jit, key=lambda b: (b.start, b.name)):
            modules.append({"path": blob.map_path, "start_address": signed64(blob.start),
                            "end_address": signed64(blob.start + blob.size), "file_offset": 0,
                            "binary_digest": blob.binary_digest, "build_id": None, "purl": blob.purl})
        modules.sort(key=lambda m: (m["start_address"] & 0xFFFFFFFFFFFFFFFF, m["path"]))
        return {
            "host": self.host,
            "agent_id": self._agent_id,
            "pid": process.pid,
            "process_start_ticks": process.start_ticks,
            "container_id": process.container_id,
            "executable": process.executable or None,
            "runtime_type": process.runtime_type,
            "version": version,
            "observed_at_us": time.time_ns() // 1000,
            "modules": modules,
        }


class ModuleMapPublisher:
    """Publishes module maps from a worker thread, in the order they were offered."""

    def __init__(self, publisher: Publisher, topic: str, registry: codec.SchemaRegistry,
                 builder: ModuleMapBuilder) -> None:
        self._publisher = publisher
        self._topic = topic
        self._registry = registry
        self._builder = builder
        # (process, its mappings or its record already built, version, its JIT code units);
        # bounded: a full queue drops the map (counted as queue_full), it is offered again on change.
        self._queue: queue.Queue[tuple[ProcessInfo, list[Mapping] | dict[str, Any], int, Sequence[JitModule]]
                                 | None] = queue.Queue(MAX_QUEUED)
        self.counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._work, name="module-maps", daemon=True)
        self._thread.start()

    def offer(self, process: ProcessInfo, mappings: list[Mapping], version: int,
              jit: Sequence[JitModule] = ()) -> None:
        """Queue the map of process (ProcessTable calls this on first sight and on change)."""
        try:
            self._queue.put_nowait((process, list(mappings), version, tuple(jit)))
        except queue.Full:
            self.counts["queue_full"] += 1

    def sizes(self) -> dict[str, int]:
        """Entries held, for /metrics."""
        return {"module_maps_queued": self._queue.qsize(), "build_ids": self._builder.build_ids_cached,
                "module_entries_known": self._builder.entries_known}

    def offer_now(self, process: ProcessInfo, mappings: list[Mapping], version: int,
                  jit: Sequence[JitModule] = ()) -> None:
        """Build the map of process now, while it is alive (digests, build ids and packages
        are read through /proc/<pid>/root), and publish it from the worker."""
        try:
            record = self._builder.record(process, mappings, version, jit)
        except Exception:  # one bad process must not stop a hold being answered
            self.counts["failed"] += 1
            log.exception("building the module map of pid %d failed", process.pid)
            return
        try:
            self._queue.put_nowait((process, record, version, tuple(jit)))
        except queue.Full:
            self.counts["queue_full"] += 1

    def close(self, timeout_s: float = 30.0) -> None:
        """Publish the maps already offered, then stop the worker."""
        self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            process, mappings, version, jit = item
            try:
                record = (mappings if isinstance(mappings, dict)
                          else self._builder.record(process, mappings, version, jit))
                value = codec.encode(record, MODULE_MAP, self._registry)
                key = module_map_key(self._builder.host, process.pid, process.start_ticks)
                self._publisher.produce(self._topic, key.encode(), value)
                self.counts["maps"] += 1
            except Exception:  # one bad process must not stop the maps that follow
                self.counts["failed"] += 1
                log.exception("publishing the module map of pid %d failed", process.pid)
