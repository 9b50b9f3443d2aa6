"""Process memory maps: which file, at which offset, backs a code address.

The agent turns each frame address into (binary digest, file offset) so that the
processor can symbolize without access to the node's files. Digests are cached by
(device, inode, mtime, size), so each file is hashed once however many processes map it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True, slots=True)
class Mapping:
    """One executable mapping of /proc/<pid>/maps."""

    start: int
    end: int
    file_offset: int
    path: str

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """A code address seen from the file that backs it."""

    address: int
    path: str | None
    binary_digest: str | None
    binary_offset: int | None
    purl: str | None = None  # set for the probed function's frame only (ProcessTable)


def parse_maps(text: str) -> list[Mapping]:
    """Executable, file-backed mappings of a maps file, sorted by start address."""
    mappings = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        path = parts[5].strip()
        # [vdso], [stack], anonymous JIT memory: no file to symbolize from.
        if not path.startswith("/"):
            continue
        start_text, end_text = parts[0].split("-")
        mappings.append(Mapping(int(start_text, 16), int(end_text, 16), int(parts[2], 16), path))
    mappings.sort(key=lambda m: m.start)
    return mappings


FileIdentity = tuple[int, int, int, int]  # (device, inode, mtime ns, size)


def signed64(value: int) -> int:
    """An unsigned 64-bit value (an address) as Avro's signed long, bit for bit: a frame
    walked through code without frame pointers can yield any 64-bit word."""
    return value - (1 << 64) if value >= 1 << 63 else value


def file_identity(path: str | os.PathLike[str]) -> FileIdentity | None:
    """What tells one file version from another without reading it; None when gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class DigestCache:
    """SHA-256 digests of files, keyed by their identity so a file is read once, whichever
    path (host, /proc/<pid>/root/...) and whichever thread asks."""

    def __init__(self, chunk_bytes: int = 1 << 20) -> None:
        self._chunk_bytes = chunk_bytes
        self._by_identity: dict[FileIdentity, str] = {}
        self._lock = threading.Lock()
        self.files_hashed = 0

    def digest(self, path: str | os.PathLike[str]) -> str | None:
        """'sha256:<hex>' of the file, or None when it cannot be read (gone, no access)."""
        identity = file_identity(path)
        if identity is None:
            return None
        cached = self._by_identity.get(identity)
        if cached is not None:
            return cached
        # One hasher at a time: the event pump and the module-map worker may meet the same
        # new file, and reading it twice would double the cost this cache exists to avoid.
        with self._lock:
            cached = self._by_identity.get(identity)
            if cached is not None:
                return cached
            hasher = hashlib.sha256()
            try:
                with open(path, "rb") as handle:
                    while chunk := handle.read(self._chunk_bytes):
                        hasher.update(chunk)
            except OSError:
                return None
            value = "sha256:" + hasher.hexdigest()
            self._by_identity[identity] = value
            self.files_hashed += 1
            return value


class ProcessMaps:
    """Per-process executable mappings, re-read when an address falls outside them
    (a library loaded with dlopen after the first read)."""

    def __init__(self, digests: DigestCache, proc_root: Path = Path("/proc")) -> None:
        self._digests = digests
        self._proc_root = proc_root
        self._by_pid: dict[int, list[Mapping]] = {}
        self._versions: dict[int, int] = {}

    def forget(self, pid: int) -> None:
        self._by_pid.pop(pid, None)
        self._versions.pop(pid, None)

    def version(self, pid: int) -> int:
        """Bumped each time the process's executable mappings are read and differ."""
        return self._versions.get(pid, 0)

    def known_pids(self) -> list[int]:
        return list(self._by_pid)

    def mappings(self, pid: int, refresh: bool = False) -> list[Mapping]:
        if refresh or pid not in self._by_pid:
            try:
                text = (self._proc_root / str(pid) / "maps").read_text()
            except OSError:
                # The process exited before we looked: its frames stay unresolved.
                text = ""
            mappings = parse_maps(text)
            if mappings != self._by_pid.get(pid):
                self._versions[pid] = self._versions.get(pid, 0) + 1
            self._by_pid[pid] = mappings
        return self._by_pid[pid]

    def resolve(self, pid: int, addresses: Iterable[int]) -> list[ResolvedAddress]:
        addresses = list(addresses)
        mappings = self.mappings(pid)
        resolved = [self._resolve_one(pid, mappings, a) for a in addresses]
        if any(r.path is None for r in resolved):
            mappings = self.mappings(pid, refresh=True)
            resolved = [r if r.path is not None else self._resolve_one(pid, mappings, r.address)
                        for r in resolved]
        return resolved

    def _resolve_one(self, pid: int, mappings: list[Mapping], address: int) -> ResolvedAddress:
        for mapping in mappings:
            if mapping.contains(address):
                # Read through the process's root so files inside containers are found.
                file_path = self._proc_root / str(pid) / "root" / mapping.path.lstrip("/")
                return ResolvedAddress(
                    address=address,
                    path=mapping.path,
                    binary_digest=self._digests.digest(file_path),
                    binary_offset=address - mapping.start + mapping.file_offset,
                )
        return ResolvedAddress(address, None, None, None)
