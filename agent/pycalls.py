"""Python-function calls (agent/pyprobes.PythonCall) to RuntimeCallEvent records.

The kernel passes calls whose co_name matches; here the whole MODULE:QUALNAME is checked
against the source file (agent/pysource.py) and the frames are located as Python frames in
native paths are (agent/pyframes.py): a frame is a unit of code whose digest is made of its
source file's digest, its module.qualname and its first line, at offset 1, library its
source path; the agent publishes the unit's one-name symbol table, so the processor names
callers too. Its address is the code object's name pointer in the process: not an
instruction address, but what tells unread frames apart.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_signals.agent.procmaps import DigestCache, read_memory, signed64
from runtime_signals.agent.pyframes import code_unit_digest
from runtime_signals.agent.pyprobes import PythonCall, PythonProbeSpec
from runtime_signals.agent.pysource import PythonSources, SourceFile, module_candidates
from runtime_signals.agent.pywire import FLAG_TRUNCATED


@dataclass(frozen=True, slots=True)
class NamedFrame:
    module: str | None
    qualname: str | None
    path: str
    lineno: int
    address: int
    binary_digest: str | None
    binary_offset: int | None
    purl: str | None

    @property
    def signature(self) -> str | None:
        return f"{self.module}.{self.qualname}" if self.module and self.qualname else None


class PythonCallNamer:
    """Checks a call against its probe's full name and locates its frames."""

    def __init__(self, sources: PythonSources, digests: DigestCache, proc_root: Path = Path("/proc")) -> None:
        self._sources = sources
        self._digests = digests
        self._proc_root = proc_root
        self.counts: Counter[str] = Counter()

    def frames(self, call: PythonCall, interpreter: str | None = None) -> list[NamedFrame]:
        """The call's frames, outermost first; the last is the probed function."""
        proc = self._proc_root / str(call.pid)
        located = []
        for position, frame in enumerate(call.frames):
            is_leaf = position == len(call.frames) - 1
            filename = call.filename if is_leaf else _read_c_string(proc, frame.filename_ptr)
            funcname = call.funcname if is_leaf else _read_c_string(proc, frame.funcname_ptr)
            if filename is None or funcname is None:
                self.counts["caller_names_unread"] += 1
                located.append(NamedFrame(None, None, "", frame.lineno, frame.funcname_ptr, None, None, None))
                continue
            source = self._sources.source(proc, filename, interpreter)
            located.append(self._locate(source, funcname, frame.lineno, frame.funcname_ptr, proc))
        return located

    def _locate(self, source: SourceFile, funcname: str, lineno: int, address: int, proc: Path) -> NamedFrame:
        definition = source.index.definition_at(lineno, funcname) if source.index is not None else None
        candidates = module_candidates(source.path)
        # Below an import root the one module name; elsewhere the shortest, the file's stem.
        module = candidates[0] if candidates else None
        if definition is None:
            return NamedFrame(module, None, source.path, lineno, address, None, None, source.purl)
        symbol = f"{module}.{definition.qualname}" if module else definition.qualname
        file_digest = self._digests.digest(proc / "root" / source.path.lstrip("/"))
        digest = code_unit_digest(file_digest or source.path, symbol, definition.first_line)
        return NamedFrame(module, definition.qualname, source.path, lineno, address, digest, 1, source.purl)

    def selects(self, spec: PythonProbeSpec, leaf: NamedFrame) -> bool:
        """Whether the probed function is the one the probe names (the kernel compared co_name only)."""
        if leaf.qualname is None:
            self.counts["unnamed"] += 1
            return False
        return spec.matches(module_candidates(leaf.path), leaf.qualname)


def _read_c_string(proc: Path, address: int, limit_bytes: int = 256) -> str | None:
    """A NUL-terminated string of the process (a caller's co_filename or co_name)."""
    data = read_memory(proc, address, limit_bytes)
    if data is None:
        return None
    end = data.find(b"\0")
    return data[:end].decode(errors="replace") if end >= 0 else None


def call_record(call: PythonCall, count: int, frames: list[NamedFrame], spec: PythonProbeSpec, *, container_id: str,
                host: str, agent_id: str, wall_us: int, last_boot_ns: int) -> dict[str, Any]:
    """The RuntimeCallEvent of `count` calls with these frames (outermost first)."""
    leaf = frames[-1]
    return {
        "event_id": str(uuid.uuid4()),
        "container_id": container_id,
        "pid": call.pid,
        "tid": call.tid,
        "timestamp_ns": call.boot_ns,
        "symbol": leaf.signature or call.funcname,
        "function_address": signed64(leaf.address),
        "stack_trace": [signed64(f.address) for f in frames],
        "runtime_type": "PYTHON",
        "library": leaf.path or None,
        "purl": leaf.purl,
        "received_at_us": time.time_ns() // 1000,
        "function_signature": leaf.signature,
        "binary_digest": leaf.binary_digest,
        "binary_offset": leaf.binary_offset,
        "node_hash": None,
        "callstack_hash": None,
        "observed_at_us": wall_us,
        "host": host,
        "agent_id": agent_id,
        "cgroup_id": call.cgroup_id,
        "probe_id": spec.probe_id,
        "observation_count": count,
        "last_timestamp_ns": last_boot_ns if count > 1 else None,
        "stack_frames": [{"address": signed64(f.address), "binary_digest": f.binary_digest,
                          "binary_offset": f.binary_offset, "library": f.path or None} for f in frames],
        "stack_truncated": bool(call.flags & FLAG_TRUNCATED),
    }
