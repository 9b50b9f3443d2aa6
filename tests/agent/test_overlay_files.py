"""One uprobe per file, whatever the view: two "containers" started from one image (two
overlayfs mounts, each with its own upper dir, over one lower dir holding the program),
each entered with pivot_root the way runtimes do. Each overlay has its own device number,
so the program looks like two files through /proc/<pid>/root; the kernel attaches to the
layer's file underneath, so two uprobes would both fire on every call. The agent must
attach once and report every call once, per process.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime_signals.agent.fileid import BackingFiles, overlay_mounts
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, AgentProcess, decode_all, read_all
from tests.agent.programs import container_rootfs, mini_container
from tests.bpf_support import bpf_unavailable_reason

PARSE = "_ZN7imgproc6Parser5parseEPKc"
CALLS = {0: 7, 1: 11}


def _mount_overlays(base: Path, lower: Path, count: int) -> Iterator[list[Path]]:
    merged = []
    try:
        for index in range(count):
            upper, work, target = (base / f"{name}{index}" for name in ("upper", "work", "merged"))
            for directory in (upper, work, target):
                directory.mkdir(parents=True)
            result = subprocess.run(["mount", "-t", "overlay", f"overlay{uuid.uuid4().hex[:6]}", "-o",
                                     f"lowerdir={lower},upperdir={upper},workdir={work}", str(target)],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                pytest.skip(f"cannot mount overlayfs here: {result.stderr.strip()}")
            merged.append(target)
        yield merged
    finally:
        for target in merged:
            subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def image(tmp_path: Path) -> Iterator[tuple[Path, list[Path]]]:
    if os.geteuid() != 0:
        pytest.skip("mounting overlayfs needs root")
    lower, program = container_rootfs(tmp_path / "image")
    yield from ((program, merged) for merged in _mount_overlays(tmp_path / "overlays", lower, 2))


def test_a_layer_file_is_one_file_through_every_overlay(image: tuple[Path, list[Path]]) -> None:
    program, merged = image
    views = [m / "app" / "workload" for m in merged]
    devices = {os.stat(v).st_dev for v in views}
    assert len(devices) == 2, "each overlay mount shows its own device number"
    backing = BackingFiles()
    keys = {backing.identity(v, Path("/proc/self/mountinfo"), str(v)) for v in views}
    st = os.stat(program)
    assert keys == {(st.st_dev, st.st_ino)}
    assert not backing.unresolved
    mounts = overlay_mounts(Path("/proc/self/mountinfo").read_text())
    assert {m.mount_point for m in mounts.values()} >= {str(m) for m in merged}


def test_a_copied_up_file_is_its_own_file(image: tuple[Path, list[Path]]) -> None:
    program, merged = image
    copied = merged[1] / "app" / "workload"
    with open(copied, "ab"):
        pass  # opening for writing copies the file up into the second upper dir
    backing = BackingFiles()
    first = backing.identity(merged[0] / "app" / "workload", Path("/proc/self/mountinfo"), str(merged[0] / "app/workload"))
    second = backing.identity(copied, Path("/proc/self/mountinfo"), str(copied))
    assert first == (os.stat(program).st_dev, os.stat(program).st_ino)
    assert second is not None and second != first


@pytest.mark.bpf
@pytest.mark.broker
def test_two_containers_from_one_image_share_one_uprobe_and_count_each_call_once(
        image: tuple[Path, list[Path]], kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    _program, merged = image
    prefix = f"overlay-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    launcher = mini_container(tmp_path)
    containers = [subprocess.Popen([str(launcher), str(root), "/app/workload", str(CALLS[i]), "/go"],
                                   stdout=subprocess.DEVNULL) for i, root in enumerate(merged)]
    try:
        deadline = time.monotonic() + 10
        while not all(_runs(c.pid, "/app/workload") for c in containers):
            assert time.monotonic() < deadline, "the containers did not start"
            time.sleep(0.05)
        # The probe as people write it: the path inside the image, a demangled C++ name.
        probe = "/app/workload:imgproc::Parser::parse"
        with AgentProcess(kafka_bootstrap, prefix, [probe], tmp_path / "agent.log") as agent:
            for root in merged:
                (root / "go").touch()
            for container in containers:
                assert container.wait(30) == 0
            assert agent.stop() == 0, agent.log()[-4000:]
            log = agent.log()
    finally:
        for container in containers:
            if container.poll() is None:
                container.kill()
                container.wait()
    assert log.count(f"attached /app/workload:{PARSE} in ") == 1, log[-4000:]
    events = decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
    for index, container in enumerate(containers):
        calls = sum(e["observation_count"] for e in events if e["pid"] == container.pid)
        assert calls == CALLS[index], (index, calls, log[-3000:])
    assert {e["symbol"] for e in events} == {PARSE}


def _runs(pid: int, executable: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == executable
    except OSError:
        return False
