"""Container ids from cgroup paths of every supported engine, and the host's stable id."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.identity import ContainerResolver, container_id_from_cgroup, host_id

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


def test_a_host_process_gets_the_stable_host_id() -> None:
    resolver = ContainerResolver()
    import os

    # This test's own process runs on the host (or in whatever container runs CI):
    found = container_id_from_cgroup(Path(f"/proc/{os.getpid()}/cgroup").read_text())
    expected = found[1] if found else host_id()
    assert resolver.container_id(os.getpid()) == expected
    assert host_id() == host_id()
