"""What the agent knows about each process that made a probed call: its container,
runtime and executable mappings, learned once per process and forgotten when it exits.

Every binary seen in a stack is reported through `on_new_binary` (the symbol-table
publisher keeps only the first report of each digest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .identity import ContainerResolver
from .procmaps import DigestCache, ProcessMaps, ResolvedAddress
from .runtime import RuntimeResolver

NewBinaryCallback = Callable[[str, Path, Path], None]  # (digest, host-visible path, process root)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    container_id: str
    runtime_type: str  # RuntimeType symbol
    root: Path  # the process's root directory, seen from the agent (/proc/<pid>/root)


class ProcessTable:
    def __init__(self, on_new_binary: NewBinaryCallback | None = None, proc_root: Path = Path("/proc")) -> None:
        self._proc_root = proc_root
        self.digests = DigestCache()
        self.maps = ProcessMaps(self.digests, proc_root)
        self._containers = ContainerResolver(proc_root)
        self._runtimes = RuntimeResolver(proc_root)
        self._on_new_binary = on_new_binary

    def describe(self, pid: int) -> ProcessInfo:
        return ProcessInfo(
            pid=pid,
            container_id=self._containers.container_id(pid),
            runtime_type=self._runtimes.runtime(pid, lambda: [m.path for m in self.maps.mappings(pid)]).name,
            root=self._proc_root / str(pid) / "root",
        )

    def resolve_frames(self, pid: int, addresses: tuple[int, ...]) -> list[ResolvedAddress]:
        """Each address as (file, digest, offset), innermost first like the input."""
        frames = self.maps.resolve(pid, addresses)
        if self._on_new_binary is not None:
            for frame in frames:
                if frame.binary_digest is not None and frame.path is not None:
                    root = self._proc_root / str(pid) / "root"
                    self._on_new_binary(frame.binary_digest, root / frame.path.lstrip("/"), root)
        return frames

    def forget_exited(self) -> int:
        """Drop what is known of processes that have exited; returns how many."""
        gone = [pid for pid in self.maps.known_pids() if not (self._proc_root / str(pid)).exists()]
        for pid in gone:
            self.maps.forget(pid)
            self._containers.forget(pid)
            self._runtimes.forget(pid)
        return len(gone)
