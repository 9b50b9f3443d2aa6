"""The Kubernetes manifests, rendered by kustomize: valid against the Kubernetes API schemas
(kubernetes-validate ships them, so this runs offline), and holding the properties
operators judge them by: least privilege, limits, probes, no secrets, and agreement with
the code (CLI flags, settings, topics, ACLs)."""

from __future__ import annotations

import copy
import os
import shlex
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from runtime_signals.config import load_config
from runtime_signals.kafka.security import acl_bindings
from runtime_signals.schemas.topics import TopicNames, topic_settings
from tests.deploy import manifests
from tests.deploy.manifests import KUSTOMIZATIONS, POD_KINDS, containers, one, pod_spec, render

# The oldest release the manifests are written for (appArmorProfile is 1.30+), and the newest
# whose schemas the validator ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
STRIMZI_KINDS = {"KafkaTopic", "KafkaUser"}
CERT_MANAGER_KINDS = {"Issuer", "Certificate"}  # the signed-records overlay's agent CA
AGENT_CAPABILITIES = {"BPF", "PERFMON", "SYS_PTRACE", "KILL"}
# Host paths the agent may mount, and the only one it may write (uprobe_events).
AGENT_HOST_PATHS = {"/sys/kernel/tracing", "/lib/modules", "/usr/src", "/var/log/pods", "/sys/fs/bpf"}
# tracefs: uprobes are defined by writing uprobe_events; bpffs: probes and maps are pinned
# there to outlive a killed agent (agent/pinning.py).
WRITABLE_HOST_PATHS = {"/sys/kernel/tracing", "/sys/fs/bpf"}
METRICS_PORT = 9464
TOPIC_PARTITIONS = 12

pytestmark = pytest.mark.skipif(manifests.kustomize_command() is None,
                                reason="neither kubectl nor kustomize on PATH (scripts/bootstrap.sh installs kustomize)")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in KUSTOMIZATIONS}


def _workloads(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] in POD_KINDS]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_is_valid_against_the_kubernetes_api_schemas(rendered: dict[str, list[dict[str, Any]]],
                                                                    version: str) -> None:
    checked = 0
    for resources in rendered.values():
        for resource in resources:
            if resource["kind"] in STRIMZI_KINDS | CERT_MANAGER_KINDS:
                continue  # CRDs: no schema ships with the validator; checked below
            # strict: an unknown (misspelt) field is an error, not silently dropped.
            kubernetes_validate.validate(resource, version, strict=True)
            checked += 1
    assert checked >= 12


