"""The ctypes copies of the structs in bpf/pyfunc.h match the C header, and the counter
names and flag bits follow it."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_signals import bpf
from runtime_signals.agent import pywire

HEADER = bpf.PYFUNC_HEADER


def _layout(tmp_path: Path, max_frames: int, structs: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed to check the wire layout (scripts/bootstrap.sh installs gcc)"
    prints = []
    for struct, fields in structs.items():
        for name in fields:
            prints.append(f'    printf("{struct}.{name} %zu %zu\\n", offsetof(struct {struct}, {name}), '
                          f'sizeof(((struct {struct} *)0)->{name}));')
        prints.append(f'    printf("{struct} %zu 0\\n", sizeof(struct {struct}));')
    source = tmp_path / "layout.c"
    source.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
                      f"#define PYFUNC_MAX_FRAMES {max_frames}\n#include \"{HEADER}\"\n"
                      "int main(void) {\n" + "\n".join(prints) + "\n    return 0;\n}\n")
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-o", str(binary), str(source)], check=True)
    layout = {}
    for line in subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.splitlines():
        name, offset, size = line.split()
        layout[name] = (int(offset), int(size))
    return layout


@pytest.mark.parametrize("max_frames", [64, 16])
def test_ctypes_layouts_equal_the_compiled_header(tmp_path: Path, max_frames: int) -> None:
    views: dict[str, type[ctypes.Structure]] = {
        "usdt_arg": pywire.UsdtArgC, "pyfunc_site": pywire.PyfuncSite, "pyfunc_probe": pywire.PyfuncProbe,
        "py_frame": pywire.PyFrameC, "py_call_event": pywire.py_call_event_type(max_frames),
        "thread_stack": pywire.thread_stack_type(max_frames)}
    layout = _layout(tmp_path, max_frames, {s: [n for n, *_ in t._fields_] for s, t in views.items()})
    for struct, ctype in views.items():
        for name, *_ in ctype._fields_:
            descriptor = getattr(ctype, name)
            assert (descriptor.offset, descriptor.size) == layout[f"{struct}.{name}"], f"{struct}.{name}"
        assert ctypes.sizeof(ctype) == layout[struct][0], struct


def _enum(name: str, prefix: str) -> tuple[str, ...]:
    body = re.search(rf"enum {name} \{{(.*?)\}};", HEADER.read_text(), re.DOTALL)
    assert body, f"enum {name} not found in pyfunc.h"
    names = re.findall(rf"^\s*{prefix}([A-Z_]+)", re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.DOTALL), re.MULTILINE)
    assert names[-1] == "MAX"
    return tuple(n.lower() for n in names[:-1])


def test_counter_names_and_bits_follow_the_header() -> None:
    assert _enum("pyfunc_counter", "PYFUNC_COUNTER_") == pywire.COUNTER_NAMES
    global_names = _enum("pyfunc_global_counter", "PYFUNC_GLOBAL_")
    assert global_names == ("entries", "returns", "unmatched_return", "no_storage")
    assert len(global_names) == len(pywire.GLOBAL_COUNTER_NAMES)
    text = HEADER.read_text()
    bits = dict(re.findall(r"#define PYFUNC_(FLAG_\w+|SITE_\w+)\s+\(?(?:1U << )?(\d+)\)?", text))
    assert int(bits["FLAG_TRUNCATED"]) == 0 and pywire.FLAG_TRUNCATED == 1
    assert int(bits["FLAG_UNSURE"]) == 1 and pywire.FLAG_UNSURE == 2
    assert int(bits["FLAG_WALKED"]) == 2 and pywire.FLAG_WALKED == 4
    assert int(bits["SITE_FIRES_PROBES"]) == 0 and pywire.SITE_FIRES_PROBES == 1
    assert int(bits["SITE_TRACKS_STACK"]) == 1 and pywire.SITE_TRACKS_STACK == 2
    assert int(bits["SITE_ENTRY"]) == pywire.SITE_ENTRY and int(bits["SITE_RETURN"]) == pywire.SITE_RETURN
    assert f"#define PYFUNC_NAME_BYTES {pywire.NAME_BYTES}" in text
    assert f"#define PYFUNC_FILE_BYTES {pywire.FILE_BYTES}" in text
