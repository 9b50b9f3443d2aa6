"""Process memory maps: which file, at which offset, backs a code address.

The agent turns each frame address into (binary digest, file offset) so that the
processor can symbolize without access to the node's files. Digests are cached by
(device, inode, mtime, size), so each file is hashed once however many processes map it.
Each process's mappings are resolved to their digests once (ProcessMaps), so a frame
costs a bisect and dict lookups once the process is known.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache


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
    # Its file is being hashed on the background hasher: binary_digest is not known yet
    # (ProcessMaps with background_hashing; the caller asks again later).
    pending: bool = False


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


def parse_anonymous_code(text: str) -> list[Mapping]:
    """Executable mappings of a maps file with no file (JIT code caches), path "": a walk
    goes through them by frame pointers (JIT compilers keep them), not out of the process."""
    regions = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5 or "x" not in parts[1] or (len(parts) == 6 and parts[5].strip()):
            continue
        start_text, end_text = parts[0].split("-")
        regions.append(Mapping(int(start_text, 16), int(end_text, 16), 0, ""))
    return regions


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


# Distinct file versions whose digest is kept: a node that pulls new images for months
# meets ever more files; the least recently used digest is computed again if needed.
MAX_CACHED_DIGESTS = 1 << 16
# Files waiting for the background hasher; a file not queued (full) is asked for again later.
MAX_QUEUED_HASHES = 256


class DigestCache:
    """SHA-256 digests of files, keyed by their identity so a file is read once, whichever
    path (host, /proc/<pid>/root/...) and whichever thread asks. At most max_entries
    digests are kept (least recently used first out).

    Two threads asking for the same new file wait for one read of it; threads asking for
    other files never wait: each file being hashed has its own lock, so the event pump is
    not held behind the module-map worker hashing a large binary it does not need."""

    def __init__(self, chunk_bytes: int = 1 << 20, max_entries: int = MAX_CACHED_DIGESTS) -> None:
        self._chunk_bytes = chunk_bytes
        self._by_identity: LRUCache[FileIdentity, str] = LRUCache(max_entries)
        self._lock = threading.Lock()  # guards the two dicts only, never held across a read
        self._hashing: dict[FileIdentity, threading.Lock] = {}
        self.files_hashed = 0
        # Background hashing (lookup()): files that could not be read, files queued.
        self._unreadable: LRUCache[FileIdentity, bool] = LRUCache(max_entries)
        self._scheduled: set[FileIdentity] = set()
        self._queue: queue.Queue[tuple[FileIdentity, str | os.PathLike[str]]] = queue.Queue(MAX_QUEUED_HASHES)
        self._hasher: threading.Thread | None = None
        self.completed = 0  # background hashes finished: a change tells waiters to look again

    def __len__(self) -> int:
        return len(self._by_identity)

    def known(self, path: str | os.PathLike[str]) -> str | None:
        """The digest if it is already known, without reading the file."""
        identity = file_identity(path)
        if identity is None:
            return None
        with self._lock:
            return self._by_identity.get(identity)

    def queued(self) -> int:
        return self._queue.qsize()

    def lookup(self, path: str | os.PathLike[str]) -> tuple[bool, str | None]:
        """(settled, digest) without ever reading the file on the caller's thread: settled
        is False while the file waits for (or is under) the background hasher, which this
        call asks for it; True with the digest, or with None for a file that cannot be read."""
        identity = file_identity(path)
        if identity is None:
            return True, None
        with self._lock:
            cached = self._by_identity.get(identity)
            if cached is not None:
                return True, cached
            if identity in self._unreadable:
                return True, None
            if identity in self._scheduled:
                return False, None
            try:
                self._queue.put_nowait((identity, path))
            except queue.Full:
                return False, None  # asked again on the caller's next look
            self._scheduled.add(identity)
            if self._hasher is None:
                self._hasher = threading.Thread(target=self._hash_in_background, name="digests", daemon=True)
                self._hasher.start()
        return False, None

    def _hash_in_background(self) -> None:
        while True:
            identity, path = self._queue.get()
            try:
                value = self.digest(path)
            except Exception:  # never let the hasher die: every later file would wait forever
                value = None
            with self._lock:
                if value is None:
                    self._unreadable[identity] = True
                self._scheduled.discard(identity)
                self.completed += 1

    def digest(self, path: str | os.PathLike[str]) -> str | None:
        """'sha256:<hex>' of the file, or None when it cannot be read (gone, no access)."""
        identity = file_identity(path)
        if identity is None:
            return None
        with self._lock:
            cached = self._by_identity.get(identity)
            if cached is not None:
                return cached
            file_lock = self._hashing.setdefault(identity, threading.Lock())
        with file_lock:
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
                value = None
            else:
                value = "sha256:" + hasher.hexdigest()
            with self._lock:
                if value is not None:
                    self._by_identity[identity] = value
                    self.files_hashed += 1
                self._hashing.pop(identity, None)
            return value


NewFileCallback = Callable[[int, Mapping, str], None]  # (pid, mapping, digest of its file)
# Per-process caches of resolved addresses are cleared past this many entries: a stack
# walked through code without frame pointers can yield any number of distinct words.
MAX_CACHED_ADDRESSES = 1 << 16


class _ProcessView:
    """One process's executable mappings and what has been resolved against them. Built
    again whenever the mappings read differ, so nothing in it outlives its mappings."""

    __slots__ = ("addresses", "digests", "mappings", "misses", "starts")

    def __init__(self, mappings: list[Mapping]) -> None:
        self.mappings = mappings
        self.starts = [m.start for m in mappings]  # sorted: bisect finds the mapping
        self.digests: dict[Mapping, str | None] = {}  # once per (process, mapping)
        self.addresses: dict[int, ResolvedAddress] = {}
        # Addresses in no mapping as of the last read: re-reading the maps for them again
        # would cost a read per call when a walk yields junk words. Cleared past
        # MAX_CACHED_ADDRESSES like the addresses (a clear costs one re-read of the maps).
        self.misses: set[int] = set()


class _Pending(Exception):
    """The file is being hashed in the background (ProcessMaps._digest_of)."""


class ProcessMaps:
    """Per-process executable mappings, re-read when an address falls outside them (a
    library loaded with dlopen after the first read).

    The event pump resolves every frame of every call here, so the steady state is dict
    lookups: each mapping's file is found and digested once per process (no path built,
    no stat per frame), each address resolved once per version of the mappings. A new
    file is reported through on_new_file once per (process, mapping)."""

    def __init__(self, digests: DigestCache, proc_root: Path = Path("/proc"),
                 on_new_file: NewFileCallback | None = None, background_hashing: bool = False) -> None:
        # background_hashing: a frame whose file is not hashed yet comes back pending
        # instead of waiting for the whole file to be read (the event pump's mode).
        self._background = background_hashing
        self._digests = digests
        self._proc_root = proc_root
        self._on_new_file = on_new_file
        self._by_pid: dict[int, _ProcessView] = {}
        self._versions: dict[int, int] = {}

    def forget(self, pid: int) -> None:
        self._by_pid.pop(pid, None)
        self._versions.pop(pid, None)

    def version(self, pid: int) -> int:
        """Bumped each time the process's executable mappings are read and differ."""
        return self._versions.get(pid, 0)

    def known_pids(self) -> list[int]:
        return list(self._by_pid)

    def sizes(self) -> dict[str, int]:
        """Entries held, for /metrics: processes, resolved addresses and misses over them."""
        views = list(self._by_pid.values())
        return {"process_maps": len(views), "resolved_addresses": sum(len(v.addresses) for v in views),
                "address_misses": sum(len(v.misses) for v in views)}

    def mappings(self, pid: int, refresh: bool = False) -> list[Mapping]:
        return self._view(pid, refresh).mappings

    def _view(self, pid: int, refresh: bool = False) -> _ProcessView:
        view = self._by_pid.get(pid)
        if view is not None and not refresh:
            return view
        try:
            text = (self._proc_root / str(pid) / "maps").read_text()
        except OSError:
            if view is not None:
                # Gone: the mappings read while it lived (at a hold, agent/loadwatch.py, or
                # at an earlier call) still resolve the calls it made.
                return view
            # The process exited before we ever looked: its frames stay unresolved.
            text = ""
        mappings = parse_maps(text)
        if view is not None and not mappings:
            # An exiting process's maps read empty (its memory is released before it is
            # reaped): the mappings read while it lived still resolve the calls it made.
            return view
        if view is None or mappings != view.mappings:
            self._versions[pid] = self._versions.get(pid, 0) + 1
            kept = view.digests if view is not None else {}
            view = _ProcessView(mappings)
            # A mapping still there, same range, offset and path, is the same file: its
            # digest (and its one offer) carry over; a dlopen does not re-hash the rest.
            view.digests = {m: kept[m] for m in mappings if m in kept}
            self._by_pid[pid] = view
        return view

    def resolve(self, pid: int, addresses: Iterable[int]) -> list[ResolvedAddress]:
        view = self._view(pid)
        resolved: list[ResolvedAddress] = []
        unknown = False
        for address in addresses:
            known = view.addresses.get(address)
            if known is None:
                known = self._resolve_one(pid, view, address)
                unknown = unknown or (known.path is None and address not in view.misses)
            resolved.append(known)
        if unknown:
            view = self._view(pid, refresh=True)
            resolved = [r if r.path is not None else self._resolve_one(pid, view, r.address) for r in resolved]
            for r in resolved:
                if r.path is None:
                    if len(view.misses) >= MAX_CACHED_ADDRESSES:
                        view.misses.clear()
                    view.misses.add(r.address)
        return resolved

    def prime(self, pid: int) -> list[Mapping]:
        """Read pid's mappings now and digest every file they map, so that its calls resolve
        after it has exited; returns the mappings."""
        view = self._view(pid, refresh=True)
        for mapping in view.mappings:
            self._digest_of(pid, view, mapping)
        return view.mappings

    def _digest_of(self, pid: int, view: _ProcessView, mapping: Mapping, wait: bool = True) -> str | None:
        """The mapped file's digest. wait=False (the pump, with background hashing): raises
        _Pending instead of hashing a file not hashed yet."""
        if mapping in view.digests:
            return view.digests[mapping]
        # Read through the process's root so files inside containers are found.
        host_path = self._proc_root / str(pid) / "root" / mapping.path.lstrip("/")
        if self._background and not wait:
            settled, digest = self._digests.lookup(host_path)
            if not settled:  # nothing cached: asked again until the hasher is done
                raise _Pending
        else:
            digest = self._digests.digest(host_path)
        view.digests[mapping] = digest
        if digest is not None and self._on_new_file is not None:
            self._on_new_file(pid, mapping, digest)
        return digest

    def _resolve_one(self, pid: int, view: _ProcessView, address: int) -> ResolvedAddress:
        index = bisect_right(view.starts, address) - 1
        if index < 0 or not view.mappings[index].contains(address):
            return ResolvedAddress(address, None, None, None)
        mapping = view.mappings[index]
        try:
            digest = self._digest_of(pid, view, mapping, wait=False)
        except _Pending:
            return ResolvedAddress(address, mapping.path, None, address - mapping.start + mapping.file_offset,
                                   pending=True)
        result = ResolvedAddress(address, mapping.path, digest, address - mapping.start + mapping.file_offset)
        if len(view.addresses) >= MAX_CACHED_ADDRESSES:
            view.addresses.clear()
        view.addresses[address] = result
        return result


def read_memory(proc: Path, address: int, size: int) -> bytes | None:
    """size bytes of the process at /proc/<pid> from address (fewer at the end of a
    mapping), or None when it cannot be read (gone, unmapped, no access)."""
    try:
        with open(proc / "mem", "rb", buffering=0) as memory:
            memory.seek(address)
            return memory.read(size)
    except (OSError, ValueError, OverflowError):
        return None
