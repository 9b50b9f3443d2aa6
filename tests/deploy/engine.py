"""The Docker engine for the deployment tests: whether one answers, the project's images
(built once per session by scripts/images.sh, which caches bases and wheels outside the
repository), compose (v2 plugin or docker-compose 1.29), and workload containers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runtime_signals.devtools.localkafka import KAFKA_VERSION
from tests import brokers

REPO = Path(__file__).resolve().parents[2]
IMAGES_SCRIPT = REPO / "scripts" / "images.sh"
VERSION = "0.1.0"
AGENT_IMAGE = f"runtime-signals/agent:{VERSION}"
PROCESSOR_IMAGE = f"runtime-signals/processor:{VERSION}"
KAFKA_IMAGE = f"runtime-signals/kafka:{KAFKA_VERSION}"
PYTHON_BASE = "runtime-signals/debian-python:12"
# Docker's CLI: Debian's (/usr/bin/docker) when installed, since it matches Debian's engine.
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def docker(*args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def require_engine() -> None:
    """Skip when no Docker engine answers (scripts/bootstrap.sh --docker installs and starts one)."""
    reason = brokers.docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"{reason}; scripts/bootstrap.sh --docker installs Debian's docker.io and starts dockerd")


def engine_version() -> tuple[int, int]:
    text = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def agent_capability_env() -> dict[str, str]:
    """Docker 20.10 does not know CAP_BPF and CAP_PERFMON: the compose file's documented
    stand-ins (deploy/compose/docker-compose.yml, the agent's cap_add)."""
    if engine_version() >= (23, 0):
        return {}
    return {"RUNTIME_SIGNALS_AGENT_CAP_BPF": "SYS_ADMIN", "RUNTIME_SIGNALS_AGENT_CAP_PERFMON": "IPC_LOCK"}


def build_images() -> None:
    """scripts/images.sh build: a few seconds when the caches are warm."""
    proc = subprocess.run([str(IMAGES_SCRIPT), "build"], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"scripts/images.sh build failed:\n{proc.stderr[-4000:]}")


def compose_command() -> list[str]:
    """docker compose (v2) when the CLI has it, else docker-compose (1.29, Debian's)."""
    if subprocess.run([DOCKER, "compose", "version"], capture_output=True).returncode == 0:
        return [DOCKER, "compose"]
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed (scripts/bootstrap.sh --docker)")
    return [found]


def container_id(name_or_id: str) -> str:
    return docker("inspect", "--format", "{{.Id}}", name_or_id).stdout.strip()


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def inspect(name: str) -> dict[str, object]:
    return json.loads(docker("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without settings that would leak into compose."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALS_", "KAFKA_", "RUNTIME_SIGNALS_"))}
    env.update(extra)
    return env
