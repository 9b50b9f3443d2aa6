"""Container ids from cgroup paths of every supported engine, and the host's stable id."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime_signals.agent.identity import (
    CgroupDirectory,
    ContainerResolver,
    PodDirectory,
    container_id_from_cgroup,
    host_id,
    node_name,
    pod_uid_from_cgroup,
)
from runtime_signals.agent.processes import NodeFiles, ProcessTable
from tests.agent.cgroups import CgroupSandbox, cgroup_unavailable_reason, iter_engine_layouts

CID = "4f1c3a9be2d0" + "a" * 52

@pytest.mark.parametrize("cgroup, engine", [
    (f"0::/system.slice/docker-{CID}.scope", "docker"),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{CID}.scope",
     "containerd"),
    (f"0::/kubepods.slice/kubepods-pod1234.slice/crio-{CID}.scope", "cri-o"),
    (f"0::/machine.slice/libpod-{CID}.scope/container", "podman"),
    (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope", "podman"),
    (f"12:memory:/docker/{CID}\n11:cpu:/docker/{CID}", "docker"),
    (f"9:cpuset:/kubepods/burstable/pod0c7f6b3e-1111-2222-3333-444455556666/{CID}", "kubernetes"),
])
def test_engines_cgroup_layouts_name_the_container(cgroup: str, engine: str) -> None:
    assert container_id_from_cgroup(cgroup) == (engine, CID)


def test_host_processes_have_no_container() -> None:
    assert container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope") is None
    assert container_id_from_cgroup("") is None


def test_a_host_process_gets_the_machine_id() -> None:
    found = container_id_from_cgroup(Path(f"/proc/{os.getpid()}/cgroup").read_text())
    if found:
        pytest.skip(f"the tests run inside a {found[0]} container: no host process to look at")
    machine_id = Path("/etc/machine-id").read_text().strip()
    assert machine_id, "this host has an empty /etc/machine-id"
    assert ContainerResolver().container_id(os.getpid()) == f"host:{machine_id}"


def test_the_host_id_falls_back_from_machine_id_to_hostname(tmp_path: Path) -> None:
    # host_id reads the node's files through host_root (the agent in a container: /proc/1/root).
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hostname").write_text("node-7\n")
    assert host_id(tmp_path, etc=tmp_path / "none") == "host:node-7"
    assert host_id(tmp_path, node_name="node-9", etc=tmp_path / "none") == "host:node-9"
    (etc / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    assert host_id(tmp_path, node_name="node-9", etc=tmp_path / "none") == "host:0123456789abcdef0123456789abcdef"
    assert host_id(tmp_path / "missing", etc=tmp_path / "none") == "host:unknown"


# --- real cgroups, real processes ---------------------------------------------------------

POD_UID = "0c7f6b3e-1111-2222-3333-444455556666"


@pytest.fixture
def cgroups() -> Iterator[CgroupSandbox]:
    reason = cgroup_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with CgroupSandbox() as sandbox:
        yield sandbox


def test_processes_moved_into_each_engines_cgroup_are_attributed_to_the_container(
        cgroups: CgroupSandbox, tmp_path: Path) -> None:
    """For every layout: a cgroup v2 directory named as the engine names it, a real process
    written into its cgroup.procs, and the resolver reading /proc/<pid>/cgroup."""
    pods = tmp_path / "pods"
    (pods / f"payments_api-7d9f_{POD_UID}").mkdir(parents=True)  # kubelet's log dir naming
    table = ProcessTable(node=NodeFiles(pods=PodDirectory(pods)))
    seen = []
    for index, (engine, layout) in enumerate(iter_engine_layouts(CID, POD_UID)):
        directory = cgroups.make(f"{index}/{layout}")
        process = cgroups.spawn_in(directory, ["sleep", "30"])
        deadline = time.monotonic() + 5
        while cgroups.path_of(directory) not in Path(f"/proc/{process.pid}/cgroup").read_text():
            assert time.monotonic() < deadline, "the process never entered its cgroup"
            time.sleep(0.01)
        resolver = ContainerResolver()
        identity = resolver.identity(process.pid)
        assert (identity.engine, identity.container_id) == (engine, CID), layout
        assert cgroups.path_of(directory) in identity.cgroup_paths
        info = table.describe(process.pid)
        assert info.container_id == CID
        if "kubepods" in layout:
            assert (info.pod_uid, info.pod_namespace, info.pod_name) == (POD_UID, "payments", "api-7d9f"), layout
        else:
            assert info.pod_uid is None
        seen.append(engine)
        process.kill()
        process.wait()
    assert sorted(set(seen)) == ["containerd", "cri-o", "docker", "kubernetes", "podman"]


def test_a_process_in_a_plain_cgroup_is_a_host_process(cgroups: CgroupSandbox) -> None:
    directory = cgroups.make("system.slice/cron.service")
    process = cgroups.spawn_in(directory, ["sleep", "30"])
    deadline = time.monotonic() + 5
    while cgroups.path_of(directory) not in Path(f"/proc/{process.pid}/cgroup").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    identity = ContainerResolver().identity(process.pid)
    assert identity.container_id == host_id() and identity.engine is None
    assert cgroups.path_of(directory) in identity.cgroup_paths


def test_a_cgroup_v1_docker_layout_is_read_too() -> None:
    """Hybrid hosts still have v1 hierarchies; the pids controller's is used here."""
    v1 = Path("/sys/fs/cgroup/pids")
    if os.geteuid() != 0 or not (v1 / "cgroup.procs").exists():
        pytest.skip("no writable cgroup v1 pids hierarchy on this host")
    directory = v1 / f"rs-test-{os.getpid()}" / "docker" / CID
    directory.mkdir(parents=True)
    process = subprocess.Popen(["sh", "-c", f'echo $$ > "{directory}/cgroup.procs" && exec sleep 30'])
    try:
        deadline = time.monotonic() + 5
        while f"/docker/{CID}" not in Path(f"/proc/{process.pid}/cgroup").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert ContainerResolver().identity(process.pid).engine == "docker"
        assert ContainerResolver().container_id(process.pid) == CID
    finally:
        process.kill()
        process.wait()
        for path in (directory, directory.parent, directory.parent.parent):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def test_pod_names_come_from_kubelets_pod_directories(tmp_path: Path) -> None:
    pods = PodDirectory(tmp_path, refresh_interval_s=0)
    assert pods.lookup(POD_UID) is None
    (tmp_path / f"kube-system_coredns-5d78c9869d-abcde_{POD_UID}").mkdir()
    found = pods.lookup(POD_UID)
    assert found is not None and (found.namespace, found.name) == ("kube-system", "coredns-5d78c9869d-abcde")
    systemd = f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice/x"
    assert pod_uid_from_cgroup(systemd) == POD_UID
    assert pod_uid_from_cgroup(f"0::/kubepods/burstable/pod{POD_UID}/{CID}") == POD_UID
    assert pod_uid_from_cgroup("0::/system.slice/docker.service") is None


