"""deploy/compose/docker-compose.yml, read statically (no Docker engine here): the services
and their order, the agent granted what the DaemonSet grants and no more, the broker of the
same release as the development broker, and a configuration the settings loader accepts."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

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
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = kafka["environment"]
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
    assert {source for source, _, _ in host_mounts} == {"/sys/kernel/tracing", "/lib/modules", "/usr/src"}
    for source, _target, read_only in host_mounts:
        assert read_only == (source != "/sys/kernel/tracing"), source


def test_processor_and_topics_run_unprivileged(services: dict[str, Any]) -> None:
    for name in ("processor", "topics"):
        service = services[name]
        assert not service["user"].startswith("0"), name
        assert service["cap_drop"] == ["ALL"] and not service.get("cap_add"), name
        assert service["read_only"] is True, name


def test_images_are_built_from_this_repository(services: dict[str, Any]) -> None:
    for name in ("topics", "processor", "agent"):
        build = services[name]["build"]
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).is_file(), name


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