def test_the_validator_rejects_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    # Guards the test above against validating nothing.
    broken = copy.deepcopy(one(rendered["base"], "DaemonSet", "agent"))
    pod_spec(broken)["containers"][0]["securityContext"]["capabilitys"] = {"add": ["SYS_ADMIN"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_no_container_is_privileged_and_every_one_has_limits(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for resources in rendered.values():
        for workload in _workloads(resources):
            spec = pod_spec(workload)
            assert not spec.get("hostNetwork") and not spec.get("hostIPC"), workload["metadata"]["name"]
            assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
            for container in containers(workload):
                where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
                context = container["securityContext"]
                assert context.get("privileged") is False, where
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("readOnlyRootFilesystem") is True, where
                assert context["capabilities"]["drop"] == ["ALL"], where
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"


def test_only_the_agent_has_host_access_and_exactly_the_listed_capabilities(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for resources in rendered.values():
        for workload in _workloads(resources):
            component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
            spec = pod_spec(workload)
            added = {cap for c in containers(workload)
                     for cap in c["securityContext"]["capabilities"].get("add", [])}
            host_paths = [v for v in spec.get("volumes", []) if "hostPath" in v]
            if component == "agent":
                assert spec["hostPID"] is True
                assert added == AGENT_CAPABILITIES
                assert {v["hostPath"]["path"] for v in host_paths} <= AGENT_HOST_PATHS
            else:
                assert not spec.get("hostPID") and not added and not host_paths, component
                assert spec["securityContext"]["runAsNonRoot"] is True, component
                assert spec["securityContext"]["runAsUser"] != 0, component


def test_host_mounts_are_read_only_except_tracefs_and_bpffs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    agent = one(rendered["base"], "DaemonSet", "agent")
    host_volumes = {v["name"]: v["hostPath"]["path"] for v in pod_spec(agent)["volumes"] if "hostPath" in v}
    mounts = [m for c in containers(agent) for m in c.get("volumeMounts", []) if m["name"] in host_volumes]
    assert {host_volumes[m["name"]] for m in mounts} == AGENT_HOST_PATHS
    for mount in mounts:
        path = host_volumes[mount["name"]]
        assert bool(mount.get("readOnly")) == (path not in WRITABLE_HOST_PATHS), path


@pytest.mark.parametrize("kind, component", [("DaemonSet", "agent"), ("Deployment", "processor")])
def test_probes_use_the_health_endpoints(rendered: dict[str, list[dict[str, Any]]], kind: str,
                                         component: str) -> None:
    (container,) = containers(one(rendered["base"], kind, component))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert f"--metrics-port={METRICS_PORT}" in container["args"]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == METRICS_PORT, probe


def test_passwords_come_from_secrets_and_none_is_committed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for resources in rendered.values():
        assert not [r for r in resources if r["kind"] == "Secret"], "a Secret is committed in the manifests"
        for workload in _workloads(resources):
            for container in containers(workload):
                env = {e["name"]: e for e in container.get("env", [])}
                password = env["SIGNALS_KAFKA__SASL_PASSWORD"]
                assert "value" not in password and password["valueFrom"]["secretKeyRef"]["key"] == "password"
    policies = {r["metadata"]["name"]: r for r in rendered["base"] if r["kind"] == "NetworkPolicy"}
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def _effective_config(resources: list[dict[str, Any]], container: dict[str, Any], tmp_path: Path) -> Any:
    """load_config() as the container would run it: the ConfigMap's file, the env of the pod
    spec (secret values stand in), and the CA path pointing at a real file."""
    (config_map,) = [r for r in resources if r["kind"] == "ConfigMap"]
    config_file = tmp_path / "signals.toml"
    config_file.write_text(config_map["data"]["signals.toml"])
    ca = tmp_path / "ca.crt"
    ca.write_text("stand-in for the mounted CA\n")
    env = {e["name"]: e.get("value", "secret-from-kubernetes") for e in container.get("env", [])
           if "value" in e or "secretKeyRef" in e.get("valueFrom", {})}
    # SIGNALS_CONFIG stays in the environment (it shares the settings' prefix): only the path
    # it names is translated to the ConfigMap's file written here.
    assert env["SIGNALS_CONFIG"] == "/etc/runtime-signals/config/signals.toml"
    env["SIGNALS_CONFIG"] = str(config_file)
    env["SIGNALS_KAFKA__SSL_CA_LOCATION"] = str(ca)
    return load_config(None, env=env)


@pytest.mark.parametrize("kind, component", [("DaemonSet", "agent"), ("Deployment", "processor")])
def test_the_config_map_and_env_make_a_valid_configuration(rendered: dict[str, list[dict[str, Any]]], kind: str,
                                                           component: str, tmp_path: Path) -> None:
    resources = rendered["base"]
    (container,) = containers(one(resources, kind, component))
    config = _effective_config(resources, container, tmp_path)
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.sasl_username == f"runtime-signals-{component}"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(tomllib.loads(
        next(r for r in resources if r["kind"] == "ConfigMap")["data"]["signals.toml"])["kafka"]["ssl_ca_location"]
    ).parent) in mounts
    if component == "agent":
        assert config.agent.targets and config.agent.host_root == "/proc/1/root"


def test_container_arguments_are_accepted_by_the_signals_command(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from runtime_signals.cli import _parser

    for resources in rendered.values():
        for workload in _workloads(resources):
            for container in containers(workload):
                try:
                    _parser().parse_args(container["args"])
                except SystemExit as exc:
                    raise AssertionError(f"`signals {shlex.join(container['args'])}` is refused") from exc


def test_strimzi_topics_are_those_of_the_code(rendered: dict[str, list[dict[str, Any]]]) -> None:
    topics = {r["metadata"]["name"]: r for r in rendered["overlays/strimzi"] if r["kind"] == "KafkaTopic"}
    expected = {t.name: t for t in topic_settings(TopicNames(), TOPIC_PARTITIONS)}
    stale = "deploy/k8s/overlays/strimzi/kafkatopics.yaml disagrees with schemas/topics.py: update it"
    assert set(topics) == set(expected), stale
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"]
        assert topic["spec"]["partitions"] == expected[name].partitions, f"{name}: {stale}"
        assert expected[name].config.items() <= topic["spec"]["config"].items(), f"{name}: {stale}"
        assert topic["spec"]["replicas"] >= 3 and topic["spec"]["config"]["min.insync.replicas"] == "2"


def test_strimzi_users_translate_to_acls_and_the_agent_reads_nothing(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    users = {r["metadata"]["name"]: r for r in rendered["overlays/strimzi"] if r["kind"] == "KafkaUser"}
    assert set(users) == {"runtime-signals-agent", "runtime-signals-processor", "runtime-signals-plan-writer"}
    names = TopicNames()
    agent = acl_bindings(users["runtime-signals-agent"])
    assert {b.name for b in agent if b.restype.name == "TOPIC"} == {
        names.raw, names.modules, names.symbols, names.statistics, names.plans, names.plan_status}
    # Groups: only Describe (finding a coordinator), on the plan follower's own prefix.
    assert {(b.name, b.operation.name) for b in agent if b.restype.name == "GROUP"} == {
        ("runtime-signals-agent-plans-", "DESCRIBE")}
    # The only thing an agent reads is the plans topic, and it cannot write plans.
    assert {b.name for b in agent if b.operation.name == "READ"} == {names.plans}
    assert {b.name for b in agent if b.operation.name == "WRITE"} == {
        names.raw, names.modules, names.symbols, names.statistics, names.plan_status}
    # The plan writer writes plans, reads the agents' answers, and nothing of the raw data.
    writer = acl_bindings(users["runtime-signals-plan-writer"])
    assert {(b.name, b.operation.name) for b in writer if b.operation.name != "DESCRIBE"} == {
        (names.plans, "WRITE"), (names.plan_status, "READ")}
    processor = acl_bindings(users["runtime-signals-processor"])
    reads = {b.name for b in processor if b.operation.name == "READ" and b.restype.name == "TOPIC"}
    writes = {b.name for b in processor if b.operation.name == "WRITE"}
    assert {names.raw, names.symbols} <= reads
    assert names.raw not in writes and {names.summaries, names.paths} <= writes


def test_plain_overlay_creates_topics_with_the_admin_client_path(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = one(rendered["overlays/plain"], "Job", "topics")
    (container,) = containers(job)
    assert container["args"][:2] == ["kafka", "topics"]
    assert f"--partitions={TOPIC_PARTITIONS}" in container["args"]
    assert os.path.basename(container["image"]).startswith("processor")


def test_the_signed_records_overlay_gives_each_agent_a_certificate_the_processor_trusts(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    resources = rendered["overlays/signed-records"]
    agent, processor = one(resources, "DaemonSet", "agent"), one(resources, "Deployment", "processor")
    (agent_container,) = [c for c in containers(agent) if c["name"] == "agent"]
    env = {e["name"]: e.get("value") for e in agent_container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in agent_container["volumeMounts"]}
    (identity,) = [v for v in pod_spec(agent)["volumes"] if v["name"] == "identity"]
    attributes = identity["csi"]["volumeAttributes"]
    assert identity["csi"]["driver"] == "csi.cert-manager.io"
    assert attributes["csi.cert-manager.io/common-name"] == "${POD_NAME}"  # one principal per agent pod
    assert env["SIGNALS_AGENT__SIGNING_CERTIFICATE"] == mounts["identity"] + "/tls.crt"
    assert env["SIGNALS_AGENT__SIGNING_KEY"] == mounts["identity"] + "/tls.key"
    issuers = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Issuer"}
    ca_secret = issuers[attributes["csi.cert-manager.io/issuer-name"]]["spec"]["ca"]["secretName"]
    (ca_certificate,) = [r for r in resources if r["kind"] == "Certificate"]
    assert ca_certificate["spec"]["isCA"] and ca_certificate["spec"]["secretName"] == ca_secret

    (worker,) = [c for c in containers(processor) if c["name"] == "processor"]
    trust = {e["name"]: e.get("value") for e in worker["env"]}["SIGNALS_PROCESSOR__AGENT_CA_FILE"]
    (volume,) = [v for v in pod_spec(processor)["volumes"] if v.get("secret", {}).get("secretName") == ca_secret]
    (mount,) = [m for m in worker["volumeMounts"] if m["name"] == volume["name"]]
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # the CA's certificate, not its key
    assert trust == mount["mountPath"] + "/ca.crt"
    signing = {k: v for k, v in env.items() if k.startswith("SIGNALS_AGENT__SIGNING_")}
    config = load_config(env={**signing, "SIGNALS_PROCESSOR__AGENT_CA_FILE": trust})  # settings that exist
    assert config.agent.signing_key and config.processor.agent_ca_file == trust
