"""Which container a process belongs to, read from its cgroup path.

Container engines name the cgroup after the container id. Known layouts:
  Docker          /system.slice/docker-<id>.scope        (v1: /docker/<id>)
  containerd/CRI  /kubepods.slice/.../cri-containerd-<id>.scope  (v1: /kubepods/.../<id>)
  CRI-O           /kubepods.slice/.../crio-<id>.scope    (v1: /kubepods/.../crio-<id>)
  Podman          /machine.slice/libpod-<id>.scope       (also user.slice/.../libpod-<id>.scope)
A process in none of them runs on the host and gets the stable id ``host:<machine-id>``.

Kubernetes pods: the cgroup path holds the pod's uid (``kubepods-…-pod<uid>.slice`` or
``/kubepods/…/pod<uid>/``), not its namespace or name. Those come from the API server,
which the agent does not call; but kubelet names each pod's log directory
``/var/log/pods/<namespace>_<pod>_<uid>``, so with that directory mounted the agent
names pods without API access (PodDirectory). Labels need the API server: not read.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
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


_POD_UID = re.compile(
    r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)")


def cgroup_paths(cgroup_text: str) -> tuple[str, ...]:
    """The cgroup path of every hierarchy line of a /proc/<pid>/cgroup file (v2 first)."""
    lines = [line.split(":", 2) for line in cgroup_text.splitlines() if line.count(":") >= 2]
    v2 = [parts[2] for parts in lines if parts[0] == "0"]
    v1 = [parts[2] for parts in lines if parts[0] != "0"]
    return tuple(dict.fromkeys(v2 + v1))


def pod_uid_from_cgroup(cgroup_text: str) -> str | None:
    """The Kubernetes pod uid in a cgroup file (systemd drivers spell its '-' as '_')."""
    match = _POD_UID.search(cgroup_text)
    return match.group("uid").replace("_", "-") if match else None


@dataclass(frozen=True, slots=True)
class PodName:
    namespace: str
    name: str
    uid: str


class PodDirectory:
    """Pod uid -> namespace and name, from kubelet's /var/log/pods/<ns>_<pod>_<uid> entries.

    The directory is listed again on a miss, at most every refresh_interval_s, since new
    pods appear while the agent runs."""

    def __init__(self, pods_dir: Path = Path("/var/log/pods"), refresh_interval_s: float = 5.0) -> None:
        self._dir = pods_dir
        self._refresh_interval_s = refresh_interval_s
        self._by_uid: dict[str, PodName] = {}
        self._listed_at = float("-inf")

    def lookup(self, uid: str) -> PodName | None:
        found = self._by_uid.get(uid)
        if found is None and time.monotonic() - self._listed_at >= self._refresh_interval_s:
            self._list()
            found = self._by_uid.get(uid)
        return found

    def _list(self) -> None:
        self._listed_at = time.monotonic()
        try:
            entries = [entry.name for entry in self._dir.iterdir()]
        except OSError:
            return
        # Built anew: pods deleted since the last listing are forgotten (a node runs pods for
        # months), while a pod's name stays known as long as kubelet keeps its log directory.
        listed: dict[str, PodName] = {}
        for entry in entries:
            # Namespaces and pod names are DNS labels (no '_'), so the split is unambiguous.
            parts = entry.split("_")
            if len(parts) == 3:
                listed[parts[2]] = PodName(parts[0], parts[1], parts[2])
        self._by_uid = listed

    def __len__(self) -> int:
        return len(self._by_uid)


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


def _first_line(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def host_id(host_root: Path = Path("/"), node_name: str | None = None, etc: Path = Path("/etc")) -> str:
    """A stable id for processes outside containers, the same for every agent the node runs,
    also when the agent's own container is recreated (its hostname then changes).

    In order: the node's machine id read through host_root (/proc/1/root with hostPID), the
    machine id at etc/machine-id (the node's file bind-mounted there, when host_root cannot
    be read), the configured node name, the node's hostname file through host_root. An agent
    in a container never falls back to its own /etc/hostname: that is the container's."""
    in_container_root = host_root != Path("/")
    candidates = [host_root / "etc" / "machine-id"]
    if in_container_root:
        candidates.append(etc / "machine-id")
    for path in candidates:
        value = _first_line(path)
        if value:
            return f"host:{value}"
    if node_name:
        return f"host:{node_name}"
    hostname = _first_line(host_root / "etc" / "hostname")
    if not hostname and not in_container_root:
        hostname = _first_line(etc / "hostname")
    return f"host:{hostname or 'unknown'}"


