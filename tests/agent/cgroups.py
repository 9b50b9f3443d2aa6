"""Real cgroups for the tests: directories under the cgroup2 mount named as container
engines name theirs, processes moved in by writing cgroup.procs, all removed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def cgroup2_mount() -> Path | None:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup, or .../unified in hybrid mode."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def cgroup_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root: creating cgroups needs root"
    mount = cgroup2_mount()
    if mount is None:
        return "no cgroup2 hierarchy mounted"
    if not os.access(mount, os.W_OK):
        return f"{mount} is read-only here"
    return None


class CgroupSandbox:
    """Creates cgroups under <cgroup2>/rs-test-<random>/ and removes them all on close."""

    def __init__(self) -> None:
        mount = cgroup2_mount()
        assert mount is not None
        self.mount = mount
        self.base = mount / f"rs-test-{uuid.uuid4().hex[:8]}"
        self._made: list[Path] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    def make(self, relative: str) -> Path:
        """mkdir -p of a cgroup path under the test's base; returns its directory."""
        path = self.mount
        for part in [self.base.name] + [p for p in relative.split("/") if p]:
            path = path / part
            if not path.exists():
                path.mkdir()
                self._made.append(path)
        return path

    def path_of(self, directory: Path) -> str:
        """The cgroup path the kernel shows in /proc/<pid>/cgroup for directory."""
        return "/" + str(directory.relative_to(self.mount))

    def spawn_in(self, directory: Path, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start argv as a process that first moves itself into the cgroup, then execs."""
        shell = f'echo $$ > "{directory}/cgroup.procs" && exec "$@"'
        process = subprocess.Popen(["sh", "-c", shell, "sh", *argv], **kwargs)  # type: ignore[call-overload]
        self._processes.append(process)
        return process

    def move(self, pid: int, directory: Path) -> None:
        (directory / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        # A cgroup can be removed once empty: children first.
        for path in sorted(self._made, key=lambda p: len(p.parts), reverse=True):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # the killed process is still leaving

    def __enter__(self) -> CgroupSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_engine_layouts(container_id: str, pod_uid: str) -> Iterator[tuple[str, str]]:
    """(engine, cgroup path under the test base) for every layout the agent knows."""
    pod_systemd = pod_uid.replace("-", "_")
    yield "docker", f"system.slice/docker-{container_id}.scope"
    yield "containerd", (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_systemd}.slice/"
                         f"cri-containerd-{container_id}.scope")
    yield "cri-o", f"kubepods.slice/kubepods-pod{pod_systemd}.slice/crio-{container_id}.scope"
    yield "podman", f"machine.slice/libpod-{container_id}.scope/container"
    yield "docker", f"docker/{container_id}"
    yield "kubernetes", f"kubepods/burstable/pod{pod_uid}/{container_id}"
