"""The Kubernetes manifests' containers run as the kubelet would run them, in the images built
from this repository: the image's entry point with the container's exact args, its exact
environment (secret values stand in for secretKeyRef, spec.nodeName for the fieldRef), the
ConfigMap's signals.toml and a CA file at their mount paths, the pod's user, a read-only
root with the emptyDir /tmp, and, for the agent, the DaemonSet's host mounts, hostPID and
capabilities. No Kubernetes cluster or Strimzi Kafka runs here: the network is cut, so
each container is shown to start with its configuration as far as the cluster's address,
never to stop on its own configuration."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import engine, manifests
from tests.deploy.manifests import containers, one, pod_spec, render
from tests.secure_kafka import make_pki

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.skipif(manifests.kustomize_command() is None, reason="neither kubectl nor kustomize")]

CONFIG_ERRORS = ("invalid configuration", "no setting", "Read-only file system", "Traceback", "usage: signals")


@pytest.fixture(scope="module")
def images() -> None:
    engine.require_engine()
    engine.build_images()


def _capabilities(added: list[str]) -> list[str]:
    """The container's capabilities as this engine takes them: Docker 20.10 does not know
    CAP_BPF and CAP_PERFMON, so CAP_SYS_ADMIN stands in for both (docs/deploy.md)."""
    if engine.engine_version() >= (23, 0) or not {"BPF", "PERFMON"} & set(added):
        return added
    return [cap for cap in added if cap not in ("BPF", "PERFMON")] + ["SYS_ADMIN"]


def _docker_run_args(workload: dict[str, Any], container: dict[str, Any], config_map: dict[str, Any],
                     work: Path, name: str) -> list[str]:
    """`docker run` arguments reproducing the pod spec of one container."""
    spec = pod_spec(workload)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    args = ["run", "--name", name, "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true"]
    context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    if "runAsUser" in context:
        args += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"]
    for cap in _capabilities(context.get("capabilities", {}).get("add", [])):
        args += ["--cap-add", cap]
    if spec.get("hostPID"):
        args += ["--pid", "host"]
    if context.get("appArmorProfile", {}).get("type") == "Unconfined":
        args += ["--security-opt", "apparmor=unconfined"]
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        suffix = ":ro" if mount.get("readOnly") else ""
        if "configMap" in volume:
            source = work / "config"
            source.mkdir(exist_ok=True)
            (source / "signals.toml").write_text(config_map["data"]["signals.toml"])
            args += ["-v", f"{source}:{target}{suffix}"]
        elif "secret" in volume:
            source = work / "kafka-ca"
            source.mkdir(exist_ok=True)
            # A real CA certificate (made with openssl): librdkafka refuses anything else.
            (source / "ca.crt").write_bytes(make_pki(work / "pki").ca.read_bytes())
            (source / "ca.crt").chmod(0o644)
            args += ["-v", f"{source}:{target}{suffix}"]
        elif "hostPath" in volume:
            source = Path(volume["hostPath"]["path"])
            if not source.exists():  # kubelet's /var/log/pods on a host that runs no kubelet
                source = work / "host" / source.relative_to("/")
                source.mkdir(parents=True)
            args += ["-v", f"{source}:{target}{suffix}"]
        elif "emptyDir" in volume:
            owner = context.get("runAsUser", 0)
            args += ["--tmpfs", f"{target}:uid={owner},gid={context.get('runAsGroup', owner)},mode=0755"]
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            value = "stand-in-password"
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            value = "node-under-test"
        else:
            raise AssertionError(f"{container['name']}: env {var['name']} comes from a source the test cannot give")
        args += ["-e", f"{var['name']}={value}"]
    image = engine.AGENT_IMAGE if "agent" in container["image"] else engine.PROCESSOR_IMAGE
    return [*args, image, *container["args"]]


def _run_until(args: list[str], needles: tuple[str, ...], seconds: float) -> str:
    """Start the container, wait for one of needles in its output (or seconds), remove it."""
    name = args[args.index("--name") + 1]
    engine.docker(*args[:1], "-d", *args[1:], timeout_s=120)
    try:
        deadline = time.monotonic() + seconds
        while True:
            logs = engine.docker("logs", name, check=False)
            output = logs.stdout + logs.stderr
            running = engine.inspect(name)["State"]["Running"]  # type: ignore[index]
            if any(n in output for n in needles) or not running or time.monotonic() > deadline:
                return output
            time.sleep(2)
    finally:
        # Stopped as the kubelet stops a pod (SIGTERM, then the grace period): a SIGKILLed
        # agent leaves its probes pinned for its successor (agent/pinning.py), and every
        # agent after it would meet them.
        engine.docker("stop", "-t", "45", name, check=False, timeout_s=120)
        engine.docker("rm", "-f", name, check=False)


@pytest.mark.parametrize("overlay, kind, component, needles", [
    # The processor starts its worker and tries the configured cluster.
    ("base", "Deployment", "processor", ("signals-kafka-kafka-bootstrap.kafka.svc",)),
    # The topics Job asks the configured cluster and says it cannot reach it.
    ("overlays/plain", "Job", "topics", ("signals-kafka-kafka-bootstrap.kafka.svc",)),
])
def test_the_processor_image_starts_with_the_manifests_command_env_and_config(
        images: None, tmp_path: Path, overlay: str, kind: str, component: str, needles: tuple[str, ...]) -> None:
    resources = render(overlay)
    workload = one(resources, kind, component)
    (config_map,) = [r for r in render("base") if r["kind"] == "ConfigMap"]
    (container,) = containers(workload)
    args = _docker_run_args(workload, container, config_map, tmp_path, f"rs-k8s-{component}-{uuid.uuid4().hex[:8]}")
    output = _run_until(args, needles, 120)
    assert not [e for e in CONFIG_ERRORS if e in output], f"`{' '.join(args)}`:\n{output[-4000:]}"
    assert any(n in output for n in needles), f"`{' '.join(args)}` never tried the cluster:\n{output[-4000:]}"


def test_the_agent_image_starts_with_the_daemonsets_command_env_config_and_privileges(
        images: None, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the DaemonSet's capabilities can only be granted by root")
    resources = render("base")
    workload = one(resources, "DaemonSet", "agent")
    (config_map,) = [r for r in resources if r["kind"] == "ConfigMap"]
    (container,) = containers(workload)
    args = _docker_run_args(workload, container, config_map, tmp_path, f"rs-k8s-agent-{uuid.uuid4().hex[:8]}")
    output = _run_until(args, ("agent ready",), 240)
    assert "agent ready" in output, f"`{' '.join(args)}`:\n{output[-4000:]}"
    assert not [e for e in CONFIG_ERRORS if e in output], output[-4000:]
    # The node name the DaemonSet passes (spec.nodeName) names the records' node.
    assert "node node-under-test" in output


def test_the_processor_refuses_nothing_but_the_unreachable_cluster(images: None) -> None:
    # Guards the tests above against a container that stops for another reason: with the
    # config file variable refused (the bug these manifests once had), the same run fails.
    proc = subprocess.run([engine.DOCKER, "run", "--rm", "--network", "none", "-e", "SIGNALS_CONFIGURATION=x",
                           engine.PROCESSOR_IMAGE, "config", "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no setting" in proc.stderr