def node_name(host_root: Path = Path("/"), configured: str | None = None) -> str:
    """The node's name for records: the configured one, else the node's hostname read through
    host_root, else this process's hostname (on the node itself they are the same)."""
    if configured:
        return configured
    if host_root != Path("/"):
        name = _first_line(host_root / "etc" / "hostname")
        if name:
            return name
    return socket.gethostname()


def cgroup2_mount(mounts: Path = Path("/proc/mounts")) -> Path | None:
    """Where the unified hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid hosts)."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


class CgroupDirectory:
    """cgroup id -> cgroup path. The kernel's cgroup id (bpf_get_current_cgroup_id, in every
    call record) is the inode number of the cgroup's directory in the cgroup2 filesystem, so
    a call can be placed in its container even after its process has exited and
    /proc/<pid>/cgroup is gone. The tree is walked again on a miss, at most every
    refresh_interval_s."""

    def __init__(self, mount: Path | None = None, refresh_interval_s: float = 2.0) -> None:
        self._mount = mount if mount is not None else cgroup2_mount()
        self._refresh_interval_s = refresh_interval_s
        self._by_id: dict[int, str] = {}
        self._previous: dict[int, str] = {}
        self._walked_at = float("-inf")

    def path_of(self, cgroup_id: int) -> str | None:
        found = self._by_id.get(cgroup_id)
        if found is None and self._mount is not None and \
                time.monotonic() - self._walked_at >= self._refresh_interval_s:
            self._walk(self._mount)
            found = self._by_id.get(cgroup_id)
        return found if found is not None else self._previous.get(cgroup_id)

    def _walk(self, mount: Path) -> None:
        self._walked_at = time.monotonic()
        # Built anew, keeping the previous walk's entries one more walk: cgroups removed
        # since are forgotten (containers come and go for months), yet calls read just
        # after their cgroup was removed still find it.
        walked: dict[int, str] = {}
        for directory, _, _ in os.walk(mount):
            try:
                inode = os.stat(directory).st_ino
            except OSError:
                continue
            relative = os.path.relpath(directory, mount)
            walked[inode] = "/" if relative == "." else "/" + relative
        self._by_id, self._previous = walked, self._by_id

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """What a process's cgroup file says about it."""

    container_id: str           # the engine's id, or host:<machine-id>
    engine: str | None          # docker, containerd, cri-o, podman, kubernetes; None on the host
    cgroup_paths: tuple[str, ...]
    pod_uid: str | None


class ContainerResolver:
    """Container identity per process, cached (a process does not change container; one
    moved by hand between cgroups keeps the identity it was first seen with)."""

    def __init__(self, proc_root: Path = Path("/proc"), host: str | None = None,
                 cgroups: CgroupDirectory | None = None) -> None:
        self._proc_root = proc_root
        self._host = host or host_id()
        self._by_pid: dict[int, CgroupIdentity] = {}
        self._cgroups = cgroups

    @property
    def host(self) -> str:
        return self._host

    def forget(self, pid: int) -> None:
        self._by_pid.pop(pid, None)

    def size(self) -> int:
        return len(self._by_pid)

    def known_pids(self) -> list[int]:
        return list(self._by_pid)

    def identity(self, pid: int, cgroup_id: int = 0) -> CgroupIdentity:
        """The identity of pid; cgroup_id (from the kernel's record of the call) places a
        process that has exited since."""
        cached = self._by_pid.get(pid)
        if cached is not None:
            return cached
        try:
            text = (self._proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            text = ""
        if not text and cgroup_id and self._cgroups is not None:
            path = self._cgroups.path_of(cgroup_id)
            if path is not None:
                return self._identity_of(f"0::{path}")
        value = self._identity_of(text)
        if text:
            # An unreadable file (process gone) is not cached: the pid may be reused.
            self._by_pid[pid] = value
        return value

    def _identity_of(self, text: str) -> CgroupIdentity:
        found = container_id_from_cgroup(text)
        return CgroupIdentity(
            container_id=found[1] if found else self._host,
            engine=found[0] if found else None,
            cgroup_paths=cgroup_paths(text),
            pod_uid=pod_uid_from_cgroup(text),
        )

    def container_id(self, pid: int) -> str:
        return self.identity(pid).container_id
