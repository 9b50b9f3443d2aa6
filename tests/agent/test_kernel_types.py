"""Kernel struct offsets from BTF (agent/kernel_types.py), and the hold they make right: an
exec in a root the agent has not seen (a new container) is held, on this host whose
installed headers (Debian's 6.1) are not its kernel's (6.18), so their offsets were wrong
and no such exec was ever held."""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from runtime_signals.agent.fileid import BackingFiles
from runtime_signals.agent.kernel_types import VMLINUX, KernelTypes, KernelTypesError, offset_cflags
from runtime_signals.agent.loadwatch import KIND_NEW_ROOT, ROOT_MEMBERS, LoadWatch
from tests.bpf_support import bpf_unavailable_reason


def _blob(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings)) + body + strings


def _type(name_off: int, kind: int, vlen: int, size: int, kind_flag: int = 0) -> bytes:
    return struct.pack("<III", name_off, kind_flag << 31 | kind << 24 | vlen, size)


def test_members_are_found_through_anonymous_unions_typedefs_and_nested_structs() -> None:
    strings = b"\0int\0path\0dentry\0task\0fs\0root\0flags\0pid_t\0pid\0"
    at = {name: strings.index(b"\0" + name.encode() + b"\0") + 1
          for name in ("int", "path", "dentry", "task", "fs", "root", "flags", "pid_t", "pid")}
    types = [
        _type(at["int"], 1, 0, 4) + struct.pack("<I", 32),                                   # 1 int
        _type(0, 2, 0, 1),                                                                   # 2 int *
        _type(at["path"], 4, 2, 16) + struct.pack("<III", 0, 2, 0) + struct.pack("<III", at["dentry"], 2, 64),
        _type(at["pid_t"], 8, 0, 1),                                                         # 4 typedef int
        _type(0, 5, 2, 8) + struct.pack("<III", at["pid"], 4, 0) + struct.pack("<III", at["root"], 3, 0),
        # 6 struct task { int flags : 3; <anonymous union 5> at 64 bits; int *fs at 192 }, kind_flag set
        _type(at["task"], 4, 3, 32, kind_flag=1) + struct.pack("<III", at["flags"], 1, 3 << 24 | 0)
        + struct.pack("<III", 0, 5, 64) + struct.pack("<III", at["fs"], 2, 192),
    ]
    kernel = KernelTypes(_blob(types, strings), "test blob")
    assert kernel.offset("task.fs") == 24
    assert kernel.offset("task.pid") == 8               # inside the anonymous union
    assert kernel.offset("task.root.dentry") == 16      # through the union into struct path
    assert kernel.offset("path.dentry") == 8
    with pytest.raises(KernelTypesError, match="struct task has no member 'comm'"):
        kernel.offset("task.comm")
    with pytest.raises(KernelTypesError, match="no struct 'mm_struct'"):
        kernel.offset("mm_struct.pgd")
    assert offset_cflags({"X_FS": "task.fs"}, kernel) == ["-DX_FS=24"]
    assert offset_cflags({"X_FS": "task.fs"}, None) == []


def test_a_blob_that_is_not_btf_is_refused_by_name() -> None:
    with pytest.raises(KernelTypesError, match="not BTF"):
        KernelTypes(b"\x7fELF" + bytes(40), "/tmp/not-btf")


@pytest.mark.skipif(not VMLINUX.exists(), reason="this kernel publishes no BTF (/sys/kernel/btf/vmlinux)")
def test_the_running_kernel_describes_every_member_the_exec_hook_reads() -> None:
    kernel = KernelTypes.running_kernel()
    assert kernel is not None
    offsets = {macro: kernel.offset(dotted) for macro, dotted in ROOT_MEMBERS.items()}
    assert all(0 <= value < 16_384 for value in offsets.values()), offsets
    # pid and tgid are adjacent ints in every kernel's task_struct: a cross-check of the reader.
    assert kernel.offset("task_struct.tgid") == kernel.offset("task_struct.pid") + 4


@pytest.mark.bpf
def test_an_exec_in_a_root_not_seen_before_is_held(tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (scripts/bootstrap.sh installs gcc)"
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "main.c").write_text("int main(void) { return 7; }\n")
    # Static: the new root holds nothing else, no loader, no libc.
    subprocess.run([compiler, "-static", "-O1", "-o", str(root / "prog"), str(tmp_path / "main.c")], check=True)
    holds: list[tuple[int, int]] = []
    watch = LoadWatch([], lambda pid, kind: holds.append((pid, kind)), backing=BackingFiles())
    stop = threading.Event()
    thread = None
    try:
        watch.hook_all()  # as the agent starts: every root already running is known
        thread = watch.run(stop)
        first = subprocess.Popen(["chroot", str(root), "/prog"])  # its pid execs /prog in the new root
        assert first.wait(timeout=60) == 7
        again = subprocess.Popen(["chroot", str(root), "/prog"])
        assert again.wait(timeout=60) == 7
        stop.set()
        thread.join(timeout=30)
    finally:
        stop.set()
        if thread is None:
            watch.close()
    counters = watch.counters()
    assert (first.pid, KIND_NEW_ROOT) in holds, f"holds: {holds}; counters: {counters}"
    # Answering the first hold marked the root known: the second exec there is not held.
    assert (again.pid, KIND_NEW_ROOT) not in holds, f"holds: {holds}"
    assert counters["held"] >= 1 and counters["root_unread"] == 0, counters
