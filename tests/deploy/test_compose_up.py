"""deploy/compose brought up for real on this host's Docker engine, with the images built from
this repository (scripts/images.sh, no registry): Kafka in its volume, the topics, the
processor on a read-only root as uid 10001, the agent with the compose file's capabilities.
A workload runs in real containers -- two from one image, and one that exits at once -- and
`docker compose run --rm processor summaries`, as documented, reads their summaries through
the configuration file. The agent's container is then recreated: the node's processes keep
their identity."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runtime_signals.devtools.localkafka import free_port_pair
from tests.deploy import engine
from tests.deploy.manifests import COMPOSE_FILE

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(1500)]

WORKLOAD = Path(__file__).resolve().parent / "data" / "tls_handshakes.py"
SYMBOL = "SSL_do_handshake"


class Stack:
    def __init__(self, command: list[str], env: dict[str, str], project: str) -> None:
        self.command, self.env, self.project = command, env, project

    def run(self, *args: str, timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, cwd=COMPOSE_FILE.parent)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(self.command[-6:])} {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}\n{self.logs()[-6000:]}")
        return proc

    def logs(self, service: str = "") -> str:
        proc = subprocess.run([*self.command, "logs", "--no-color", *([service] if service else [])], env=self.env,
                              capture_output=True, text=True, timeout=120, cwd=COMPOSE_FILE.parent)
        return proc.stdout

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("the agent's container needs root to be given its capabilities")
    engine.require_engine()
    engine.build_images()
    kafka_port, processor_port = free_port_pair()
    agent_port, _ = free_port_pair()
    # Short windows so a summary comes out within seconds; everything else as shipped.
    override = tmp_path_factory.mktemp("compose") / "test-override.yml"
    override.write_text(yaml.safe_dump({"services": {"processor": {"environment": {
        "SIGNALS_PROCESSOR__WINDOW_MS": "5000", "SIGNALS_PROCESSOR__ALLOWED_LATENESS_MS": "1000"}}}}))
    project = f"rsdeploytest{os.getpid()}"
    env = engine.clean_env(RUNTIME_SIGNALS_KAFKA_PORT=str(kafka_port),
                           RUNTIME_SIGNALS_PROCESSOR_METRICS_PORT=str(processor_port),
                           RUNTIME_SIGNALS_AGENT_METRICS_PORT=str(agent_port), **engine.agent_capability_env())
    stack = Stack([*engine.compose_command(), "-p", project, "-f", str(COMPOSE_FILE), "-f", str(override)],
                  env, project)
    try:
        stack.run("up", "-d", timeout_s=900)
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False)


def _workload(name: str, seconds: int, detach: bool = True) -> str:
    """A container of the Python base image running the TLS workload; returns its full id."""
    args = ["run", "--name", name, "-v", f"{WORKLOAD}:/workload.py:ro"]
    args += ["-d"] if detach else []
    engine.docker(*args, engine.PYTHON_BASE, "python3", "/workload.py", str(seconds), timeout_s=120)
    return engine.container_id(name)


def _agent_log(stack: Stack) -> str:
    return stack.logs("agent")


def _summaries(stack: Stack) -> list[dict[str, object]]:
    proc = stack.run("run", "--rm", "-T", "processor", "summaries", "--json", "--symbol", SYMBOL,
                     timeout_s=180, check=False)
    if proc.returncode != 0:
        print(f"summaries failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return []
    # compose 1.29 may print its own lines (creating networks) before the command's output.
    text = proc.stdout[proc.stdout.find("["):] if "[" in proc.stdout else "[]"
    summaries = json.loads(text)
    print(f"summaries of {sorted(str(s['container_id'])[:12] for s in summaries)}")
    return summaries  # type: ignore[no-any-return]


def test_the_stack_runs_least_privileged_with_kafka_data_in_its_volume(stack: Stack) -> None:
    processor = engine.inspect(stack.container("processor"))
    assert processor["State"]["Running"], stack.logs("processor")  # type: ignore[index]
    assert processor["Config"]["User"] == "10001:10001"  # type: ignore[index]
    assert processor["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    kafka = engine.inspect(stack.container("kafka"))
    volumes = {m["Destination"]: m for m in kafka["Mounts"] if m["Type"] == "volume"}  # type: ignore[index]
    assert "/var/lib/kafka/data" in volumes
    engine.docker("exec", stack.container("kafka"), "test", "-s", "/var/lib/kafka/data/meta.properties")
    topics = engine.inspect(stack.container("topics") or f"{stack.project}_topics_1")
    assert topics["State"]["ExitCode"] == 0  # type: ignore[index]


def test_workload_containers_come_out_as_summaries_with_their_container_ids(stack: Stack) -> None:
    engine.wait_for(lambda: "agent ready" in _agent_log(stack), 300, "the agent to attach")
    names = [f"{stack.project}-long-a", f"{stack.project}-long-b", f"{stack.project}-short"]
    try:
        first = _workload(names[0], 90)
        # Probes attach per file: once the image's libssl is attached, every container of the
        # image is probed from its first call, also one that lives for a moment only.
        engine.wait_for(lambda: "/proc/" in _agent_log(stack) and "libssl" in _agent_log(stack), 120,
                        "the agent to attach the image's libssl")
        second = _workload(names[1], 60)
        # One handshake, then it exits: a load on the stack, not a requirement here
        # (tests/deploy/test_agent_containers.py shows such a container keeps its id).
        _workload(names[2], 0, detach=False)
        wanted = {first, second}

        def seen() -> set[str] | None:
            found = {str(s["container_id"]) for s in _summaries(stack)}
            return found if wanted <= found else None

        engine.wait_for(seen, 300, f"summaries of containers {sorted(c[:12] for c in wanted)}", interval_s=5)
    finally:
        for name in names:
            engine.docker("rm", "-f", name, check=False)


def test_the_node_keeps_its_identity_when_the_agent_container_is_recreated(stack: Stack) -> None:
    machine_id = Path("/etc/machine-id").read_text().strip()
    expected = f"its own processes are container host:{machine_id}"
    engine.wait_for(lambda: expected in _agent_log(stack), 300, "the agent's node identity line")
    before = stack.container("agent")
    stack.run("up", "-d", "--force-recreate", "--no-deps", "agent", timeout_s=300)
    after = stack.container("agent")
    assert after and after != before
    engine.wait_for(lambda: engine.docker("logs", after, check=False).stderr.count(expected) >= 1, 300,
                    "the recreated agent's node identity line")
