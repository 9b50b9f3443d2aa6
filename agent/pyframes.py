"""Python frames in native paths: a probe anywhere (libz's deflate, libssl) reached from
Python shows the Python functions that reached it, in place of the evaluation loop's frames.

How (docs/managed-runtimes.md, "Python frames in native paths"):
- per process, when its mapping table is written, the agent describes its interpreter to
  the BPF program (bpf/calltrace.h, struct python_process): where `_PyRuntime` lies, the
  per-version offsets of agent/pylayouts.py and, before 3.11, where glibc's struct pthread
  keeps the tid (libc's own `_thread_db_pthread_tid`, as libthread_db reads it);
- at each call the program finds the thread state whose thread is the caller (not the
  GIL holder: C code such as zlib releases the GIL, and another thread may hold it), walks
  its frames, and copies each code object's names into an LRU map once, so they outlive
  the process. A layout that does not fit the interpreter finds no thread and walks
  nothing: a path is never given another thread's frames;
- here, each `_PyEval_EvalFrameDefault` frame of the native path, innermost first, is
  replaced by the Python frames its call was running (where each call's frames end, the
  program marks). Counts that do not line up (greenlets, a custom frame evaluator) leave
  the native path as it is, counted;
- a Python frame is a unit of code like a JIT blob (agent/perfmap.py): its digest is made
  of the source file's digest and the function's name and first line, its offset 1, its
  name `module.qualname` published as a one-name symbol table, and its source file's
  package in the module map.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import struct
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from runtime_signals.agent.perfmap import JitModule
from runtime_signals.agent.procmaps import DigestCache, Mapping, ResolvedAddress, parse_maps, read_memory
from runtime_signals.agent.pylayouts import CPythonLayout, layout
from runtime_signals.agent.pysource import PythonSources, module_candidates
from runtime_signals.agent.symtab import load_segments, to_file_offset
from runtime_signals.agent.unwind import Segment, mapping_bias
from runtime_signals.agent.wire import (
    PY_CODE_FILE_UNREAD,
    PY_CODE_NAME_UNREAD,
    PY_CODE_NOT_CODE,
    PY_ENTRY_EVERY_FRAME,
    PY_ENTRY_IS_ENTRY,
    PY_ENTRY_SHIM,
    PY_FILE_BYTES,
    PY_FLAG_NO_THREAD,
    PY_FLAG_READ_FAULT,
    PY_FLAG_TRUNCATED,
    PY_FLAG_WALKED,
    PY_FRAME_WINDOW,
    PY_NAME_BYTES,
    PyCode,
    PyCodeKey,
    PythonProcess,
)

log = logging.getLogger(__name__)

_INTERPRETER = re.compile(r"(?:^|/)(?:lib)?python(\d)\.(\d+)[a-z]*(?:\.so[.\d]*)?$")
_LIBC = re.compile(r"(?:^|/)libc(?:-[\d.]+)?\.so(?:\.6)?$")
_EVAL_FUNCTION = "_PyEval_EvalFrameDefault"
STRING_STATE_OFFSET = 32  # PyASCIIObject.state, after refcount, type, length and hash
CODE_UNIT_PREFIX = b"runtime-signals/python-code/v1\n"
# 3.13 publishes its offsets at the start of _PyRuntime (_Py_DebugOffsets, in
# Include/internal/pycore_runtime.h): the words, after the "xdebugpy" cookie, that hold the
# fields the walk reads, by their CPythonLayout name. Checked against the table before a
# process is described: a build whose offsets differ is not walked.
DEBUG_COOKIE = b"xdebugpy"
DEBUG_FREE_THREADED_WORD = 2
DEBUG_OFFSET_WORDS = {
    "runtime_interpreters_head": 5, "interp_threads_head": 9, "thread_next": 21, "thread_current_frame": 23,
    "thread_id": 24, "thread_native_thread_id": 25, "frame_previous": 29, "frame_code": 30, "frame_owner": 33,
    "code_filename": 35, "code_name": 36, "code_qualname": 37, "code_firstlineno": 39,
}
MAX_NAMED_CODES = 65_536
MAX_FILES = 256


@dataclass(frozen=True, slots=True)
class InterpreterFile:
    """What one interpreter binary (python3.X or libpython3.X.so) tells about itself."""

    version: tuple[int, int]
    runtime_address: int          # ELF virtual address of _PyRuntime
    code_type_address: int        # ELF virtual address of PyCode_Type
    eval_ranges: tuple[tuple[int, int], ...]  # file offsets [start, end) of the evaluation loop
    segments: tuple[tuple[int, int, int], ...]  # PT_LOAD (file offset, virtual address, memory bytes)
    debug_offsets: tuple[int, ...] = ()  # the words of _Py_DebugOffsets (3.13+), as the file holds them


def read_interpreter(path: Path, version: tuple[int, int]) -> InterpreterFile | None:
    """The interpreter's _PyRuntime, PyCode_Type and evaluation loop, from its symbol tables,
    and the offsets it publishes (3.13+); None when it has none of them (a launcher that
    links libpython, a stripped static build)."""
    runtime: int | None = None
    code_type: int | None = None
    evals: list[tuple[int, int]] = []
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            loads = load_segments(elf)
            segments = tuple((offset, vaddr, size) for vaddr, size, offset in loads)
            for section_name in (".dynsym", ".symtab"):
                section = elf.get_section_by_name(section_name)
                if not isinstance(section, SymbolTableSection):
                    continue
                for symbol in section.iter_symbols():
                    name = symbol.name
                    if name == "_PyRuntime" and symbol["st_shndx"] != "SHN_UNDEF":
                        runtime = symbol["st_value"]
                    elif name == "PyCode_Type" and symbol["st_shndx"] != "SHN_UNDEF":
                        code_type = symbol["st_value"]
                    elif (name == _EVAL_FUNCTION or name.startswith(_EVAL_FUNCTION + ".cold")) \
                            and symbol["st_shndx"] != "SHN_UNDEF" and symbol["st_size"]:
                        start = to_file_offset(loads, symbol["st_value"])
                        if start is not None:
                            evals.append((start, start + symbol["st_size"]))
            if runtime is None or code_type is None or not evals:
                return None
            debug_words: tuple[int, ...] = ()
            runtime_offset = to_file_offset(loads, runtime)
            if version >= (3, 13) and runtime_offset is not None:
                handle.seek(runtime_offset)
                data = handle.read(8 * (max(DEBUG_OFFSET_WORDS.values()) + 1))
                if data.startswith(DEBUG_COOKIE) and len(data) % 8 == 0:
                    debug_words = struct.unpack(f"<{len(data) // 8}Q", data)
    except (OSError, ELFError, ValueError, struct.error):
        return None
    return InterpreterFile(version, runtime, code_type, tuple(sorted(set(evals))), segments, debug_words)


def debug_offsets_differ(shape: CPythonLayout, described: InterpreterFile) -> list[str]:
    """The fields where the offsets the interpreter file publishes (3.13+) differ from the
    table, or why they cannot be compared; empty when they agree or the version publishes
    none."""
    if shape.debug_offsets is None:
        return []
    words = described.debug_offsets
    if not words:
        return ["_Py_DebugOffsets not found at _PyRuntime"]
    if words[DEBUG_FREE_THREADED_WORD]:
        return ["a free-threaded build"]
    return [name for name, index in DEBUG_OFFSET_WORDS.items() if words[index] != getattr(shape, name)]


def pthread_tid_offset(libc: Path) -> int | None:
    """Where glibc's struct pthread keeps the tid: libc's own description for debuggers
    (`_thread_db_pthread_tid`: bits, count, offset), None for another libc."""
    try:
        with open(libc, "rb") as handle:
            elf = ELFFile(handle)
            section = elf.get_section_by_name(".dynsym")
            if not isinstance(section, SymbolTableSection):
                return None
            found = section.get_symbol_by_name("_thread_db_pthread_tid")
            if not found:
                return None
            offset = to_file_offset(load_segments(elf), found[0]["st_value"])
            if offset is None:
                return None
            handle.seek(offset)
            bits, count, field_offset = struct.unpack("<3I", handle.read(12))
    except (OSError, ELFError, ValueError, struct.error):
        return None
    return field_offset if bits == 32 and count == 1 else None


def process_description(shape: CPythonLayout, runtime_address: int, pthread_tid: int | None,
                        code_type_address: int = 0) -> PythonProcess | None:
    """struct python_process for one process; None where the walk cannot find the caller's
    thread state (before 3.11 without glibc's description of struct pthread)."""
    value = PythonProcess()
    value.runtime = runtime_address
    value.code_type = code_type_address
    value.interpreters_head = shape.runtime_interpreters_head
    value.threads_head = shape.interp_threads_head
    value.thread_next = shape.thread_next
    if shape.thread_native_thread_id is not None:
        value.thread_tid, value.pthread_tid = shape.thread_native_thread_id, -1
    else:
        if pthread_tid is None or shape.thread_id is None:
            return None
        value.thread_tid, value.pthread_tid = shape.thread_id, pthread_tid
    if shape.thread_frame is not None:                      # <= 3.10
        value.thread_frame, value.cframe_frame = shape.thread_frame, -1
        value.entry_rule = PY_ENTRY_EVERY_FRAME
    elif shape.thread_current_frame is not None:            # 3.13
        value.thread_frame, value.cframe_frame = shape.thread_current_frame, -1
        value.entry_rule = PY_ENTRY_SHIM
    else:                                                   # 3.11, 3.12
        assert shape.thread_cframe is not None and shape.cframe_current_frame is not None
        value.thread_frame, value.cframe_frame = shape.thread_cframe, shape.cframe_current_frame
        value.entry_rule = PY_ENTRY_IS_ENTRY if shape.version == (3, 11) else PY_ENTRY_SHIM
    value.frame_previous = shape.frame_previous
    value.frame_code = shape.frame_code
    value.frame_owner = shape.frame_owner if shape.frame_owner is not None else -1
    value.frame_is_entry = shape.frame_is_entry if shape.frame_is_entry is not None else -1
    value.code_filename = shape.code_filename
    value.code_name = shape.code_qualname if shape.code_qualname is not None else shape.code_name
    value.code_firstlineno = shape.code_firstlineno
    value.string_data = shape.ascii_object_bytes
    value.string_state = STRING_STATE_OFFSET
    # The frame's fields, read at once: from the first, 8-aligned (the pointers are).
    fields = [shape.frame_code, shape.frame_previous, shape.frame_owner, shape.frame_is_entry]
    start = min(f for f in fields if f is not None) // 8 * 8
    if max(f for f in fields if f is not None) - start + 8 > PY_FRAME_WINDOW:
        return None
    value.frame_window = start
    return value


def evaluation_groups(frames: Sequence[tuple[int, int]], entries: int) -> tuple[list[list[tuple[int, int]]], int]:
    """The Python frames split per evaluation loop call, innermost first, and how many
    frames after the last complete call are left over (the walk was cut inside a call)."""
    groups: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for index, frame in enumerate(frames):
        current.append(frame)
        if entries & (1 << index):
            groups.append(current)
            current = []
    return groups, len(current)


def splice(native: Sequence[ResolvedAddress], is_eval: Callable[[int, ResolvedAddress], bool],
           groups: Sequence[Sequence[ResolvedAddress]], *, native_complete: bool,
           python_complete: bool) -> list[ResolvedAddress] | None:
    """The native path (innermost first) with its k-th evaluation loop frame replaced by
    the k-th group of Python frames; None when the two cannot be lined up: both walks
    reached their outermost frame with different numbers of calls. A walk cut short lines
    up from the innermost call; the loop frames past the last group stay as they are."""
    positions = [i for i, frame in enumerate(native) if i > 0 and is_eval(i, frame)]
    if native_complete and python_complete and len(positions) != len(groups):
        return None
    if not native_complete and python_complete and len(positions) > len(groups):
        return None
    if native_complete and not python_complete and len(groups) > len(positions):
        return None
    replaced = dict(zip(positions, groups, strict=False))
    spliced: list[ResolvedAddress] = []
    for index, frame in enumerate(native):
        spliced.extend(replaced.get(index, (frame,)))
    return spliced


def code_unit_digest(file_identity: str, symbol: str, first_line: int) -> str:
    """The digest a Python function is located in: its source file's digest (or path, when
    unreadable), its qualified name and its first line."""
    text = CODE_UNIT_PREFIX + f"{file_identity}\n{symbol}\n{first_line}\n".encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


@dataclass(frozen=True, slots=True)
class CodeNames:
    name: str          # co_qualname from 3.11, co_name before
    filename: str
    first_line: int


@dataclass(slots=True)
class _Process:
    interpreter: InterpreterFile
    interpreter_digest: str
    interpreter_path: str
    shape: CPythonLayout
    code_type: int  # PyCode_Type's address in the process


# What _read_names answers for an object whose type is not PyCode_Type.
NOT_CODE = CodeNames("", "", -1)


def _read_ascii(proc: Path, shape: CPythonLayout, address: int, limit: int) -> str | None:
    header = read_memory(proc, address + STRING_STATE_OFFSET, 4)
    if header is None or len(header) < 4:
        return None
    state = int.from_bytes(header, "little")
    if not (state & (1 << 5) and state & (1 << 6)):  # compact ASCII only (as the program)
        return None
    data = read_memory(proc, address + shape.ascii_object_bytes, limit)
    if data is None or b"\0" not in data:
        return None
    return data[:data.index(b"\0")].decode("ascii", errors="replace")


class PythonStacks:
    """The agent's half of Python frames: describes interpreters to the program, names code
    objects and splices Python frames into native paths."""

    def __init__(self, map_fds: tuple[int, int], sources: PythonSources, digests: DigestCache, *,
                 proc_root: Path = Path("/proc"), on_code_unit: Callable[[int, JitModule], None] | None = None,
                 max_named: int = MAX_NAMED_CODES) -> None:
        import bcc  # the BPF toolchain is needed only where the agent runs

        self._lib = bcc.libbcc.lib
        self._processes_fd, self._codes_fd = map_fds
        self._sources = sources
        self._digests = digests
        self._proc_root = proc_root
        self._on_code_unit = on_code_unit
        self._max_named = max_named
        # Interpreter and libc files by digest, each read once while remembered.
        self._interpreters: LRUCache[str, InterpreterFile | None] = LRUCache(MAX_FILES)
        self._libcs: LRUCache[str, int | None] = LRUCache(MAX_FILES)  # the tid offset in struct pthread
        self._described: dict[int, _Process] = {}
        self._named: OrderedDict[tuple[int, int, int], ResolvedAddress | None] = OrderedDict()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def sizes(self) -> dict[str, int]:
        """Entries held, for /metrics."""
        return {"python_processes": len(self._described), "python_codes_named": len(self._named),
                "python_interpreter_files": len(self._interpreters)}

    def figures(self) -> dict[str, int]:
        """What happened to Python paths and interpreters so far, for /metrics (zeros included)."""
        names = ("python_paths_spliced", "python_frames_cut", "python_frames_not_lined_up", "python_frames_not_code",
                 "python_debug_offsets_differ",
                 "python_no_thread",
                 "python_not_walked", "python_codes_unread", "python_named_evicted", "python_version_not_described",
                 "python_interpreter_without_symbols", "python_thread_unknown_libc", "python_describe_failed")
        return {name: self.counts[name] for name in names}

    # --- describing processes -------------------------------------------------------

    def load_process(self, pid: int, mappings: Sequence[Mapping]) -> None:
        """Describe pid's interpreter to the native probes' program, when it runs one this
        agent knows."""
        found = self._describe(pid, mappings)
        if found is None:
            return
        process, value = found
        key = ctypes.c_uint32(pid)
        if self._lib.bpf_update_elem(self._processes_fd, ctypes.byref(key), ctypes.byref(value), 0) != 0:
            log.warning("python frames: describing pid %d failed: %s", pid, os.strerror(ctypes.get_errno()))
            self.counts["python_describe_failed"] += 1
            return
        with self._lock:
            self._described[pid] = process

    def marker_description(self, pid: int) -> PythonProcess | None:
        """pid's interpreter as the Python-function probes' program walks it: the same walk,
        recording co_name (what the markers report) rather than co_qualname."""
        try:
            mappings = parse_maps((self._proc_root / str(pid) / "maps").read_text())
        except OSError:
            return None
        found = self._describe(pid, mappings)
        if found is None:
            return None
        process, value = found
        value.code_name = process.shape.code_name
        return value

    def _describe(self, pid: int, mappings: Sequence[Mapping]) -> tuple[_Process, PythonProcess] | None:
        root = self._proc_root / str(pid) / "root"
        # A launcher executable (python3.X linked to libpython3.X.so) holds no interpreter:
        # the file that defines _PyRuntime is the one.
        candidates = sorted({m.path for m in mappings if _INTERPRETER.search(m.path)}, key=lambda p: ".so" not in p)
        for path in candidates:
            match = _INTERPRETER.search(path)
            assert match is not None
            version = (int(match[1]), int(match[2]))
            shape = layout(version)
            if shape is None:
                self.counts["python_version_not_described"] += 1
                return None
            host_path = root / path.lstrip("/")
            digest = self._digests.digest(host_path)
            if digest is None:
                continue
            with self._lock:
                if digest not in self._interpreters:
                    self._interpreters[digest] = read_interpreter(host_path, version)
                described = self._interpreters[digest]
            if described is None:
                continue
            differ = debug_offsets_differ(shape, described)
            if differ:
                self.counts["python_debug_offsets_differ"] += 1
                log.warning("python frames: %s is not walked: its published offsets differ from %d.%d's (%s)",
                            path, *version, ", ".join(differ))
                return None
            bias = self._bias(path, mappings, described)
            if bias is None:
                return None
            pthread_tid = None
            if shape.thread_native_thread_id is None:
                pthread_tid = self._pthread_tid(root, mappings)
            value = process_description(shape, described.runtime_address + bias, pthread_tid,
                                        described.code_type_address + bias)
            if value is None:
                self.counts["python_thread_unknown_libc"] += 1
                return None
            return _Process(described, digest, path, shape, described.code_type_address + bias), value
        if candidates:
            self.counts["python_interpreter_without_symbols"] += 1
        return None

    @staticmethod
    def _bias(path: str, mappings: Sequence[Mapping], described: InterpreterFile) -> int | None:
        """address - bias = the ELF virtual address, from one executable mapping of the file
        (one load bias for the whole file)."""
        segments = [Segment(offset, vaddr, size) for offset, vaddr, size in described.segments]
        return next((bias for m in mappings if m.path == path
                     if (bias := mapping_bias(m, segments)) is not None), None)

    def _pthread_tid(self, root: Path, mappings: Sequence[Mapping]) -> int | None:
        libc = next((m for m in mappings if _LIBC.search(m.path)), None)
        if libc is None:
            return None
        host_path = root / libc.path.lstrip("/")
        digest = self._digests.digest(host_path)
        if digest is None:
            return None
        with self._lock:
            if digest not in self._libcs:
                self._libcs[digest] = pthread_tid_offset(host_path)
            return self._libcs[digest]

    def forget(self, pid: int) -> None:
        with self._lock:
            if self._described.pop(pid, None) is None:
                return
            for named in [k for k in self._named if k[0] == pid]:
                del self._named[named]
        key = ctypes.c_uint32(pid)
        self._lib.bpf_delete_elem(self._processes_fd, ctypes.byref(key))

    # --- paths ----------------------------------------------------------------------

    def splice_call(self, pid: int, native: list[ResolvedAddress], py_frames: Sequence[tuple[int, int]],
                    py_flags: int, py_entries: int, *, native_complete: bool) -> list[ResolvedAddress]:
        """The native path (innermost first) with the Python frames of the call in place."""
        if not py_flags:
            return native
        if py_flags & PY_FLAG_NO_THREAD:
            self.counts["python_no_thread"] += 1
            return native
        process = self._described.get(pid)
        if process is None or not py_flags & PY_FLAG_WALKED:
            self.counts["python_not_walked"] += 1
            return native
        groups, left_over = evaluation_groups(py_frames, py_entries)
        python_complete = not (py_flags & (PY_FLAG_TRUNCATED | PY_FLAG_READ_FAULT)) and left_over == 0
        named = [[self._name(pid, process, code, name) for code, name in group] for group in groups]
        if any(frame is None for group in named for frame in group):
            # A "code object" of another type: the offsets do not fit this interpreter, and
            # no frame of the walk can be trusted. The path stays native.
            self.counts["python_frames_not_code"] += 1
            return native

        def is_eval(index: int, frame: ResolvedAddress) -> bool:
            if frame.binary_digest != process.interpreter_digest or frame.binary_offset is None:
                return False
            offset = frame.binary_offset - 1
            return any(start <= offset < end for start, end in process.interpreter.eval_ranges)

        checked = [[frame for frame in group if frame is not None] for group in named]
        spliced = splice(native, is_eval, checked, native_complete=native_complete, python_complete=python_complete)
        if spliced is None:
            self.counts["python_frames_not_lined_up"] += 1
            return native
        self.counts["python_paths_spliced"] += 1
        if not python_complete:
            self.counts["python_frames_cut"] += 1
        return spliced

    def _name(self, pid: int, process: _Process, code: int, name: int) -> ResolvedAddress | None:
        """The frame of a code object, None when the object is no code object."""
        key = (pid, code, name)
        with self._lock:
            if key in self._named:
                self._named.move_to_end(key)
                return self._named[key]
        names = self._read_names(pid, process, code, name)
        frame = None if names is NOT_CODE else self._locate(pid, process, code, names)
        with self._lock:
            self._named[key] = frame
            if len(self._named) > self._max_named:
                self._named.popitem(last=False)
                self.counts["python_named_evicted"] += 1
        return frame

    def _read_names(self, pid: int, process: _Process, code: int, name: int) -> CodeNames | None:
        """A code object's names: as the program copied them at the call, else from the
        process's memory while it lives; NOT_CODE for an object of another type."""
        shape = process.shape
        key = PyCodeKey(code=code, name=name, pid=pid)
        value = PyCode()
        found = self._lib.bpf_lookup_elem(self._codes_fd, ctypes.byref(key), ctypes.byref(value)) == 0
        if found and value.flags & PY_CODE_NOT_CODE:
            return NOT_CODE
        if found and not value.flags & (PY_CODE_NAME_UNREAD | PY_CODE_FILE_UNREAD):
            return CodeNames(value.name.decode(errors="replace"), value.filename.decode(errors="replace"),
                             value.firstlineno)
        proc = self._proc_root / str(pid)
        type_word = read_memory(proc, code + 8, 8)
        if type_word is not None and len(type_word) == 8 and int.from_bytes(type_word, "little") != process.code_type:
            return NOT_CODE
        fields = read_memory(proc, code, max(shape.code_filename, shape.code_firstlineno) + 8)
        if fields is None or len(fields) < shape.code_filename + 8:
            self.counts["python_codes_unread"] += 1
            return None
        first_line = int.from_bytes(fields[shape.code_firstlineno:shape.code_firstlineno + 4], "little")
        filename_object = int.from_bytes(fields[shape.code_filename:shape.code_filename + 8], "little")
        function = _read_ascii(proc, shape, name, PY_NAME_BYTES)
        filename = _read_ascii(proc, shape, filename_object, PY_FILE_BYTES)
        if function is None or filename is None:
            self.counts["python_codes_unread"] += 1
            return None
        return CodeNames(function, filename, first_line)

    def _locate(self, pid: int, process: _Process, code: int, names: CodeNames | None) -> ResolvedAddress:
        if names is None:
            # Its names could not be read: the code object's address, no file. Never a guess.
            return ResolvedAddress(code, None, None, None)
        proc = self._proc_root / str(pid)
        source = self._sources.source(proc, names.filename, process.interpreter_path)
        qualname = names.name
        if process.shape.code_qualname is None and source.index is not None:
            # Before 3.11 a code object has no qualified name: the definition of that name
            # starting at its first line has it.
            qualname = next((d.qualname for d in source.index.definitions
                             if d.first_line == names.first_line and d.name == names.name), names.name)
        if names.name == "<module>":
            qualname = "<module>"
        candidates = module_candidates(source.path)
        symbol = f"{candidates[0]}.{qualname}" if candidates else qualname
        file_digest = self._digests.digest(proc / "root" / source.path.lstrip("/")) if source.index else None
        digest = code_unit_digest(file_digest or source.path, symbol, names.first_line)
        if self._on_code_unit is not None:
            self._on_code_unit(pid, JitModule(0, 0, symbol, source.path, digest, source.purl, "python-code"))
        return ResolvedAddress(code, source.path, digest, 1, source.purl)
