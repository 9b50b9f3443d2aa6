"""The agent against real processes, cgroups and a real broker, configured from a file:

- a C++ program in a container root (chroot) inside a Docker-named cgroup, targeted by its
  demangled name, by its path inside the container, only in that container: its calls
  arrive with the container's id and cgroup id, the same file run on the host is filtered;
- Debian's libz, targeted by library name: the event carries libz's deb package URL;
- a library loaded with dlopen after the agent started: attached on a rescan;
- a binary and a symbol that do not exist: reported by setting name, the rest still works;
- module maps of the calling processes on the modules topic.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from runtime_signals.agent.pkgdb import read_os_release
from runtime_signals.agent.symtab import read_build_id
from runtime_signals.consumer.summaries import read_topic
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.agent.cgroups import CgroupSandbox, cgroup_unavailable_reason
from tests.agent.programs import DLOPEN_HOST, PLUGIN, ZLIB_CALLER, compile_c, container_rootfs, mini_container
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

CONTAINER_ID = "c0ffee" + uuid.uuid4().hex + uuid.uuid4().hex[:26]
CONTAINER_CALLS = 6
HOST_CALLS = 4
ZLIB_CALLS = 5
PARSE = "_ZN7imgproc6Parser5parseEPKc"


def _wait_for(predicate: Any, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def _records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    registry = codec.SchemaRegistry.default()
    decoded = [codec.decode(value, registry) for _, value in read_topic(bootstrap, topic, timeout_s=10) if value]
    return [d.record for d in decoded if d.schema_name.endswith(("RuntimeCallEvent", "ModuleMap"))]


def _stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def _calls(events: list[dict[str, Any]], **match: Any) -> int:
    return sum(e["observation_count"] for e in events if all(e[k] == v for k, v in match.items()))


def test_targets_from_a_config_file_in_containers_libraries_and_late_loads(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    for reason in (bpf_unavailable_reason(), cgroup_unavailable_reason()):
        if reason:
            pytest.skip(reason)
    prefix = f"targets-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    root, program = container_rootfs(tmp_path)
    zcaller = compile_c(ZLIB_CALLER, tmp_path / "zcaller", "-lz")
    plugin = compile_c(PLUGIN, tmp_path / "plugins" / "libsignalsplugin.so", "-shared", "-fPIC")
    dlhost = compile_c(DLOPEN_HOST, tmp_path / "dlhost", "-ldl")
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
topic_prefix = "{prefix}"

[agent]
watermark_interval_ms = 200
target_rescan_interval_ms = 300

[[agent.targets]]
binary = "/app/workload"
symbols = ["imgproc::Parser::parse"]
containers = ["{CONTAINER_ID}"]

[[agent.targets]]
binary = "z"
symbols = ["crc32"]
executables = ["zcaller"]

[[agent.targets]]
binary = "libsignalsplugin.so"
symbols = ["plugin_entry"]

[[agent.targets]]
binary = "/opt/not-installed/server"
symbols = ["main"]

[[agent.targets]]
binary = "{zcaller}"
symbols = ["no_such_function"]
""")
    go_in_container = root / "go"
    go_on_host = tmp_path / "go-host"
    agent_log = tmp_path / "agent.log"
    with CgroupSandbox() as cgroups:
        scope = cgroups.make(f"system.slice/docker-{CONTAINER_ID}.scope")
        scope_cgroup_id = os.stat(scope).st_ino  # what bpf_get_current_cgroup_id returns
        # The container process runs before the agent starts: found through /proc/<pid>/root.
        in_container = cgroups.spawn_in(
            scope, [str(mini_container(tmp_path)), str(root), "/app/workload", str(CONTAINER_CALLS), "/go"],
            stdout=subprocess.DEVNULL)
        on_host = subprocess.Popen([str(program), str(HOST_CALLS), str(go_on_host)], stdout=subprocess.DEVNULL)
        _wait_for(lambda: Path(f"/proc/{in_container.pid}/exe").exists() and
                  os.readlink(f"/proc/{in_container.pid}/exe") == "/app/workload", 10, "the container")
        with open(agent_log, "wb") as log:
            agent = subprocess.Popen(signals_command("agent", "--config", str(config)), stdout=log,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     start_new_session=True)
        try:
            _wait_for(lambda: b"agent ready" in agent_log.read_bytes() or agent.poll() is not None, 120,
                      "the agent to start", agent_log)
            assert agent.poll() is None, agent_log.read_text()
            go_in_container.touch()
            go_on_host.touch()
            assert in_container.wait(30) == 0 and on_host.wait(30) == 0
            subprocess.run([str(zcaller), str(ZLIB_CALLS)], check=True, stdout=subprocess.DEVNULL)
            stop_plugin = tmp_path / "stop-plugin"
            late = subprocess.Popen([str(dlhost), str(plugin), str(stop_plugin)], stdout=subprocess.DEVNULL)
            _wait_for(lambda: b"attached libsignalsplugin.so:plugin_entry" in agent_log.read_bytes(), 30,
                      "the rescan to attach the dlopen'd library", agent_log)
            # Held at its dlopen (agent.hold_processes) until the agent has its unwind rules.
            _wait_for(lambda: not _stopped(late.pid), 30, "the agent to resume the held process", agent_log)
            time.sleep(1.0)  # calls every 20 ms, now probed
            stop_plugin.touch()
            assert late.wait(30) == 0
            time.sleep(1.0)
        finally:
            os.killpg(agent.pid, signal.SIGTERM)
            code = agent.wait(60)
    log_text = agent_log.read_text(errors="replace")
    assert code == 0, log_text[-4000:]

    records = _records(kafka_bootstrap, names.raw)
    events = [r for r in records if "event_id" in r]
    # The container's calls: by demangled name, through the container's root, its identity.
    inside = [e for e in events if e["pid"] == in_container.pid]
    assert _calls(inside, symbol=PARSE) == CONTAINER_CALLS, log_text[-3000:]
    assert {e["container_id"] for e in inside} == {CONTAINER_ID}
    assert {e["cgroup_id"] for e in inside} == {scope_cgroup_id}
    assert {e["probe_id"] for e in inside} == {f"/app/workload:{PARSE}"}
    assert {e["library"] for e in inside} == {"/app/workload"}
    # The same file run on the host fired the same uprobe; the container filter dropped it.
    assert _calls(events, pid=on_host.pid) == 0
    # libz by library name, with its Debian package.
    version, arch = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${Architecture}", "zlib1g"],
                                   capture_output=True, text=True, check=True).stdout.split()
    release = read_os_release(Path("/"))
    assert release is not None
    zlib_purl = PackageURL(type="deb", namespace=release.id, name="zlib1g", version=version,
                           qualifiers={"arch": arch, "distro": f"{release.id}-{release.version_id}"}).to_string()
    zlib_events = [e for e in events if e["probe_id"] == "z:crc32"]
    assert sum(e["observation_count"] for e in zlib_events) == ZLIB_CALLS
    assert {e["purl"] for e in zlib_events} == {zlib_purl}
    # The library loaded after start was attached on a rescan and its calls observed.
    assert _calls(events, pid=late.pid, probe_id="libsignalsplugin.so:plugin_entry") > 0
    # What is missing is named by its setting, and did not stop the rest.
    assert "agent.targets[3].binary: /opt/not-installed/server not found" in log_text
    assert f"agent.targets[4].symbols[0]: symbol 'no_such_function' not found in {zcaller}" in log_text

    maps = defaultdict(list)
    for record in _records(kafka_bootstrap, names.modules):
        maps[record["pid"]].append(record)
    container_map = max(maps[in_container.pid], key=lambda r: r["version"])
    assert container_map["container_id"] == CONTAINER_ID and container_map["executable"] == "/app/workload"
    workload = [m for m in container_map["modules"] if m["path"] == "/app/workload"]
    assert workload and workload[0]["binary_digest"] == "sha256:" + hashlib.sha256(program.read_bytes()).hexdigest()
    assert workload[0]["build_id"] == read_build_id(program)
    zlib_map = max(maps[next(e["pid"] for e in zlib_events)], key=lambda r: r["version"])
    assert {m["purl"] for m in zlib_map["modules"] if "libz.so" in m["path"]} == {zlib_purl}
    assert sys.executable  # the agent ran under this interpreter (signals_command)
