"""Names of JIT-compiled code from the perf maps runtimes write (/tmp/perf-<pid>.map, one
"START SIZE NAME" line per code blob, hex numbers): the JVM on request (`jcmd <pid>
Compiler.perfmap`, JDK 17+), Node with --perf-basic-prof (add
--interpreted-frames-native-stack for interpreted functions), .NET with
DOTNET_PerfMapEnabled=1. The file is read through the process's root, under the pid the
process has in its own PID namespace, and re-read as it grows: appended lines are parsed
incrementally, a rewritten file (the JVM's) is read again whole.

A JIT frame is located in a named code blob, not a file: its binary_digest is a digest of
the blob's name (jit_digest), the same on every node and run for the same method, its
binary_offset the offset into the blob, and its symbol table holds that one name. Frames
in anonymous memory that no map names stay unnamed (their address identity), never guessed.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

JIT_DIGEST_DOMAIN = "runtime-signals/jit-code/v1"


def jit_digest(name: str) -> str:
    """The digest that stands for a JIT code blob: SHA-256 over the domain line and the name."""
    return "sha256:" + hashlib.sha256(f"{JIT_DIGEST_DOMAIN}\n{name}\n".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class JitSymbol:
    start: int
    size: int
    name: str

    def contains(self, address: int) -> bool:
        return self.start <= address < self.start + max(self.size, 1)


def namespace_pid(proc: Path) -> int | None:
    """The pid the process has in its own PID namespace (the last NSpid field): the one in
    its perf map's name."""
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class PerfMap:
    """One process's perf map, as far as it has been read."""

    host_path: Path
    path_in_process: str
    max_entries: int
    entries: list[JitSymbol] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    read_bytes: int = 0
    head: bytes = b""
    dropped_entries: int = 0
    checked_at_s: float = 0.0

    def refresh(self) -> bool:
        """Read what was added (or everything, when the file was rewritten); True when new names arrived."""
        try:
            with open(self.host_path, "rb") as handle:
                head = handle.read(64)
                size = os.fstat(handle.fileno()).st_size
                rewritten = size < self.read_bytes or head[:len(self.head)] != self.head
                if rewritten:
                    self.entries, self.starts, self.read_bytes = [], [], 0
                if size == self.read_bytes:
                    return False
                handle.seek(self.read_bytes)
                data = handle.read(size - self.read_bytes)
        except OSError:
            return False
        complete = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        added = []
        for line in data[:complete].decode(errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) != 3:
                continue
            try:
                added.append(JitSymbol(int(parts[0], 16), int(parts[1], 16), parts[2]))
            except ValueError:
                continue
        self.read_bytes += complete
        self.head = head
        room = self.max_entries - len(self.entries)
        if len(added) > room:
            self.dropped_entries += len(added) - max(room, 0)
            added = added[:max(room, 0)]
        if not added:
            return False
        # A later line for the same start (recompiled code at a reused address) wins.
        by_start = {e.start: e for e in self.entries}
        by_start.update((e.start, e) for e in added)
        self.entries = [by_start[s] for s in sorted(by_start)]
        self.starts = [e.start for e in self.entries]
        return True

    def lookup(self, address: int) -> JitSymbol | None:
        index = bisect.bisect_right(self.starts, address) - 1
        if index >= 0 and self.entries[index].contains(address):
            return self.entries[index]
        return None


class PerfMaps:
    """Perf maps by pid; a miss re-reads the map at most once per refresh_interval_s."""

    def __init__(self, proc_root: Path = Path("/proc"), max_entries_per_process: int = 500_000,
                 refresh_interval_s: float = 1.0, jcmd: str | None = "jcmd") -> None:
        self._proc_root = proc_root
        self._max_entries = max_entries_per_process
        self._refresh_s = refresh_interval_s
        self._jcmd = jcmd
        self._maps: dict[int, PerfMap | None] = {}
        self._jvm_requested_at: dict[int, float] = {}
        self.counts: Counter[str] = Counter()

    def _map(self, pid: int) -> PerfMap | None:
        if pid not in self._maps:
            proc = self._proc_root / str(pid)
            ns_pid = namespace_pid(proc)
            if ns_pid is None:
                return None
            inside = f"/tmp/perf-{ns_pid}.map"
            self._maps[pid] = PerfMap(proc / "root" / inside.lstrip("/"), inside, self._max_entries)
        return self._maps[pid]

    def lookup(self, pid: int, address: int, runtime: str = "") -> tuple[JitSymbol, str] | None:
        """The named code blob holding address, and the map's path as the process sees it."""
        perf_map = self._map(pid)
        if perf_map is None:
            return None
        found = perf_map.lookup(address)
        if found is None:
            now = time.monotonic()
            if now - perf_map.checked_at_s >= self._refresh_s:
                perf_map.checked_at_s = now
                if runtime == "JVM":
                    self._request_jvm_map(pid, now)
                if perf_map.refresh():
                    self.counts["refreshes"] += 1
                found = perf_map.lookup(address)
        self.counts["named" if found else "unnamed"] += 1
        return (found, perf_map.path_in_process) if found else None

    def _request_jvm_map(self, pid: int, now: float) -> None:
        """Ask a JVM to write its perf map (JDK 17+: it does not keep one up to date by itself)."""
        if self._jcmd is None or now - self._jvm_requested_at.get(pid, -1e9) < 10 * self._refresh_s:
            return
        self._jvm_requested_at[pid] = now
        try:
            subprocess.run([self._jcmd, str(pid), "Compiler.perfmap"], capture_output=True, timeout=10, check=True)
            self.counts["jvm_map_requests"] += 1
        except (OSError, subprocess.SubprocessError) as exc:
            self.counts["jvm_map_request_failed"] += 1
            log.info("jcmd %d Compiler.perfmap failed (%s): JIT frames of this JVM stay unnamed", pid, exc)

    def dropped_entries(self) -> int:
        return sum(m.dropped_entries for m in self._maps.values() if m is not None)

    def forget(self, pid: int) -> None:
        self._maps.pop(pid, None)
        self._jvm_requested_at.pop(pid, None)


@dataclass(frozen=True, slots=True)
class JitModule:
    """A unit of managed code met in a stack that is no mapping of a file, as the process's
    module map lists it: a named JIT code blob, or (start = size = 0) a Python source file or
    Python function."""

    start: int
    size: int
    name: str
    map_path: str        # the perf map that named it, as the process sees it
    binary_digest: str   # jit_digest(name); for Python code, pyframes.code_unit_digest
    purl: str | None
    source: str = "perf-map"  # what named it: "perf-map", or "python-code" (agent/pyframes.py)


_JDK_PACKAGES = ("java.", "javax.", "jdk.", "sun.", "com.sun.")


def jvm_class_name(name: str) -> str | None:
    """The class of a HotSpot perf-map name ("int java.util.zip.Deflater.deflate(byte[], int)"
    -> "java.util.zip.Deflater"); None for stubs and the interpreter ("Interpreter",
    "StubRoutines (1)")."""
    head = name.split("(", 1)[0].strip()
    if "(" not in name or "." not in head:
        return None
    qualified = head.rsplit(" ", 1)[-1]
    cls, _, _method = qualified.rpartition(".")
    return cls or None


def node_source_path(name: str) -> str | None:
    """The script of a V8 perf-map name ("JS:*compressA /srv/app/node_modules/z/index.js:3:20")."""
    for token in reversed(name.split(" ")):
        token = token.removeprefix("file://")
        if token.startswith("/"):
            parts = token.split(":")
            while len(parts) > 1 and parts[-1].isdigit():
                parts.pop()
            return ":".join(parts)
    return None