def test_a_call_from_a_process_that_has_exited_is_placed_by_its_cgroup_id(cgroups: CgroupSandbox) -> None:
    """The kernel's record carries the cgroup id (the cgroup directory's inode); when the
    process is gone before its call is read, that still names the container."""
    directory = cgroups.make(f"system.slice/docker-{CID}.scope")
    process = cgroups.spawn_in(directory, ["true"])
    process.wait()
    assert not Path(f"/proc/{process.pid}").exists()
    resolver = ContainerResolver(cgroups=CgroupDirectory(refresh_interval_s=0))
    assert resolver.container_id(process.pid) == host_id()  # nothing to read any more
    identity = resolver.identity(process.pid, cgroup_id=os.stat(directory).st_ino)
    assert identity.container_id == CID and identity.engine == "docker"
    assert identity.cgroup_paths == (cgroups.path_of(directory),)


def _node(tmp_path: Path, machine_id: str | None, hostname: str | None) -> Path:
    root = tmp_path / "node"
    (root / "etc").mkdir(parents=True)
    if machine_id is not None:
        (root / "etc" / "machine-id").write_text(machine_id + "\n")
    if hostname is not None:
        (root / "etc" / "hostname").write_text(hostname + "\n")
    return root


def test_an_agent_in_a_container_names_host_processes_after_the_node(tmp_path: Path) -> None:
    # The agent container's own /etc holds its (changing) hostname and no machine id.
    agent_etc = tmp_path / "agent-etc"
    agent_etc.mkdir()
    (agent_etc / "hostname").write_text("4f2a9c1d0b7e\n")
    node = _node(tmp_path, "3d1219c7c4c5404aaa1f6d2a48adfda4", "worker-1")
    assert host_id(node, None, etc=agent_etc) == "host:3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert node_name(node) == "worker-1"
    # Node root unreadable (/proc/1/root refused): the node's machine id bind-mounted at /etc.
    (agent_etc / "machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    assert host_id(tmp_path / "unreadable", None, etc=agent_etc) == "host:3d1219c7c4c5404aaa1f6d2a48adfda4"
    # Neither: the configured node name, never the container's hostname.
    (agent_etc / "machine-id").unlink()
    assert host_id(tmp_path / "unreadable", "worker-1", etc=agent_etc) == "host:worker-1"
    assert host_id(tmp_path / "unreadable", None, etc=agent_etc) == "host:unknown"
    assert node_name(tmp_path / "unreadable", "worker-1") == "worker-1"

