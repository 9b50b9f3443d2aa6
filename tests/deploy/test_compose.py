"""deploy/compose/docker-compose.yml, read statically and checked by docker-compose 1.29 and
`docker compose` where installed (test_compose_up.py brings it up): the services and their
order, the agent granted what the DaemonSet grants and no more, the broker of the same release
as the development broker, and a configuration the settings loader accepts."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from runtime_signals.config import load_config
from runtime_signals.devtools.localkafka import KAFKA_VERSION
from tests.deploy import manifests
from tests.deploy.manifests import COMPOSE_FILE, REPO


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return manifests.compose()["services"]


def _volume(spec: str) -> tuple[str, str, bool]:
    """(source, target, read_only) of a short-syntax volume."""
    parts = spec.split(":")
    return parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")


def test_services_start_in_order(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "topics", "processor", "agent"}
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("processor", "agent"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["kafka"]["healthcheck"]["test"]


def test_kafka_is_the_development_broker_release_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = kafka["environment"]
    # The project's own Kafka image (deploy/docker/Dockerfile.kafka), of the development release.
    assert kafka["image"] == f"runtime-signals/kafka:{KAFKA_VERSION}"
    assert "runtime_signals/devtools" in (REPO / "deploy" / "docker" / "Dockerfile.kafka").read_text()
    # Its data in the volume, not in the container's /tmp.
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # Published on loopback only: the broker has no authentication in this setup.
    assert all(str(port).startswith("127.0.0.1:") for port in kafka["ports"])


def test_agent_has_the_daemonset_privileges_and_no_more(services: dict[str, Any]) -> None:
    agent = services["agent"]
    assert agent["pid"] == "host"
    assert not agent.get("privileged") and not agent.get("network_mode")
    assert agent["cap_drop"] == ["ALL"]
    assert set(agent["cap_add"]) == manifests.agent_capabilities()
    assert agent["read_only"] is True and "no-new-privileges:true" in agent["security_opt"]
    host_mounts = [_volume(v) for v in agent["volumes"] if v.startswith("/")]
    assert {source for source, _, _ in host_mounts} == {"/sys/kernel/tracing", "/lib/modules", "/usr/src",
                                                         "/etc/machine-id"}
    for source, _target, read_only in host_mounts:
        assert read_only == (source != "/sys/kernel/tracing"), source


def test_processor_and_topics_run_unprivileged(services: dict[str, Any]) -> None:
    for name in ("processor", "topics"):
        service = services[name]
        assert not service["user"].startswith("0"), name
        assert service["cap_drop"] == ["ALL"] and not service.get("cap_add"), name
        assert service["read_only"] is True, name


def test_images_are_the_projects_and_overridable(services: dict[str, Any]) -> None:
    raw = manifests.COMPOSE_FILE.read_text()
    for name, variable in (("kafka", "KAFKA"), ("topics", "PROCESSOR"), ("processor", "PROCESSOR"),
                           ("agent", "AGENT")):
        assert services[name]["image"].startswith("runtime-signals/"), name
        assert f"${{RUNTIME_SIGNALS_{variable}_IMAGE:-{services[name]['image']}}}" in raw, name
        assert "build" not in services[name], f"{name}: images come from scripts/images.sh, not compose"


def test_no_top_level_name_and_a_bounded_topics_restart() -> None:
    # docker-compose 1.29 (Debian 12's) refuses a top-level `name`.
    assert set(manifests.compose()) == {"services", "volumes"}
    # on-failure without a bound makes `up` wait for ever on a topics service that cannot succeed.
    assert manifests.compose()["services"]["topics"]["restart"] == "on-failure:5"


@pytest.mark.parametrize("tool", ["docker-compose", "docker compose"])
def test_compose_accepts_the_file(tool: str) -> None:
    argv = tool.split()
    if shutil.which(argv[0]) is None or subprocess.run([*argv, "version"], capture_output=True).returncode != 0:
        pytest.skip(f"{tool} is not installed (scripts/bootstrap.sh installs Debian's docker-compose 1.29)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_SIGNALS_")}
    proc = subprocess.run([*argv, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, f"{tool} refuses {COMPOSE_FILE}:\n{proc.stderr}"
    # Docker 20.10's stand-ins for CAP_BPF and CAP_PERFMON are accepted as well.
    proc = subprocess.run([*argv, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60,
                          env={**env, "RUNTIME_SIGNALS_AGENT_CAP_BPF": "SYS_ADMIN",
                               "RUNTIME_SIGNALS_AGENT_CAP_PERFMON": "IPC_LOCK"})
    assert proc.returncode == 0, proc.stderr
    assert set(yaml.safe_load(proc.stdout)["services"]["agent"]["cap_add"]) == {"SYS_ADMIN", "IPC_LOCK",
                                                                               "SYS_PTRACE", "KILL"}


def test_commands_are_accepted_and_the_config_is_valid(services: dict[str, Any]) -> None:
    from runtime_signals.cli import _parser

    for name in ("topics", "processor", "agent"):
        service = services[name]
        try:
            _parser().parse_args(service["command"])
        except SystemExit as exc:
            raise AssertionError(f"{name}: `signals {shlex.join(service['command'])}` is refused") from exc
        mounts = {target: source for source, target, _ in map(_volume, service["volumes"])}
        env = dict(service["environment"])
        # The service's own environment, SIGNALS_CONFIG included (it shares the settings'
        # prefix); only its path is translated to the host file mounted there.
        config_file = COMPOSE_FILE.parent / mounts[env["SIGNALS_CONFIG"]]
        env["SIGNALS_CONFIG"] = str(config_file)
        config = load_config(None, env=env)
        assert config.kafka.bootstrap_servers == "kafka:19092"
        if name == "agent":
            assert config.agent.targets and config.agent.host_root == "/proc/1/root"
