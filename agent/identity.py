"""Which container a process belongs to, read from its cgroup path.

Container engines name the cgroup after the container id. Known layouts:
  Docker          /system.slice/docker-<id>.scope        (v1: /docker/<id>)
  containerd/CRI  /kubepods.slice/.../cri-containerd-<id>.scope  (v1: /kubepods/.../<id>)
  CRI-O           /kubepods.slice/.../crio-<id>.scope    (v1: /kubepods/.../crio-<id>)
  Podman          /machine.slice/libpod-<id>.scope       (also user.slice/.../libpod-<id>.scope)
A process in none of them runs on the host and gets the stable id ``host:<machine-id>``.
"""

from __future__ import annotations

import re
from pathlib import Path

_ID = r"(?P<id>[0-9a-f]{64})"
# Most specific first: a runtime prefix in a systemd scope, then a bare id as a path
# component (cgroup v1 and cgroupfs drivers), which Docker and kubelet both use.
_PATTERNS = (
    ("docker", re.compile(rf"docker-{_ID}\.scope")),
    ("containerd", re.compile(rf"cri-containerd-{_ID}\.scope")),
    ("cri-o", re.compile(rf"crio-(?:conmon-)?{_ID}\.scope")),
    ("podman", re.compile(rf"libpod-(?:conmon-)?{_ID}\.scope")),
    ("cri-o", re.compile(rf"/crio-{_ID}(?:/|$)")),
    ("docker", re.compile(rf"/docker/{_ID}(?:/|$)")),
    ("kubernetes", re.compile(rf"/kubepods[^\n]*/{_ID}(?:/|$)")),
    ("podman", re.compile(rf"/libpod_parent/libpod-{_ID}(?:/|$)")),
)


def container_id_from_cgroup(cgroup_text: str) -> tuple[str, str] | None:
    """(engine, container id) named by a /proc/<pid>/cgroup file, or None for the host."""
    for line in cgroup_text.splitlines():
        # "hierarchy-id:controllers:path"; the path may itself contain ':'.
        path = line.split(":", 2)[-1]
        for engine, pattern in _PATTERNS:
            match = pattern.search(path)
            if match:
                return engine, match.group("id")
    return None


def host_id(etc: Path = Path("/etc")) -> str:
    """A stable id for processes outside containers: the machine id, else the hostname."""
    for name in ("machine-id",):
        try:
            value = (etc / name).read_text().strip()
        except OSError:
            continue
        if value:
            return f"host:{value}"
    try:
        return "host:" + (etc / "hostname").read_text().strip()
    except OSError:
        return "host:unknown"


class ContainerResolver:
    """Container id per process, cached (a process does not change container)."""

    def __init__(self, proc_root: Path = Path("/proc"), host: str | None = None) -> None:
        self._proc_root = proc_root
        self._host = host or host_id()
        self._by_pid: dict[int, str] = {}

    @property
    def host(self) -> str:
        return self._host

    def forget(self, pid: int) -> None:
        self._by_pid.pop(pid, None)

    def container_id(self, pid: int) -> str:
        cached = self._by_pid.get(pid)
        if cached is not None:
            return cached
        try:
            text = (self._proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            text = ""
        found = container_id_from_cgroup(text)
        value = found[1] if found else self._host
        self._by_pid[pid] = value
        return value
