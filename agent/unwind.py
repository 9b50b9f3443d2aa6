"""Unwind rules for the BPF stack walker: each mapped binary's CFI turned into compact
per-address rows, loaded once per binary digest, and each process's executable mappings
pointing at them (see bpf/calltrace.h and docs/unwinding.md).

Three parts, top down:
- `build_rules(path)`: pure, a binary's `.eh_frame` (and `.debug_frame` for addresses the
  former does not cover) as sorted rows of `struct unwind_row`. Runs in a child interpreter
  kept for the next builds (`RulesWorker`, `python -m runtime_signals.agent.unwind --serve`;
  `... FILE` builds one file and prints the pickled rules): pyelftools decodes a large
  library (libcrypto) in seconds, which must not hold the event pump's interpreter, and a
  child started by name re-imports nothing of whatever program embeds the agent.
- `UnwindLoader`: owns the kernel side. Rows of all binaries share one array map, handed
  out once per digest and kept for the agent's life; a binary that does not fit, or whose
  addresses do not fit 32 bits, is flagged and walked by frame pointers. Each process gets
  a table of its executable file mappings (start, end, bias, table id), rewritten when its
  mappings change or when one of its binaries' rules becomes ready.
- `checked_frames`: the agent's half of the end rule for calls the kernel walked before the
  process had a table (CALL_FLAG_UNCHECKED): the path is cut at the first return address
  that lies in no executable file mapping.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.callframe import FDE, CFARule, RegisterRule
from elftools.elf.elffile import ELFFile

from runtime_signals.agent.procmaps import DigestCache, Mapping, ResolvedAddress, parse_anonymous_code
from runtime_signals.agent.wire import (
    FLAG_UNCHECKED,
    STACK_END_COMPLETE,
    STACK_END_NAMES,
    STACK_END_NO_UNWIND_INFO,
    UNWIND_CFA_END,
    UNWIND_CFA_NONE,
    UNWIND_CFA_RBP,
    UNWIND_CFA_RSP,
    UNWIND_CFA_UNSUPPORTED,
    UNWIND_RBP_AT_CFA,
    UNWIND_RBP_SAME,
    UNWIND_RBP_UNKNOWN,
    UnwindRow,
    UnwindTable,
    process_mappings_type,
)

log = logging.getLogger(__name__)

# x86-64 DWARF register numbers (System V psABI, figure 3.36).
_DWARF_RBP = 6
_DWARF_RSP = 7
_DWARF_RA = 16
_ROW_BYTES = ctypes.sizeof(UnwindRow)
_U32_LIMIT = 1 << 32

Rule = tuple[int, int, int, int]  # (cfa_register, cfa_offset, rbp_rule, rbp_offset)
_NO_RULE: Rule = (UNWIND_CFA_NONE, 0, UNWIND_RBP_SAME, 0)
_UNSUPPORTED: Rule = (UNWIND_CFA_UNSUPPORTED, 0, UNWIND_RBP_SAME, 0)


# --- building rules (pure) ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Segment:
    """An executable PT_LOAD segment: maps file offsets to the ELF virtual addresses the rules use."""

    file_offset: int
    virtual_address: int
    file_bytes: int


@dataclass(frozen=True, slots=True)
class UnwindRules:
    """One binary's rows, packed as `struct unwind_row`s sorted by address."""

    rows: bytes
    row_count: int
    fde_count: int
    unsupported_rows: int  # rows the walker cannot express (frame pointers there)
    sources: tuple[str, ...]  # ".eh_frame", ".debug_frame"
    segments: tuple[Segment, ...]
    build_ns: int
    error: str = ""  # why there are no rows (not ELF, no CFI, addresses beyond 32 bits)

    @property
    def row_bytes(self) -> int:
        return self.row_count * _ROW_BYTES


