"""The Helm chart (deploy/helm/runtime-signals): rendered by a real `helm template`, valid
against the Kubernetes API schemas, and with default values the same resources as the
kustomize base, so the two ways to install cannot drift apart."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import manifests

CHART = manifests.REPO / "deploy" / "helm" / "runtime-signals"
BASE = manifests.K8S / "base"
NAMESPACE = "runtime-signals"
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
HELM_ONLY_LABELS = {"app.kubernetes.io/managed-by", "helm.sh/chart"}


def helm() -> str | None:
    """`helm` on PATH, else the one scripts/bootstrap.sh builds with `go install` into the cache."""
    cache = Path(os.environ.get("RUNTIME_SIGNALS_CACHE") or Path.home() / ".cache" / "runtime-signals")
    return shutil.which("helm") or shutil.which("helm", path=str(cache / "bin"))


pytestmark = pytest.mark.skipif(helm() is None, reason="no helm binary (scripts/bootstrap.sh builds one with Go)")


def template(*flags: str) -> list[dict[str, Any]]:
    # A helm built from source does not know a cluster's version: name the oldest supported.
    done = subprocess.run([str(helm()), "template", "rs", str(CHART), "--namespace", NAMESPACE,
                           "--kube-version", "1.30.0", *flags], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def kustomize_base() -> list[dict[str, Any]]:
    """The base as kustomize renders it: the real kustomize when one is installed, else its
    four transformations used by deploy/k8s/base/kustomization.yaml applied here (namespace,
    labels on metadata, image tags, the ConfigMap generated from signals.toml)."""
    if manifests.kustomize_command() is not None:
        return manifests.render("base")
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    resources: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        resources += [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    for generator in kustomization["configMapGenerator"]:
        resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                          "data": {Path(f).name: (BASE / f).read_text() for f in generator["files"]}})
    tags = {image["name"]: image["newTag"] for image in kustomization["images"]}
    for resource in resources:
        metadata = resource["metadata"]
        if resource["kind"] != "Namespace":
            metadata["namespace"] = kustomization["namespace"]
        for pairs in kustomization["labels"]:
            metadata.setdefault("labels", {}).update(pairs["pairs"])
        if resource["kind"] in manifests.POD_KINDS:
            for container in manifests.containers(resource):
                container["image"] = f"{container['image']}:{tags[container['image']]}"
    return resources


def normalised(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Resources by (kind, name), without what only one tool adds: Helm's own labels and the
    config checksum annotation, kustomize's ConfigMap name suffix."""
    out = {}
    for resource in copy.deepcopy(resources):
        labels = resource["metadata"].get("labels", {})
        for label in HELM_ONLY_LABELS:
            labels.pop(label, None)
        if resource["kind"] == "ConfigMap":
            resource["metadata"]["name"] = "runtime-signals-config"
        if resource["kind"] in manifests.POD_KINDS:
            annotations = resource["spec"]["template"]["metadata"].get("annotations", {})
            annotations.pop("checksum/config", None)
            for volume in manifests.pod_spec(resource).get("volumes", []):
                if "configMap" in volume and volume["configMap"]["name"].startswith("runtime-signals-config"):
                    volume["configMap"]["name"] = "runtime-signals-config"
        out[(resource["kind"], resource["metadata"]["name"])] = resource
    return out


def test_lint_passes() -> None:
    done = subprocess.run([str(helm()), "lint", str(CHART), "--kube-version", "1.30.0"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_resource_is_valid_against_the_kubernetes_api_schemas(version: str) -> None:
    resources = template()
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)
    assert len(resources) == 11


def test_default_values_render_exactly_the_kustomize_base() -> None:
    chart = normalised(template())
    base = normalised(kustomize_base())
    assert sorted(chart) == sorted(base)
    for key in base:
        assert chart[key] == base[key], f"{key} differs between the Helm chart and deploy/k8s/base"


def test_values_reach_the_resources() -> None:
    resources = template("--set", "processor.replicas=5", "--set", "networkPolicy.kafkaNamespace=streaming",
                         "--set", "image.agent.tag=9.9.9", "--set", "namespace.create=false",
                         "--set-string", "config=[kafka]\nbootstrap_servers = \"k:9092\"\n")
    by_key = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    assert ("Namespace", NAMESPACE) not in by_key
    assert by_key[("Deployment", "runtime-signals-processor")]["spec"]["replicas"] == 5
    (agent,) = manifests.pod_spec(by_key[("DaemonSet", "runtime-signals-agent")])["containers"]
    assert agent["image"] == "runtime-signals/agent:9.9.9"
    egress = by_key[("NetworkPolicy", "allow-kafka")]["spec"]["egress"][0]["to"][0]
    assert egress["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "streaming"
    assert by_key[("ConfigMap", "runtime-signals-config")]["data"]["signals.toml"].startswith("[kafka]")
    # A changed configuration rolls the pods: the pod template's checksum changes with it.
    assert _config_checksum(resources) != _config_checksum(template())


def _config_checksum(resources: list[dict[str, Any]]) -> str:
    (agent,) = [r for r in resources if r["kind"] == "DaemonSet"]
    return str(agent["spec"]["template"]["metadata"]["annotations"]["checksum/config"])


def test_record_signing_renders_exactly_the_signed_records_overlay() -> None:
    chart = normalised(template("--set", "recordSigning.enabled=true"))
    overlay = normalised(manifests.render("overlays/signed-records")) if manifests.kustomize_command() else None
    if overlay is None:
        pytest.skip("no kustomize to render deploy/k8s/overlays/signed-records")
    for key in (("DaemonSet", "runtime-signals-agent"), ("Deployment", "runtime-signals-processor")):
        assert chart[key] == overlay[key], f"{key} differs between recordSigning and the signed-records overlay"
