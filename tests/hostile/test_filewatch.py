"""The agent never harms its target: a probed executable rewritten in place (same inode)
loses its probe at the first write, so the next process started from it runs the new code
instead of meeting a breakpoint inside another instruction; the rescan then probes the new
file afresh. Real BPF, real programs, the real kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runtime_signals.agent.filewatch import FileWatch
from runtime_signals.agent.probes import CallTracer, TracerSettings
from runtime_signals.agent.targets import TargetManager
from runtime_signals.config.schema import TargetSettings
from tests.agent.programs import compile_c
from tests.bpf_support import bpf_unavailable_reason

pytestmark = pytest.mark.bpf

# serve() sits 16 bytes into a page-aligned block. In the second build the block starts with
# 15 bytes of nops and serve() is `call real_serve`: the first build's offset of serve() is now
# the call's displacement, where a leftover breakpoint turns the call into a jump elsewhere.
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
int real_serve(int i) { return i + 1; }
asm(".text\n.p2align 12\n.skip SKIP, 0x90\n.globl serve\n.type serve,@function\nserve:\n"
    BODY "\n  ret\n.size serve, .-serve\n");
int serve(int);
int main(int argc, char **argv) {
    int sum = 0;
    for (int i = 0; i < atoi(argv[1]); i++) sum += serve(i);
    printf("%d\n", sum);
    return 0;
}
"""


def _build(tmp_path: Path, name: str, skip: int, body: str) -> Path:
    source = PROGRAM.replace("SKIP", str(skip)).replace("BODY", f'"  {body}"')
    return compile_c(source, tmp_path / name, "-O1")


def _run(binary: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), "10"], capture_output=True, text=True, timeout=30, check=False)


def test_a_binary_rewritten_in_place_while_probed_does_not_crash_the_next_process(tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    first = _build(tmp_path / "v1", "server", 16, "lea 1(%rdi),%eax")
    second = _build(tmp_path / "v2", "server", 15, "call real_serve")
    binary = tmp_path / "server"
    shutil.copy(first, binary)
    inode = binary.stat().st_ino

    tracer = CallTracer(TracerSettings(ringbuf_pages=64))
    watch = FileWatch(tracer.attach, tracer.retire)
    targets = TargetManager([TargetSettings(binary=str(binary), symbols=["serve"])], ["agent.targets[0]"],
                            attach=watch.attach)
    watch.on_changed = targets.forget_file
    stop = threading.Event()
    watch.start(stop)
    try:
        assert targets.scan() == 1, targets.missing
        [old] = tracer.attached
        assert _run(binary).stdout.strip() == "55"

        # In place: the same inode, as `cp new old` or an installer that truncates and writes.
        with open(binary, "r+b") as handle:
            handle.write(second.read_bytes())
        assert binary.stat().st_ino == inode
        deadline = time.monotonic() + 5
        while watch.counts["probes_retired_file_changed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.counts["probes_retired_file_changed"] == 1 and not tracer.is_attached(old)

        done = _run(binary)
        assert (done.returncode, done.stdout.strip()) == (0, "55"), done   # SIGSEGV with the old probe left

        # Probed afresh: the new file's serve(), at its new offset.
        assert targets.scan() == 1, targets.missing
        new = tracer.attached[-1]
        assert tracer.is_attached(new) and new.file_offset == old.file_offset - 1
        assert _run(binary).stdout.strip() == "55"
        tracer.rearm(old)                  # the probe budget cannot bring the stale probe back
        assert not tracer.is_attached(old)
    finally:
        stop.set()
        tracer.close()
        watch.close()


def test_a_file_that_changes_while_being_attached_is_not_probed(tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    binary = _build(tmp_path, "server", 16, "lea 1(%rdi),%eax")
    tracer = CallTracer(TracerSettings(ringbuf_pages=64))

    def attach_then_touch(spec):  # type: ignore[no-untyped-def]
        probe = tracer.attach(spec)
        os.utime(binary, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # a writer got in between
        return probe

    watch = FileWatch(attach_then_touch, tracer.retire)
    targets = TargetManager([TargetSettings(binary=str(binary), symbols=["serve"])], ["agent.targets[0]"],
                            attach=watch.attach)
    try:
        assert targets.scan() == 0
        assert "changed while it was being attached" in " ".join(targets.missing.values())
        assert not any(tracer.is_attached(p) for p in tracer.attached)
    finally:
        tracer.close()
        watch.close()