def _rule(row: dict[object, object]) -> Rule:
    """A decoded CFI row as (cfa_register, cfa_offset, rbp_rule, rbp_offset)."""
    ra = row.get(_DWARF_RA)
    if isinstance(ra, RegisterRule) and ra.type == RegisterRule.UNDEFINED:
        return (UNWIND_CFA_END, 0, UNWIND_RBP_SAME, 0)
    if not (isinstance(ra, RegisterRule) and ra.type == RegisterRule.OFFSET and ra.arg == -8):
        return _UNSUPPORTED
    cfa = row.get("cfa")
    if not isinstance(cfa, CFARule) or cfa.expr is not None or cfa.reg not in (_DWARF_RSP, _DWARF_RBP):
        return _UNSUPPORTED
    offset = int(cfa.offset or 0)
    if not -(1 << 31) <= offset < 1 << 31:
        return _UNSUPPORTED
    register = UNWIND_CFA_RSP if cfa.reg == _DWARF_RSP else UNWIND_CFA_RBP
    rbp = row.get(_DWARF_RBP)
    if rbp is None or (isinstance(rbp, RegisterRule) and rbp.type == RegisterRule.SAME_VALUE):
        return (register, offset, UNWIND_RBP_SAME, 0)
    saved_at = rbp.arg if isinstance(rbp, RegisterRule) and rbp.type == RegisterRule.OFFSET else None
    if isinstance(saved_at, int) and -(1 << 15) <= saved_at < 1 << 15:
        return (register, offset, UNWIND_RBP_AT_CFA, saved_at)
    return (register, offset, UNWIND_RBP_UNKNOWN, 0)


def _fde_ranges(entries: Sequence[object]) -> list[tuple[int, int, FDE]]:
    ranges = []
    for entry in entries:
        if isinstance(entry, FDE):
            start, length = entry.header["initial_location"], entry.header["address_range"]
            if isinstance(start, int) and isinstance(length, int):
                ranges.append((start, start + length, entry))
    return ranges


def build_rules(path: str) -> UnwindRules:
    """The rows of the binary at path. Where .eh_frame and .debug_frame both describe an
    address, .eh_frame wins (it is what the C++ runtime itself unwinds with); between and
    after FDEs a UNWIND_CFA_NONE row says there are no rules (frame pointers there).
    Consecutive rows with the same rule are merged: the walker needs only the rule."""
    started_ns = time.monotonic_ns()

    def failed(error: str, segments: tuple[Segment, ...] = ()) -> UnwindRules:
        return UnwindRules(b"", 0, 0, 0, (), segments, time.monotonic_ns() - started_ns, error)

    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            if elf["e_machine"] != "EM_X86_64":
                return failed(f"{path}: machine {elf['e_machine']}, only x86-64 rules are built")
            segments = tuple(Segment(int(s["p_offset"]), int(s["p_vaddr"]), int(s["p_filesz"]))
                             for s in elf.iter_segments()
                             if s["p_type"] == "PT_LOAD" and int(s["p_flags"]) & 1)  # PF_X
            if not elf.has_dwarf_info() and elf.get_section_by_name(".eh_frame") is None:
                return failed(f"{path}: no .eh_frame or .debug_frame", segments)
            dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
            sources: list[str] = []
            ranges: list[tuple[int, int, FDE]] = []
            if dwarf.has_EH_CFI():
                ranges += _fde_ranges(dwarf.EH_CFI_entries())
                sources.append(".eh_frame")
            covered = sorted((start, end) for start, end, _ in ranges)
            if dwarf.has_CFI():
                extra = [r for r in _fde_ranges(dwarf.CFI_entries()) if not _overlaps(covered, r[0], r[1])]
                if extra:
                    ranges += extra
                    sources.append(".debug_frame")
            ranges.sort(key=lambda r: (r[0], r[1]))
            rows: list[tuple[int, Rule]] = []
            unsupported = 0
            covered_to = 0
            for start, end, fde in ranges:
                if end <= start or start < covered_to:
                    continue  # empty, or overlapping an FDE already taken: the first one wins
                if rows and start > covered_to:
                    rows.append((covered_to, _NO_RULE))
                try:
                    table = fde.get_decoded().table
                except (DWARFError, ELFError, ValueError, KeyError, AssertionError):
                    # pyelftools cannot decode some opcodes (DW_CFA_GNU_args_size): this one
                    # function is walked by frame pointers, the rest of the binary by rules.
                    rows.append((start, _UNSUPPORTED))
                    unsupported += 1
                    covered_to = end
                    continue
                for index, decoded in enumerate(table):
                    pc = int(decoded["pc"])
                    if pc >= end:
                        break
                    rule = _rule(decoded)
                    unsupported += rule[0] == UNWIND_CFA_UNSUPPORTED
                    rows.append((pc if index else start, rule))
                covered_to = end
            if rows:
                rows.append((covered_to, _NO_RULE))
    except (OSError, DWARFError, ELFError, ValueError, KeyError) as exc:
        return failed(f"{path}: {exc}")
    merged: list[tuple[int, Rule]] = []
    for address, rule in rows:
        if merged and merged[-1][0] == address:
            merged[-1] = (address, rule)  # a later row at the same address replaces it
        elif not merged or merged[-1][1] != rule:
            merged.append((address, rule))
    if merged and merged[-1][0] >= _U32_LIMIT:
        return failed(f"{path}: code above 4 GiB of virtual address, rows hold 32-bit addresses", segments)
    packed = (UnwindRow * len(merged))()
    for slot, (address, (cfa_register, cfa_offset, rbp_rule, rbp_offset)) in zip(packed, merged, strict=False):
        slot.address, slot.cfa_offset, slot.rbp_offset = address, cfa_offset, rbp_offset
        slot.cfa_register, slot.rbp_rule = cfa_register, rbp_rule
    return UnwindRules(bytes(packed), len(merged), len(ranges), unsupported, tuple(sources), segments,
                       time.monotonic_ns() - started_ns, "" if merged else f"{path}: no FDE")


