"""agent/pylayouts.py against the DWARF of every CPython 3.8–3.13 build under pyenv: each
offset is read again with gdb and must be equal."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_signals.agent.pylayouts import LAYOUTS

PYENV = Path.home() / ".pyenv" / "versions"

def _queries(version: tuple[int, int]) -> dict[str, tuple[str, str]]:
    frame = "PyFrameObject" if version <= (3, 10) else "struct _PyInterpreterFrame"
    queries = {
        "runtime_interpreters_head": ("_PyRuntimeState", "interpreters.head"),
        "interp_threads_head": ("PyInterpreterState", "tstate_head" if version <= (3, 10) else "threads.head"),
        "thread_next": ("PyThreadState", "next"),
        "frame_previous": (frame, "f_back" if version <= (3, 10) else "previous"),
        "frame_code": (frame, "f_executable" if version >= (3, 13) else "f_code"),
        "frame_instruction": (frame, {True: "f_lasti"}.get(version <= (3, 10),
                                                           "instr_ptr" if version >= (3, 13) else "prev_instr")),
        "code_filename": ("PyCodeObject", "co_filename"),
        "code_name": ("PyCodeObject", "co_name"),
        "code_firstlineno": ("PyCodeObject", "co_firstlineno"),
        "thread_id": ("PyThreadState", "thread_id"),
    }
    if version == (3, 11):
        queries["frame_is_entry"] = (frame, "is_entry")
    if version <= (3, 11):
        queries["runtime_tstate_current"] = ("_PyRuntimeState", "gilstate.tstate_current")
    if version <= (3, 10):
        queries["thread_frame"] = ("PyThreadState", "frame")
    if version >= (3, 10) and version <= (3, 12):
        queries["thread_cframe"] = ("PyThreadState", "cframe")
    if (3, 11) <= version <= (3, 12):
        queries["cframe_current_frame"] = ("_PyCFrame", "current_frame")
    if version >= (3, 11):
        queries["thread_native_thread_id"] = ("PyThreadState", "native_thread_id")
        queries["frame_owner"] = (frame, "owner")
        queries["code_qualname"] = ("PyCodeObject", "co_qualname")
    if version >= (3, 13):
        queries["thread_current_frame"] = ("PyThreadState", "current_frame")
        queries["debug_offsets"] = ("_PyRuntimeState", "debug_offsets")
    return queries


def _version(library: Path) -> tuple[int, int]:
    match = re.search(r"libpython(\d)\.(\d+)", library.name)
    assert match, library
    return int(match[1]), int(match[2])


def _builds() -> list[Path]:
    """The pyenv builds of the versions the table describes (3.6 and 3.7 are out of scope)."""
    found = sorted(PYENV.glob("3.*/lib/libpython3.*.so.1.0")) if PYENV.exists() else []
    return [library for library in found if _version(library) in LAYOUTS]


@pytest.mark.skipif(not shutil.which("gdb"), reason="gdb is needed to read the builds' DWARF")
@pytest.mark.parametrize("library", _builds(), ids=lambda p: p.parent.parent.name)
def test_offsets_equal_the_builds_debug_information(library: Path) -> None:
    version = _version(library)
    queries = _queries(version)
    args = []
    for name, (ctype, member) in queries.items():
        args += ["-ex", f'printf "{name} %d\\n", (long)&(({ctype} *)0)->{member}']
    args += ["-ex", 'printf "ascii_object_bytes %d\\n", (long)sizeof(PyASCIIObject)']
    output = subprocess.run(["gdb", "-batch", "-nx", *args, str(library)], capture_output=True, text=True, check=True,
                            timeout=600).stdout
    found = {m[0]: int(m[1]) for m in re.findall(r"^(\w+) (-?\d+)$", output, re.MULTILINE)}
    expected = LAYOUTS[version]
    assert set(found) == set(queries) | {"ascii_object_bytes"}, output[-2000:]
    assert found == {name: getattr(expected, name) for name in found}
    # Fields the version does not have are None in the table, not a stale number.
    absent = {"runtime_tstate_current", "thread_frame", "thread_cframe", "cframe_current_frame",
              "thread_current_frame", "thread_native_thread_id", "frame_owner", "code_qualname",
              "debug_offsets", "frame_is_entry"} - set(found)
    assert all(getattr(expected, name) is None for name in absent), absent
