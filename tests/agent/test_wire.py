"""The ctypes copies of the structs in bpf/calltrace.h match the C header, field by field,
and the counter names follow enum calltrace_counter."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_signals import bpf
from runtime_signals.agent import wire
from runtime_signals.agent.wire import (
    COUNTER_NAMES,
    STACK_END_NAMES,
    DedupKey,
    ExecMapping,
    ProbeConfig,
    PyCode,
    PyCodeKey,
    PyFrameRef,
    PythonProcess,
    RateState,
    UnwindRow,
    UnwindTable,
    call_event_type,
    process_mappings_type,
)


def _c_layout(tmp_path: Path, max_frames: int, max_mappings: int, structs: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed to check the wire layout (scripts/bootstrap.sh installs gcc)"
    prints = []
    for struct, fields in structs.items():
        for name in fields:
            prints.append(f'    printf("{struct}.{name} %zu %zu\\n", offsetof(struct {struct}, {name}), '
                          f'sizeof(((struct {struct} *)0)->{name}));')
        prints.append(f'    printf("{struct} %zu 0\\n", sizeof(struct {struct}));')
    source = tmp_path / "layout.c"
    source.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        f"#define CALLTRACE_MAX_FRAMES {max_frames}\n"
        f"#define CALLTRACE_MAX_MAPPINGS {max_mappings}\n"
        f'#include "{bpf.CALLTRACE_HEADER}"\n'
        "int main(void) {\n" + "\n".join(prints) + "\n    return 0;\n}\n")
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-o", str(binary), str(source)], check=True)
    layout = {}
    for line in subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.splitlines():
        name, offset, size = line.split()
        layout[name] = (int(offset), int(size))
    return layout


def _check(ctype: type[ctypes.Structure], struct: str, layout: dict[str, tuple[int, int]]) -> None:
    names = [name for name, _ in ctype._fields_]
    for name in names:
        descriptor = getattr(ctype, name)
        assert (descriptor.offset, descriptor.size) == layout[f"{struct}.{name}"], f"{struct}.{name}"
    assert ctypes.sizeof(ctype) == layout[struct][0], struct


@pytest.mark.parametrize(("max_frames", "max_mappings"), [(64, 256), (16, 8)])
def test_ctypes_layouts_equal_the_compiled_header(tmp_path: Path, max_frames: int, max_mappings: int) -> None:
    views = {"call_event": call_event_type(max_frames), "dedup_key": DedupKey, "probe_config": ProbeConfig,
             "rate_state": RateState, "unwind_row": UnwindRow, "unwind_table": UnwindTable,
             "exec_mapping": ExecMapping, "process_mappings": process_mappings_type(max_mappings),
             "py_frame_ref": PyFrameRef, "python_process": PythonProcess, "py_code_key": PyCodeKey, "py_code": PyCode}
    layout = _c_layout(tmp_path, max_frames, max_mappings, {struct: [n for n, _ in ctype._fields_]
                                              for struct, ctype in views.items()})
    for struct, ctype in views.items():
        _check(ctype, struct, layout)


def test_counter_names_follow_the_enum() -> None:
    header = bpf.CALLTRACE_HEADER.read_text()
    body = re.search(r"enum calltrace_counter \{(.*?)\};", header, re.S)
    assert body, "enum calltrace_counter not found in calltrace.h"
    names = re.findall(r"^\s*COUNTER_([A-Z_]+)", re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S), re.M)
    assert names[-1] == "MAX"
    assert tuple(n.lower() for n in names[:-1]) == COUNTER_NAMES


def test_flag_bits_follow_the_header() -> None:
    header = bpf.CALLTRACE_HEADER.read_text()
    bits = {name: int(bit) for name, bit in re.findall(r"#define CALL_FLAG_(\w+)\s+\(1U << (\d+)\)", header)}
    assert bits, "no CALL_FLAG_* in calltrace.h"
    assert {name: getattr(wire, f"FLAG_{name}") for name in bits} == {name: 1 << bit for name, bit in bits.items()}


def _enum(name: str) -> list[str]:
    header = bpf.CALLTRACE_HEADER.read_text()
    body = re.search(rf"enum {name} \{{(.*?)\}};", header, re.S)
    assert body, f"enum {name} not found in calltrace.h"
    return re.findall(r"^\s*([A-Z_]+)", re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S), re.M)


def test_stack_end_names_follow_the_enum() -> None:
    names = _enum("stack_end")
    assert names[0] == "STACK_END_COMPLETE" and names[-1] == "STACK_END_MAX"
    assert [n.removeprefix("STACK_END_").lower() for n in names[1:-1]] == list(STACK_END_NAMES[1:])
    for index, name in enumerate(names[:-1]):
        assert getattr(wire, name) == index


@pytest.mark.parametrize("name", ["unwind_cfa", "unwind_rbp"])
def test_unwind_rule_values_follow_the_enums(name: str) -> None:
    for index, member in enumerate(_enum(name)):
        assert getattr(wire, member) == index, member


def test_python_frame_constants_follow_the_headers() -> None:
    """The Python walk's sizes and flags in agent/wire.py are the headers' (calltrace.h,
    pyframes.h)."""
    text = bpf.CALLTRACE_HEADER.read_text() + (bpf.SOURCE_DIR / "pyframes.h").read_text()
    defines = dict(re.findall(r"#define (PY_\w+)\s+\(?(?:1U << )?(\d+)\)?", text))
    for name in ("PY_NAME_BYTES", "PY_FILE_BYTES", "PY_FRAME_WINDOW"):
        assert int(defines[name]) == getattr(wire, name), name
    for name in ("PY_FLAG_WALKED", "PY_FLAG_TRUNCATED", "PY_FLAG_NO_THREAD", "PY_FLAG_READ_FAULT",
                 "PY_CODE_NAME_UNREAD", "PY_CODE_FILE_UNREAD", "PY_CODE_NOT_CODE"):
        assert 1 << int(defines[name]) == getattr(wire, name), name
    assert re.search(r"#define CALLTRACE_MAX_PY_FRAMES (\d+)", text)[1] == str(wire.PY_MAX_FRAMES)  # type: ignore[index]
