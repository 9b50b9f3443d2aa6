"""The ctypes copy of struct call_event matches the C header, field by field."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

import bpf
from agent.wire import call_event_type

FIELDS = ("boot_ns", "cgroup_id", "function_address", "pid", "tid", "frame_count", "flags", "frames")


@pytest.mark.parametrize("max_frames", [64, 16])
def test_ctypes_layout_equals_the_compiled_header(tmp_path: Path, max_frames: int) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed to check the wire layout (scripts/bootstrap.sh installs gcc)"
    source = tmp_path / "layout.c"
    prints = "\n".join(
        f'    printf("{name} %zu %zu\\n", offsetof(struct call_event, {name}), sizeof(e.{name}));'
        for name in FIELDS
    )
    source.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        f"#define CALLTRACE_MAX_FRAMES {max_frames}\n"
        f'#include "{bpf.CALLTRACE_HEADER}"\n'
        "int main(void) {\n    struct call_event e;\n"
        f"{prints}\n"
        '    printf("sizeof %zu 0\\n", sizeof(struct call_event));\n    return 0;\n}\n'
    )
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-o", str(binary), str(source)], check=True)
    c_layout = {}
    for line in subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.splitlines():
        name, offset, size = line.split()
        c_layout[name] = (int(offset), int(size))

    event = call_event_type(max_frames)
    for name in FIELDS:
        descriptor = getattr(event, name)
        assert (descriptor.offset, descriptor.size) == c_layout[name], name
    assert ctypes.sizeof(event) == c_layout["sizeof"][0]
