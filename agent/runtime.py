"""Which language runtime a process runs, from its executable and mapped libraries.

The codes are the contract's RuntimeType (schemas.RuntimeType); detection looks for
the runtime's own shared library first (it is there whatever the launcher is named),
then at the executable's name, then for Go's build-info section.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from runtime_signals.schemas.codec import RuntimeType

# Library names are matched on the basename of each mapped file.
_LIBRARY_MARKERS: tuple[tuple[re.Pattern[str], RuntimeType], ...] = (
    (re.compile(r"^libjvm\.so"), RuntimeType.JVM),
    (re.compile(r"^libcoreclr\.so"), RuntimeType.DOTNET),
    (re.compile(r"^libnode\.so"), RuntimeType.NODE),
    (re.compile(r"^libpython\d"), RuntimeType.PYTHON),
    (re.compile(r"^libruby"), RuntimeType.RUBY),
)
_EXECUTABLE_MARKERS: tuple[tuple[re.Pattern[str], RuntimeType], ...] = (
    (re.compile(r"^java$"), RuntimeType.JVM),
    (re.compile(r"^(node|nodejs)$"), RuntimeType.NODE),
    (re.compile(r"^python\d*(\.\d+)?$"), RuntimeType.PYTHON),
    (re.compile(r"^(dotnet)$"), RuntimeType.DOTNET),
    (re.compile(r"^ruby\d*(\.\d+)?$"), RuntimeType.RUBY),
)
# Go binaries carry this magic at the start of their .go.buildinfo section.
_GO_BUILDINFO_MAGIC = b"\xff Go buildinf:"


def detect_runtime(executable: str, mapped_paths: list[str], is_go: bool = False) -> RuntimeType:
    """RuntimeType from an executable path, its mapped files and whether it is a Go binary."""
    for path in mapped_paths:
        name = path.rsplit("/", 1)[-1]
        for pattern, runtime in _LIBRARY_MARKERS:
            if pattern.search(name):
                return runtime
    exe_name = executable.rsplit("/", 1)[-1]
    for pattern, runtime in _EXECUTABLE_MARKERS:
        if pattern.search(exe_name):
            return runtime
    if is_go:
        return RuntimeType.GO
    return RuntimeType.NATIVE if executable else RuntimeType.UNKNOWN


def is_go_binary(exe: Path) -> bool:
    """True when the ELF file has Go's .go.buildinfo section (read from the section
    headers only, not the whole file)."""
    try:
        with open(exe, "rb") as handle:
            elf = ELFFile(handle)
            section = elf.get_section_by_name(".go.buildinfo")
            return section is not None and section.data()[:14] == _GO_BUILDINFO_MAGIC
    except (OSError, ELFError):
        return False


_MAX_CACHED_FILES = 4096


class RuntimeResolver:
    """RuntimeType per process, cached for the process's life."""

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self._proc_root = proc_root
        self._by_pid: dict[int, RuntimeType] = {}
        self._go_files: dict[tuple[int, int, int, int], bool] = {}  # file identity -> has Go build info

    def forget(self, pid: int) -> None:
        self._by_pid.pop(pid, None)

    def size(self) -> int:
        return len(self._by_pid)

    def known_pids(self) -> list[int]:
        return list(self._by_pid)

    def _is_go(self, exe: Path) -> bool:
        # Reading the ELF headers costs ~25 ms in pyelftools: once per executable file, not
        # per process (every run of a short-lived program is a new process).
        try:
            st = os.stat(exe)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._go_files.get(key)
        if known is None:
            if len(self._go_files) >= _MAX_CACHED_FILES:
                self._go_files.clear()
            known = self._go_files[key] = is_go_binary(exe)
        return known

    def runtime(self, pid: int, mapped_paths: Callable[[], list[str]]) -> RuntimeType:
        """The process's runtime; mapped_paths is called only when it is not known yet."""
        cached = self._by_pid.get(pid)
        if cached is not None:
            return cached
        proc = self._proc_root / str(pid)
        try:
            executable = str((proc / "exe").readlink())
        except OSError:
            executable = ""
        paths = mapped_paths()
        detected = detect_runtime(executable, paths)
        if detected is RuntimeType.NATIVE:
            detected = detect_runtime(executable, paths, self._is_go(proc / "exe"))
        self._by_pid[pid] = detected
        return detected
