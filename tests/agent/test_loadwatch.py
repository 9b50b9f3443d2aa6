"""Pure parts of the loader holds and of overlay file identity: the ctypes copies of
bpf/loadwatch.h match the compiled header, target names become the stems the kernel side
compares, loader files give their hook, mountinfo lines give overlay layers."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_signals import bpf
from runtime_signals.agent.fileid import overlay_mounts
from runtime_signals.agent.loadwatch import (
    COUNTER_NAMES,
    NAME_BYTES,
    LoadEvent,
    NameKey,
    RootKey,
    can_resume_any_process,
    library_stem,
    loader_hook,
    watched_names,
)
from runtime_signals.config.schema import TargetSettings


def test_ctypes_copies_equal_the_compiled_header(tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (scripts/bootstrap.sh installs gcc)"
    views = {"load_event": LoadEvent, "name_key": NameKey, "root_key": RootKey}
    prints = []
    for struct, ctype in views.items():
        for name, _ in ctype._fields_:
            prints.append(f'printf("{struct}.{name} %zu %zu\\n", offsetof(struct {struct}, {name}), '
                          f'sizeof(((struct {struct} *)0)->{name}));')
        prints.append(f'printf("{struct} %zu 0\\n", sizeof(struct {struct}));')
    source = tmp_path / "layout.c"
    source.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
                      f'#include "{bpf.LOADWATCH_HEADER}"\nint main(void) {{\n' + "\n".join(prints) + "\nreturn 0;\n}\n")
    subprocess.run([compiler, "-o", str(tmp_path / "layout"), str(source)], check=True)
    layout = {}
    for line in subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout.splitlines():
        name, offset, size = line.split()
        layout[name] = (int(offset), int(size))
    for struct, ctype in views.items():
        for name, _ in ctype._fields_:
            field = getattr(ctype, name)
            assert (field.offset, field.size) == layout[f"{struct}.{name}"], f"{struct}.{name}"
        assert ctypes.sizeof(ctype) == layout[struct][0], struct
    header = bpf.LOADWATCH_HEADER.read_text()
    assert f"#define LOADWATCH_NAME_BYTES {NAME_BYTES}" in header
    enum = re.search(r"enum loadwatch_counter \{(.*?)\};", header, re.DOTALL)
    assert enum is not None
    assert len(re.findall(r"^\s*LW_(?!COUNTER_MAX)\w+", enum.group(1), re.MULTILINE)) == len(COUNTER_NAMES)


@pytest.mark.parametrize(("binary", "stem"), [
    ("z", "libz.so"), ("libz", "libz.so"), ("libz.so.1", "libz.so"), ("ssl", "libssl.so"),
    ("/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "libcrypto.so"), ("/app/plugins/libsigplug.so", "libsigplug.so"),
    ("/app/server", None),
])
def test_a_targets_library_is_held_by_the_stem_of_every_file_it_matches(binary: str, stem: str | None) -> None:
    assert library_stem(binary) == stem


def test_targets_split_into_library_stems_and_executable_names() -> None:
    targets = [TargetSettings(binary="z", symbols=["crc32"]), TargetSettings(binary="/app/server", symbols=["main"]),
               TargetSettings(binary="/opt/lib/libimg.so.2", symbols=["parse"])]
    assert watched_names(targets) == ({"libz.so", "libimg.so"}, {"server"})


def test_the_nodes_loader_gives_its_debugger_hook() -> None:
    loader = Path("/lib64/ld-linux-x86-64.so.2")
    if not loader.exists():
        pytest.skip("no x86-64 glibc loader here")
    hook = loader_hook(loader)
    assert hook is not None
    symbols = subprocess.run(["readelf", "-Ws", "--dyn-syms", str(loader.resolve())], capture_output=True, text=True,
                             check=True).stdout
    values = {m.group(2): int(m.group(1), 16)
              for m in re.finditer(r"\s([0-9a-f]{16})\s+\d+\s+\w+\s+\w+\s+\w+\s+\d+\s+(_dl_debug_state|_r_debug)@", symbols)}
    assert hook.r_debug_delta == values["_r_debug"] - values["_dl_debug_state"]
    assert loader_hook(Path("/bin/true")) is None  # not a loader


def test_mountinfo_overlay_lines_give_their_layers_top_first() -> None:
    text = (
        "36 25 0:33 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay "
        "rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/u/diff,workdir=/u/work\n"
        "37 25 0:34 / /srv/with\\040space rw - overlay ov rw,lowerdir+=/l/one,lowerdir+=/l/two,upperdir=/up\n"
        "38 25 0:35 /sub /mnt/bound rw - overlay ov rw,lowerdir=/a\\:b:/c\n"
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda1 rw\n")
    mounts = overlay_mounts(text)
    assert set(mounts) == {os.makedev(0, 33), os.makedev(0, 34), os.makedev(0, 35)}
    assert mounts[os.makedev(0, 33)].layers == ("/u/diff", "/var/lib/docker/overlay2/l/A", "/var/lib/docker/overlay2/l/B")
    assert mounts[os.makedev(0, 34)].mount_point == "/srv/with space"
    assert mounts[os.makedev(0, 34)].layers == ("/up", "/l/one", "/l/two")
    assert mounts[os.makedev(0, 35)].layers == ("/a:b", "/c") and mounts[os.makedev(0, 35)].root == "/sub"


def test_holds_need_the_right_to_resume_any_process(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tagent\nCapEff:\t00000000000000e0\n")  # KILL (5), SETGID, SETUID
    assert can_resume_any_process(status)
    status.write_text("Name:\tagent\nCapEff:\t000000c000000000\n")  # BPF + PERFMON only
    assert not can_resume_any_process(status)


def test_a_parts_counters_appear_on_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from runtime_signals.agent.metrics import CountersCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersCollector("targets", "Target files", lambda: {"late_attaches": 2, "inlined_copies": 3}))
    text = generate_latest(registry).decode()
    assert 'runtime_signals_agent_targets_total{counter="late_attaches"} 2.0' in text
    assert 'runtime_signals_agent_targets_total{counter="inlined_copies"} 3.0' in text
