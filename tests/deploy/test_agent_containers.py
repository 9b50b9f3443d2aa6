"""The agent, on this host, against real Docker containers (no simulated cgroups): a library
that exists only inside an image is found through each container's root and probed; calls
are attributed to the full container ids Docker reports -- for two containers of one image
and for one that makes a single call and exits -- with the pids of the node.

This host is a cgroup v1 host (Docker's cgroupfs driver: /docker/<id> paths); a cgroup v2
node cannot be made here without rebooting the VM into the unified hierarchy, so v2 paths
are covered by tests/agent/test_identity.py's layouts only."""

from __future__ import annotations

import ast
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, AgentProcess, decode_all, read_all
from tests.bpf_support import bpf_unavailable_reason
from tests.deploy import engine

pytestmark = [pytest.mark.bpf, pytest.mark.broker, pytest.mark.timeout(900)]

DATA = Path(__file__).resolve().parent / "data"
LIBRARY = "/opt/app/lib/libonlyhere.so"
SYMBOL = "only_here_work"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image holding libonlyhere.so and its caller; the library is on no host path."""
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    engine.require_engine()
    engine.build_images()  # the Python base the test image starts from
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (scripts/bootstrap.sh installs gcc)"
    context = tmp_path_factory.mktemp("onlyhere-image")
    flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline"]
    subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(context / "libonlyhere.so"),
                    str(DATA / "onlyhere.c")], check=True)
    subprocess.run([compiler, *flags, "-o", str(context / "caller"), str(DATA / "onlyhere_caller.c"),
                    "-L", str(context), "-lonlyhere", "-Wl,-rpath,/opt/app/lib"], check=True)
    (context / "Dockerfile").write_text(
        f"FROM {engine.PYTHON_BASE}\n"
        "COPY libonlyhere.so /opt/app/lib/libonlyhere.so\n"
        "COPY caller /opt/app/bin/caller\n"
        'ENTRYPOINT ["/opt/app/bin/caller"]\n')
    tag = f"rs-deploy-test/onlyhere:{uuid.uuid4().hex[:8]}"
    engine.docker("build", "-q", "--network", "none", "-t", tag, str(context), timeout_s=600)
    shutil.rmtree(context)  # from here on the library exists only in the image
    try:
        yield tag
    finally:
        engine.docker("rmi", "-f", tag, check=False)


def _run_workload(image: str, kafka_bootstrap: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, int],
                                                                              dict[str, int], Counter[str],
                                                                              dict[str, set[int]], str]:
    """Two containers of the image (one started after the probe is attached) and one that
    makes a single call and exits, under the agent; returns (container ids, their node pids,
    the calls each made, calls attributed per container id, pids per container id, agent log)."""
    prefix = f"deploy-containers-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    run = uuid.uuid4().hex[:8]
    containers = {role: f"rs-deploy-test-{role}-{run}" for role in ("long-a", "long-b", "short")}
    agent = AgentProcess(kafka_bootstrap, prefix, [f"{LIBRARY}:{SYMBOL}"], tmp_path / "agent.log",
                         ["--target-rescan-interval-ms", "500"])
    try:
        with agent:
            engine.docker("run", "-d", "--name", containers["long-a"], image, "30")
            # Attached through /proc/<pid>/root of the first container; the uprobe is on the
            # image's file, so every container of the image is probed from its first call.
            agent.wait_for(f"root{LIBRARY}", 120)
            engine.docker("run", "-d", "--name", containers["long-b"], image, "10")
            engine.docker("run", "--name", containers["short"], image, "0")  # one call, then exit
            # A process started in a running container (its root is known: not held) that
            # makes one call and exits before the agent reads its calls.
            exec_made = int(engine.docker("exec", containers["long-a"], "/opt/app/bin/caller", "0").stdout.split()[0])
            ids = {role: engine.container_id(name) for role, name in containers.items()}
            pids = {role: int(engine.inspect(containers[role])["State"]["Pid"])  # type: ignore[index]
                    for role in ("long-a", "long-b")}
            engine.wait_for(lambda: not engine.inspect(containers["long-b"])["State"]["Running"],  # type: ignore[index]
                            120, "the second container to finish")
            made = {role: int(engine.docker("logs", name).stdout.split()[0])
                    for role, name in containers.items() if role != "long-a"}
            made["exec"] = exec_made
            agent.stop()
        events = decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
    finally:
        for name in containers.values():
            engine.docker("rm", "-f", name, check=False)
    calls = Counter[str]()
    pids_seen: dict[str, set[int]] = {}
    for event in events:
        calls[event["container_id"]] += event["observation_count"]
        pids_seen.setdefault(event["container_id"], set()).add(event["pid"])
    return ids, pids, made, calls, pids_seen, agent.log()


@pytest.fixture(scope="module")
def observed(image: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return _run_workload(image, kafka_bootstrap, tmp_path_factory.mktemp("agent"))


def test_two_containers_of_one_image_are_told_apart(observed) -> None:  # type: ignore[no-untyped-def]
    ids, pids, _made, calls, pids_seen, log = observed
    for role in ("long-a", "long-b"):
        assert calls[ids[role]] > 0, f"no calls attributed to {role} {ids[role][:12]}: {dict(calls)}\n{log[-3000:]}"
        assert pids[role] in pids_seen[ids[role]], f"{role}: events carry the node's pid of the container's process"
    assert pids_seen[ids["long-b"]] == {pids["long-b"]}
    # long-a's other pid is the process `docker exec` started in it.
    assert len(pids_seen[ids["long-a"]]) == 2, pids_seen


def test_a_container_started_after_the_attach_is_counted_once_per_call(observed) -> None:  # type: ignore[no-untyped-def]
    ids, _pids, made, calls, _pids_seen, log = observed
    attached = "\n".join(line for line in log.splitlines() if "agent.targets: attached" in line)
    assert calls[ids["long-b"]] == made["long-b"], f"attached:\n{attached}"


def test_a_container_that_exits_at_once_keeps_its_container_id(observed) -> None:  # type: ignore[no-untyped-def]
    ids, _pids, made, calls, _pids_seen, _log = observed
    assert made["short"] == 1
    assert calls[ids["short"]] == 1, f"attributed: {dict(calls)}"


def test_each_container_is_held_at_its_first_exec_and_its_library_attached_before_its_calls(  # type: ignore[no-untyped-def]
        observed) -> None:
    """Each container's first exec is in a root the agent has not seen: it is held while the
    agent reads its identity and hooks its image's loader (bpf/loadwatch.bpf.c), so no call
    depends on the agent reading /proc in time, and none is made before the attach."""
    _ids, _pids, _made, _calls, _pids_seen, log = observed
    def last_counters(label: str) -> dict[str, int]:
        lines = [line for line in log.splitlines() if f"{label}: {{" in line]
        assert lines, f"no {label} line in the agent's log:\n{log[-3000:]}"
        return ast.literal_eval(lines[-1].split(f"{label}: ", 1)[1])  # type: ignore[no-any-return]

    holds = last_counters("loader holds")
    assert holds["held"] >= 3 and holds["root_unread"] == 0, holds
    # The first container's library too is attached while it is held, not by a rescan later.
    assert last_counters("targets")["late_attaches"] == 0, last_counters("targets")


def test_a_process_started_in_a_running_container_that_calls_and_exits_keeps_its_container_id(  # type: ignore[no-untyped-def]
        observed) -> None:
    """`docker exec` of a program that makes one call and exits: its root is the container's,
    already known, so it is not held; its call is read after it is gone (the agent's flush),
    when /proc has nothing of it. On a cgroup v1 node its kernel cgroup id (the unified
    hierarchy's) does not name the container either."""
    ids, pids, made, calls, pids_seen, _log = observed
    assert made["exec"] == 1
    assert not [container for container in calls if container.startswith("host:")], dict(calls)
    assert pids_seen[ids["long-a"]] - {pids["long-a"]}, f"no call of the exec'd process in long-a: {pids_seen}"