def _overlaps(sorted_ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    index = bisect_right(sorted_ranges, (start, _U32_LIMIT << 32)) - 1
    if index >= 0 and sorted_ranges[index][1] > start:
        return True
    return index + 1 < len(sorted_ranges) and sorted_ranges[index + 1][0] < end


class RulesWorker:
    """A child interpreter kept to build rules for the files it is sent (their descriptors,
    over a Unix socket), one at a time: its start-up (~0.4 s, most of a small binary's build)
    is paid once, not per binary. It is replaced after a failure, a timeout, or
    BUILDS_PER_WORKER builds (so memory a large build left in it is given back). One per
    building thread; not thread-safe."""

    BUILDS_PER_WORKER = 64

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._builds = 0

    def build(self, fd: int, timeout_s: float = 600.0) -> UnwindRules:
        started_ns = time.monotonic_ns()
        for attempt in (1, 2):  # a worker that died since its last build is started again once
            try:
                channel = self._channel()
                socket.send_fds(channel, [b"B"], [fd])
                rules = self._reply(channel, timeout_s)
                self._builds += 1
                if self._builds >= self.BUILDS_PER_WORKER:
                    self.close()
                return rules
            except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
                self.close()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    return UnwindRules(b"", 0, 0, 0, (), (), time.monotonic_ns() - started_ns,
                                       f"building rules failed: {exc!r}")
        raise AssertionError("unreachable")

    def start(self) -> None:
        self._channel()

    def _channel(self) -> socket.socket:
        if self._socket is not None and self._process is not None and self._process.poll() is None:
            return self._socket
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "runtime_signals.agent.unwind", "--serve", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        finally:
            theirs.close()
        self._socket, self._builds = ours, 0
        return ours

    @staticmethod
    def _reply(channel: socket.socket, timeout_s: float) -> UnwindRules:
        channel.settimeout(timeout_s)
        size = int.from_bytes(_read_exactly(channel, 8), "little")
        rules = pickle.loads(_read_exactly(channel, size))  # our own child's output, never a peer's
        if not isinstance(rules, UnwindRules):
            raise ValueError(f"the rules worker returned {type(rules).__name__}")
        return rules

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None


def _read_exactly(channel: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = channel.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise EOFError("the rules worker closed its socket")
        data += chunk
    return bytes(data)


_workers = threading.local()


def _thread_worker() -> RulesWorker:
    worker: RulesWorker | None = getattr(_workers, "worker", None)
    if worker is None:
        worker = _workers.worker = RulesWorker()
    return worker


def build_rules_in_worker(fd: int, timeout_s: float = 600.0) -> UnwindRules:
    """build_rules of the file open at fd, in this thread's RulesWorker."""
    return _thread_worker().build(fd, timeout_s)


def start_worker() -> None:
    """Start this thread's RulesWorker now, so that its first build does not wait for the
    child interpreter's start-up."""
    _thread_worker().start()


def serve(channel_fd: int) -> int:
    """The worker's side: build the rules of each file descriptor received, reply with the
    pickled UnwindRules (8-byte length first), until the socket closes."""
    from runtime_signals.agent.unwind import UnwindRules as PackagedRules
    from runtime_signals.agent.unwind import build_rules as packaged_build_rules

    channel = socket.socket(fileno=channel_fd)
    while True:
        message, fds, _flags, _address = socket.recv_fds(channel, 1, 1)
        if not message or not fds:
            return 0
        try:
            started_ns = time.monotonic_ns()
            try:
                rules = packaged_build_rules(f"/dev/fd/{fds[0]}")
            except Exception as exc:  # any file: the reply says why, the worker goes on
                rules = PackagedRules(b"", 0, 0, 0, (), (), time.monotonic_ns() - started_ns,
                                      f"building rules failed: {exc!r}")
        finally:
            for fd in fds:
                os.close(fd)
        data = pickle.dumps(rules)
        channel.sendall(len(data).to_bytes(8, "little") + data)


class RulesCache:
    """Built rules kept on disk by binary digest, so a binary's rules are built once per node,
    not once per agent run (libc takes ~2 s; a JVM's libjvm much longer). Bounded: past
    max_bytes the least recently used files go. Files are written by this agent alone (the
    directory is made 0700) and read as plain data, never unpickled."""

    _MAGIC = b"RSUNWIND1\n"

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir: Path | None = directory
        self._max_bytes = max_bytes
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("unwind: rules cache %s unusable (%s): every binary's rules are built anew", directory, exc)
            self._dir = None

    def _file(self, digest: str) -> Path | None:
        name = digest.removeprefix("sha256:")
        if self._dir is None or not name.isalnum():
            return None
        return self._dir / f"{name}.rules"

    def get(self, digest: str) -> UnwindRules | None:
        path = self._file(digest)
        if path is None:
            return None
        try:
            data = path.read_bytes()
            if not data.startswith(self._MAGIC):
                raise ValueError("not a rules file")
            header_end = data.index(b"\n", len(self._MAGIC))
            header = json.loads(data[len(self._MAGIC):header_end])
            rows = data[header_end + 1:]
            if len(rows) != header["row_count"] * _ROW_BYTES:
                raise ValueError(f"{len(rows)} bytes of rows for {header['row_count']} rows")
            rules = UnwindRules(rows, header["row_count"], header["fde_count"], header["unsupported_rows"],
                                tuple(header["sources"]), tuple(Segment(*s) for s in header["segments"]),
                                header["build_ns"], header["error"])
        except FileNotFoundError:
            self.counts["misses"] += 1
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.counts["unreadable"] += 1
            log.warning("unwind: cached rules %s unreadable (%s): built anew", path, exc)
            return None
        os.utime(path)  # recency, for the bound
        self.counts["hits"] += 1
        return rules

    def put(self, digest: str, rules: UnwindRules) -> None:
        path = self._file(digest)
        if path is None or rules.error.startswith("building rules failed"):
            return  # a failed build (a timeout, a crash) is tried again next run
        header = json.dumps({"row_count": rules.row_count, "fde_count": rules.fde_count,
                             "unsupported_rows": rules.unsupported_rows, "sources": list(rules.sources),
                             "segments": [[s.file_offset, s.virtual_address, s.file_bytes] for s in rules.segments],
                             "build_ns": rules.build_ns, "error": rules.error}).encode()
        temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            temporary.write_bytes(self._MAGIC + header + b"\n" + rules.rows)
            os.replace(temporary, path)
            self.counts["written"] += 1
            self._trim()
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.warning("unwind: caching the rules of %s failed: %s", digest, exc)

    def _trim(self) -> None:
        if self._dir is None:
            return
        with self._lock:
            files = []
            for entry in os.scandir(self._dir):
                if entry.name.endswith(".rules"):
                    st = entry.stat()
                    files.append((st.st_mtime_ns, st.st_size, entry.path))
            total = sum(size for _, size, _ in files)
            for _, size, name in sorted(files):
                if total <= self._max_bytes:
                    break
                Path(name).unlink(missing_ok=True)
                total -= size
                self.counts["evicted"] += 1

    def size_bytes(self) -> int:
        if self._dir is None:
            return 0
        try:
            return sum(e.stat().st_size for e in os.scandir(self._dir) if e.name.endswith(".rules"))
        except OSError:
            return 0


_PAGE_BYTES = 4096


def mapping_bias(mapping: Mapping, segments: Sequence[Segment]) -> int | None:
    """address - bias = the ELF virtual address, for addresses in mapping; None when no
    executable segment holds the mapping's file offset."""
    for segment in segments:
        # The kernel maps whole pages: a segment that does not start on a page boundary (lld
        # packs them, as in Rust's default builds since 1.90) is mapped from the page holding
        # its first byte.
        first_page = segment.file_offset - segment.file_offset % _PAGE_BYTES
        if first_page <= mapping.file_offset < segment.file_offset + max(segment.file_bytes, 1):
            return mapping.start - mapping.file_offset + segment.file_offset - segment.virtual_address
    return None


# --- the agent's half of the end rule -----------------------------------------------

def checked_frames(frames: list[ResolvedAddress], flags: int,
                   end_reason: int) -> tuple[list[ResolvedAddress], str | None]:
    """The frames of one record up to the last true one, and why the path ends early (None:
    complete). A kernel walk with a mapping table never emits a frame outside the process's
    code; a walk without one (FLAG_UNCHECKED: frame pointers, nothing checked) is cut here
    at the first return address that lies in no executable file mapping."""
    if flags & FLAG_UNCHECKED:
        for index in range(1, len(frames)):
            if frames[index].path is None:
                return frames[:index], STACK_END_NAMES[STACK_END_NO_UNWIND_INFO]
    if end_reason == STACK_END_COMPLETE or end_reason >= len(STACK_END_NAMES):
        return frames, None
    return frames, STACK_END_NAMES[end_reason]


# --- the kernel side ----------------------------------------------------------------

def rule_addresses(rules: UnwindRules) -> list[int]:
    """The address of each row of rules, in order (rows are sorted by address)."""
    if not rules.row_count:
        return []
    return [row.address for row in (UnwindRow * rules.row_count).from_buffer_copy(rules.rows)]


# Tables smaller than this are searched whole: a few steps already.
_INDEX_MIN_ROWS = 16
_INDEX_ROWS_PER_ENTRY = 4


def block_index(addresses: Sequence[int]) -> tuple[int, list[int]]:
    """(shift, entries) of the block index of sorted row addresses (struct unwind_table):
    entry b is the index of the row covering address b << shift (the last at or below it; 0
    when none is), one entry per block up to the one past the last row, and no more entries
    than a quarter of the rows: the index shares unwind_rows with the rules, and one entry
    per row would double a node's row memory (a JVM and a few interpreters filled the 2^21
    rows), for a search shorter by only two steps. Empty for small tables."""
    if len(addresses) < _INDEX_MIN_ROWS:
        return 0, []
    shift = 4
    while (addresses[-1] >> shift) + 2 > len(addresses) // _INDEX_ROWS_PER_ENTRY:
        shift += 1
    blocks = (addresses[-1] >> shift) + 2
    return shift, [max(0, bisect_right(addresses, block << shift) - 1) for block in range(blocks)]


@dataclass
class BinaryRules:
    """What the loader knows of one binary (by digest)."""

    path: str  # the first path it was met at
    table_id: int = 0  # 0 until loaded, and for ever when it did not fit or has no rules
    state: str = "building"  # building | loaded | no_rules | did_not_fit
    row_count: int = 0
    build_ns: int = 0
    segments: tuple[Segment, ...] = ()
    detail: str = ""


@dataclass
class UnwindFigures:
    """Memory and coverage of the unwind maps, for SignalStatistics and /metrics."""

    binaries_loaded: int = 0
    binaries_building: int = 0
    binaries_without_rules: int = 0
    binaries_not_fitting: int = 0
    rows_used: int = 0
    rows_capacity: int = 0
    row_map_bytes: int = 0
    processes_loaded: int = 0
    processes_over_mapping_limit: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bytes: int = 0
    by_binary: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # path -> (state, rows, build_ns)


class UnwindLoader:
    """Loads unwind rules and process mapping tables into the tracer's maps."""

    def __init__(self, map_fds: tuple[int, int, int, int], *, unwind_rows: int, unwind_tables: int,
                 max_processes: int, max_mappings: int, digests: DigestCache,
                 proc_root: Path = Path("/proc"), build_workers: int = 1, cache: RulesCache | None = None) -> None:
        import bcc  # Debian's python3-bpfcc (the tracer imported it)
        self._lib = bcc.libbcc.lib
        self._rows_fd, self._tables_fd, self._processes_fd, self._announced_fd = map_fds
        self._row_capacity = unwind_rows
        self._table_capacity = unwind_tables
        self._max_processes = max_processes
        self._max_mappings = max_mappings
        self._process_type = process_mappings_type(max_mappings)
        self._digests = digests
        self._proc_root = proc_root
        self._lock = threading.RLock()
        self._build_workers = build_workers
        self._binaries: dict[str, BinaryRules] = {}
        self._processes: dict[int, list[tuple[Mapping, str | None]]] = {}  # pid -> mappings, digests
        self._over_limit: set[int] = set()
        self._next_row = 0
        self._next_table = 1  # id 0 means "no rules"
        # Threads that each hand builds to their own child interpreter (RulesWorker).
        self._pool = ThreadPoolExecutor(max_workers=build_workers, thread_name_prefix="unwind-rules")
        self._urgent_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unwind-rules-urgent")
        # A held process waits for its binaries' rules for less than a second: the urgent
        # worker's ~0.4 s start-up is paid now, not by the first held process.
        self._urgent_pool.submit(start_worker)
        self._cache = cache
        self._closed = False

    # --- processes ------------------------------------------------------------------

    def load_process(self, pid: int, mappings: Sequence[Mapping], wait_s: float = 0.0) -> None:
        """Give pid a mapping table naming the rules of each of its binaries (building those
        not seen before); called when the agent first meets pid and when its mappings change.
        wait_s > 0 (pid is held, or not probed yet): return once its binaries' rules are
        built, or after wait_s, so its first calls are walked by them."""
        self._load_process(pid, mappings, urgent=wait_s > 0)
        if wait_s > 0:
            with self._lock:
                digests = {d for _, d in self._processes.get(pid, ()) if d is not None}
            self._wait_built(digests, wait_s)

    def wait_built(self, timeout_s: float) -> bool:
        """Wait until no binary's rules are building, or timeout_s."""
        with self._lock:
            digests = set(self._binaries)
        return self._wait_built(digests, timeout_s)

    def _wait_built(self, digests: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if not any(self._binaries[d].state == "building" for d in digests if d in self._binaries):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _load_process(self, pid: int, mappings: Sequence[Mapping], urgent: bool = False) -> None:
        entries: list[tuple[Mapping, str | None]] = []
        root = self._proc_root / str(pid) / "root"
        try:
            entries += [(region, None) for region in
                        parse_anonymous_code((self._proc_root / str(pid) / "maps").read_text())]
        except OSError:
            pass  # exited: its file mappings are all its calls need
        for mapping in mappings:
            digest = self._digests.digest(root / mapping.path.lstrip("/"))
            entries.append((mapping, digest))
            if digest is not None:
                self._offer(digest, str(root / mapping.path.lstrip("/")), mapping.path, urgent)
        with self._lock:
            if pid not in self._processes and len(self._processes) >= self._max_processes:
                log.warning("unwind: %d processes have mapping tables already (max_processes); pid %d is "
                            "walked by frame pointers, checked by the agent", self._max_processes, pid)
                return
            self._processes[pid] = entries
            self._write_process(pid)

    def forget(self, pid: int) -> None:
        """pid exited: drop its table, and its announcement so a process that reuses the pid
        is announced in turn."""
        with self._lock:
            key = ctypes.c_uint32(pid)
            if self._processes.pop(pid, None) is not None:
                self._lib.bpf_delete_elem(self._processes_fd, ctypes.byref(key))
            self._lib.bpf_delete_elem(self._announced_fd, ctypes.byref(key))
            self._over_limit.discard(pid)

    def _write_process(self, pid: int) -> None:
        entries = sorted(self._processes[pid], key=lambda e: e[0].start)
        value = self._process_type()
        if len(entries) > self._max_mappings:
            self._over_limit.add(pid)
            entries = entries[:self._max_mappings]
        for slot, (mapping, digest) in zip(value.mappings, entries, strict=False):
            slot.start, slot.end = mapping.start, mapping.end
            binary = self._binaries.get(digest) if digest else None
            bias = mapping_bias(mapping, binary.segments) if binary and binary.table_id else None
            if binary is not None and bias is not None:
                slot.bias, slot.table_id = bias % (1 << 64), binary.table_id
        value.count = len(entries)
        key = ctypes.c_uint32(pid)
        if self._lib.bpf_update_elem(self._processes_fd, ctypes.byref(key), ctypes.byref(value), 0) != 0:
            log.warning("unwind: writing the mapping table of pid %d failed: %s", pid,
                        os.strerror(ctypes.get_errno()))

    # --- binaries -------------------------------------------------------------------

    def _offer(self, digest: str, readable_path: str, path: str, urgent: bool = False) -> None:
        with self._lock:
            if digest in self._binaries or self._closed:
                return
            self._binaries[digest] = BinaryRules(path)
        cached = self._cache.get(digest) if self._cache is not None else None
        if cached is not None:
            self._install(digest, cached, cached=True)
            return
        # The child reads the file through a descriptor held here: the process that mapped
        # it (its /proc/<pid>/root) may be gone before the build starts.
        try:
            fd = os.open(readable_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            with self._lock:
                del self._binaries[digest]
            return  # gone already: the next process that maps it offers it again
        # A held process waits for its binaries: they do not queue behind a node's backlog.
        pool = self._urgent_pool if urgent else self._pool
        future: Future[UnwindRules] = pool.submit(build_rules_in_worker, fd)
        future.add_done_callback(lambda done: self._built(digest, done, fd))

    def _built(self, digest: str, future: Future[UnwindRules], fd: int) -> None:
        os.close(fd)
        try:
            rules = future.result()
        except Exception as exc:
            rules = UnwindRules(b"", 0, 0, 0, (), (), 0, f"building rules failed: {exc!r}")
        if self._cache is not None:
            self._cache.put(digest, rules)
        self._install(digest, rules)

    def _install(self, digest: str, rules: UnwindRules, cached: bool = False) -> None:
        """Write a binary's rules into the maps. The lock is held only to reserve its rows and
        table id and to publish them: the block index, the bytes and the row writes of a large
        library take a while, and a held process's own binaries must not wait behind them."""
        with self._lock:
            if self._closed:
                return
            binary = self._binaries[digest]
            binary.build_ns, binary.segments, binary.row_count = rules.build_ns, rules.segments, rules.row_count
            if not rules.row_count:
                binary.state, binary.detail = "no_rules", rules.error
                log.info("unwind: no rules for %s [%s] (%s): walked by frame pointers", binary.path, digest,
                         rules.error)
                return
        shift, index = block_index(rule_addresses(rules))
        rows = rules.rows + b"".join(bytes(UnwindRow(address=i)) for i in index)
        with self._lock:
            if self._stopped():  # closed while the lock was free
                return
            if (self._next_row + rules.row_count + len(index) > self._row_capacity
                    or self._next_table >= self._table_capacity):
                binary.state = "did_not_fit"
                binary.detail = (f"{rules.row_count} rows, {self._row_capacity - self._next_row} free of "
                                 f"unwind_rows={self._row_capacity}")
                log.warning("unwind: the rules of %s do not fit (%s): walked by frame pointers, flagged; "
                            "raise unwind_rows", binary.path, binary.detail)
                return
            # Reserved: no other binary writes these rows or this table (a failed write leaves
            # them unused, as the map is never compacted).
            first_row, table_id = self._next_row, self._next_table
            self._next_row += rules.row_count + len(index)
            self._next_table += 1
        written = self._write_rows(first_row, rows)
        with self._lock:
            if self._stopped():  # closed while the lock was free
                return
            if not written:
                binary.state, binary.detail = "did_not_fit", "writing its rows failed"
                return
            table = UnwindTable(first_row=first_row, row_count=rules.row_count, index_shift=shift,
                                index_count=len(index))
            key = ctypes.c_uint32(table_id)
            if self._lib.bpf_update_elem(self._tables_fd, ctypes.byref(key), ctypes.byref(table), 0) != 0:
                binary.state, binary.detail = "did_not_fit", f"writing its table: {os.strerror(ctypes.get_errno())}"
                return
            binary.table_id, binary.state = table_id, "loaded"
            log.info("unwind: rules of %s [%s] loaded: %d rows (%d bytes) from %s in %.2fs%s", binary.path, digest,
                     rules.row_count, rules.row_bytes, "+".join(rules.sources), rules.build_ns / 1e9,
                     " (cached)" if cached else "")
            for pid, entries in self._processes.items():
                if any(d == digest for _, d in entries):
                    self._write_process(pid)

    def _stopped(self) -> bool:
        return self._closed

    def _write_rows(self, first_row: int, rows: bytes) -> bool:
        row_count = len(rows) // _ROW_BYTES
        keys = (ctypes.c_uint32 * row_count)(*range(first_row, first_row + row_count))
        values = (UnwindRow * row_count).from_buffer_copy(rows)
        count = ctypes.c_uint32(row_count)
        if self._lib.bpf_update_batch(self._rows_fd, keys, values, ctypes.byref(count)) == 0:
            return True
        # Kernels without batch updates on arrays: one row at a time.
        for index in range(row_count):
            key = ctypes.c_uint32(first_row + index)
            if self._lib.bpf_update_elem(self._rows_fd, ctypes.byref(key), ctypes.byref(values[index]), 0) != 0:
                log.warning("unwind: writing row %d failed: %s", first_row + index, os.strerror(ctypes.get_errno()))
                return False
        return True

    # --- figures ----------------------------------------------------------------------

    def binary(self, digest: str) -> BinaryRules | None:
        with self._lock:
            return self._binaries.get(digest)

    def figures(self) -> UnwindFigures:
        with self._lock:
            binaries = list(self._binaries.values())
            figures = UnwindFigures(
                binaries_loaded=sum(b.state == "loaded" for b in binaries),
                binaries_building=sum(b.state == "building" for b in binaries),
                binaries_without_rules=sum(b.state == "no_rules" for b in binaries),
                binaries_not_fitting=sum(b.state == "did_not_fit" for b in binaries),
                rows_used=self._next_row, rows_capacity=self._row_capacity,
                row_map_bytes=self._row_capacity * _ROW_BYTES,
                processes_loaded=len(self._processes),
                processes_over_mapping_limit=len(self._over_limit),
                cache_hits=self._cache.counts["hits"] if self._cache else 0,
                cache_misses=self._cache.counts["misses"] if self._cache else 0,
                cache_bytes=self._cache.size_bytes() if self._cache else 0,
                by_binary={b.path: (b.state, b.row_count, b.build_ns) for b in binaries})
        return figures

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._urgent_pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str]) -> int:
    """`python -m runtime_signals.agent.unwind FILE`: the rules of FILE, pickled, on stdout;
    `... --serve FD`: a RulesWorker's child, on the Unix socket FD."""
    if len(argv) == 2 and argv[0] == "--serve":
        from runtime_signals.agent.unwind import serve as packaged_serve
        return packaged_serve(int(argv[1]))
    if len(argv) != 1:
        print("usage: python -m runtime_signals.agent.unwind FILE", file=sys.stderr)
        return 2
    # Run as __main__, this module's classes would pickle as __main__'s: build with the
    # package's own, which the agent unpickles.
    from runtime_signals.agent.unwind import build_rules as packaged_build_rules
    sys.stdout.buffer.write(pickle.dumps(packaged_build_rules(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
