"""Rendering and reading the deployment files for the tests: kustomize builds, the pod
specs inside them, and the capabilities the agent is granted (the least-privilege test
runs the agent with exactly these)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE_FILE = REPO / "deploy" / "compose" / "docker-compose.yml"
KUSTOMIZATIONS = ("base", "overlays/strimzi", "overlays/plain", "overlays/signed-records")
POD_KINDS = {"DaemonSet", "Deployment", "Job", "StatefulSet", "CronJob"}


def kustomize_command() -> list[str] | None:
    """argv prefix that renders a kustomization: `kubectl kustomize` (kustomize is built into
    kubectl) or a standalone `kustomize build` (scripts/bootstrap.sh can `go install` one)."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    cache = Path(os.environ.get("RUNTIME_SIGNALS_CACHE") or Path.home() / ".cache" / "runtime-signals")
    kustomize = shutil.which("kustomize") or shutil.which("kustomize", path=str(cache / "bin"))
    if kustomize:
        return [kustomize, "build"]
    return None


def render(kustomization: str) -> list[dict[str, Any]]:
    """The resources of deploy/k8s/<kustomization>, as kustomize renders them."""
    command = kustomize_command()
    if command is None:
        raise FileNotFoundError("neither kubectl nor kustomize is on PATH; scripts/bootstrap.sh "
                                "installs kustomize with `go install` when Go is present")
    proc = subprocess.run([*command, str(K8S / kustomization)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} {kustomization} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec = resource["spec"]
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def containers(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(resource)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def one(resources: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind
             and r["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} of component {component}, found {len(found)}"
    return found[0]


def agent_daemonset() -> dict[str, Any]:
    return one(render("base"), "DaemonSet", "agent")


def agent_capabilities() -> set[str]:
    """What the DaemonSet adds, as capability names: {"BPF", "PERFMON", ...}."""
    (agent,) = [c for c in containers(agent_daemonset()) if c["name"] == "agent"]
    return set(agent["securityContext"]["capabilities"]["add"])


_DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


def compose() -> dict[str, Any]:
    """The compose file as compose reads it with none of its variables set: every
    ${NAME:-default} replaced by its default (images, published ports, capabilities)."""
    return yaml.safe_load(_DEFAULTED.sub(lambda m: m.group(1), COMPOSE_FILE.read_text()))
