"""Which processes a target selects, and one uprobe serving several targets."""

from __future__ import annotations

from pathlib import Path

from runtime_signals.agent.processes import ProcessInfo
from runtime_signals.agent.selectors import ProcessSelector, TargetFilters
from runtime_signals.config.schema import TargetSettings

CID = "4f1c3a9be2d0" + "b" * 52


def _process(**overrides: object) -> ProcessInfo:
    values: dict[str, object] = {
        "pid": 4242, "container_id": CID, "runtime_type": "NATIVE", "root": Path("/proc/4242/root"),
        "executable": "/usr/local/bin/image-server", "comm": "image-server",
        "cgroup_paths": ("/kubepods.slice/kubepods-pod0c7f.slice/cri-containerd-" + CID + ".scope",),
        "pod_uid": "0c7f", "pod_namespace": "payments", "pod_name": "api-7d9f"}
    values.update(overrides)
    return ProcessInfo(**values)  # type: ignore[arg-type]


def test_each_selector_kind() -> None:
    process = _process()
    cases = {
        "containers": ([CID[:12]], ["0123456789ab"]),
        "kubernetes_namespaces": (["pay*"], ["kube-system"]),
        "kubernetes_pods": (["api-*"], ["web-*"]),
        "pids": ([4242], [1]),
        "executables": (["image-*"], ["nginx"]),
    }
    for kind, (hit, miss) in cases.items():
        target = TargetSettings("c", ["malloc"], **{kind: hit})
        selector = ProcessSelector.of(target)
        assert selector is not None and selector.matches(process), kind
        assert not ProcessSelector.of(TargetSettings("c", ["malloc"], **{kind: miss})).matches(process), kind
    assert ProcessSelector.of(TargetSettings("c", ["malloc"], containers=["/kubepods.slice"])).matches(process)
    assert not ProcessSelector.of(TargetSettings("c", ["malloc"], containers=["/kube"])).matches(process)
    host = _process(container_id="host:abc", pod_namespace=None, pod_name=None)
    assert ProcessSelector.of(TargetSettings("c", ["malloc"], containers=["host"])).matches(host)
    assert not ProcessSelector.of(TargetSettings("c", ["malloc"], kubernetes_namespaces=["*"])).matches(host)
    # Kinds combine with AND.
    both = TargetSettings("c", ["malloc"], kubernetes_namespaces=["payments"], executables=["nginx"])
    assert not ProcessSelector.of(both).matches(process)
    assert ProcessSelector.of(TargetSettings("c", ["malloc"])) is None


def test_a_probe_shared_by_targets_reports_what_any_of_them_selects() -> None:
    filters = TargetFilters()
    filters.add("c:malloc", ProcessSelector(pids=(1,)))
    assert not filters.accepts("c:malloc", _process())
    assert filters.filtered_calls["c:malloc"] == 1
    filters.add("c:malloc", ProcessSelector(executables=("image-server",)))
    assert filters.accepts("c:malloc", _process())
    filters.add("c:malloc", None)  # a target without selectors: every process
    assert filters.accepts("c:malloc", _process(executable="/bin/other", comm="other"))
    assert filters.accepts("z:crc32", _process())  # not a filtered probe
