"""No call missed after dlopen, and attribution that survives the process (issue 11 points 3
and 5), against the real loader hook (bpf/loadwatch.bpf.c), the real agent and broker.

- A program dlopens a library a target names and calls the probed function 40 times at
  once, then exits: all 40 calls are reported (the library is attached while the loader
  hook holds the process, before dlopen returns), each frame resolved to a file and digest
  although the process was gone before the agent read its calls.
- A program linked against such a library calls it 5 times at start-up and exits at once:
  5 calls, frames resolved, its module map published, its container and runtime known.
- Python (Debian's) loading Debian's zlib, for one crc32, gets the deb package URL.

Library and program names carry a random part: the kernel side holds processes by name,
and this machine runs other people's processes.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from runtime_signals.consumer.summaries import read_topic
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, AgentProcess, decode_all, read_all
from tests.agent.programs import compile_c
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

PLUGIN = r"""
__attribute__((noinline)) int plugin_entry(int x) { asm volatile("" ::: "memory"); return x * 3; }
"""

# argv: LIBRARY: dlopen it and call plugin_entry 40 times at once, then exit.
DLOPEN_BURST = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int (*entry)(int) = (int (*)(int))dlsym(lib, "plugin_entry");
    long total = 0;
    for (int i = 0; i < 40; i++) total += entry(i);
    printf("%ld\n", total);
    return 0;
}
"""

SHORT_LIVED = r"""
#include <stdio.h>
int plugin_entry(int x);
int main(void) {
    long total = 0;
    for (int i = 0; i < 5; i++) total += plugin_entry(i);
    printf("%ld\n", total);
    return 0;
}
"""


@pytest.fixture
def bpf_host() -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _short_lived_program(stem: str, bootstrap: str, tmp_path: Path) -> tuple[str, Path, Path, str, TopicNames]:
    """SHORT_LIVED linked to its own lib<stem><tag>.so, and fresh topics: (tag, library,
    program, topic prefix, topic names); the probe is <stem><tag>:plugin_entry."""
    tag = uuid.uuid4().hex[:8]
    library = compile_c(PLUGIN, tmp_path / "lib" / f"lib{stem}{tag}.so", "-shared", "-fPIC")
    program = compile_c(SHORT_LIVED, tmp_path / f"{stem}-program{tag}", f"-L{library.parent}",
                        f"-Wl,-rpath,{library.parent}", f"-l{stem}{tag}")
    prefix = f"{stem}-{tag}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names, partitions=1)
    return tag, library, program, prefix, names


def _burst_program(stem: str, bootstrap: str, tmp_path: Path) -> tuple[str, Path, Path, str, TopicNames]:
    """lib<stem><tag>.so, DLOPEN_BURST to load it, and fresh topics: (tag, library, program,
    topic prefix, topic names)."""
    tag = uuid.uuid4().hex[:8]
    library = compile_c(PLUGIN, tmp_path / f"lib{stem}{tag}.so", "-shared", "-fPIC")
    burst = compile_c(DLOPEN_BURST, tmp_path / f"{stem}-burst{tag}", "-ldl")
    prefix = f"{stem}-{tag}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names, partitions=1)
    return tag, library, burst, prefix, names


def _forty_calls_after_dlopen(agent: AgentProcess, burst: Path, library: Path, bootstrap: str,
                              names: TopicNames) -> None:
    """Run the burst to its exit, stop the agent, and check every one of its 40 plugin_entry
    calls is reported and attributed. The rescan is a minute away: only a hold can have
    attached the library and read the process's maps in time."""
    run = subprocess.Popen([str(burst), str(library)], stdout=subprocess.PIPE, text=True)
    out, _ = run.communicate(timeout=30)
    assert run.returncode == 0 and out.strip() == str(sum(i * 3 for i in range(40)))
    assert agent.stop() == 0, agent.log()[-4000:]
    log = agent.log()
    assert "attached by a rescan" not in log
    events = [e for e in _events(bootstrap, names.raw, run.pid) if e["symbol"] == "plugin_entry"]
    assert sum(e["observation_count"] for e in events) == 40, log[-3000:]
    _assert_attributed(events, library)


def _events(bootstrap: str, topic: str, pid: int) -> list[dict[str, Any]]:
    return [e for e in decode_all(read_all(bootstrap, topic), CALL_EVENT) if e["pid"] == pid]


def _module_maps(bootstrap: str, topic: str, pid: int) -> list[dict[str, Any]]:
    registry = codec.SchemaRegistry.default()
    decoded = [codec.decode(v, registry) for _, v in read_topic(bootstrap, topic, timeout_s=10) if v]
    return [d.record for d in decoded if d.schema_name.endswith("ModuleMap") and d.record["pid"] == pid]


def _assert_attributed(events: list[dict[str, Any]], library: Path) -> None:
    for event in events:
        frames = event["stack_frames"]
        assert frames[-1]["library"] == str(library), event
        unresolved = [f for f in frames if f["binary_digest"] is None]
        assert not unresolved, f"frames without a file: {unresolved}"
        assert event["binary_digest"] and event["library"] == str(library)
        assert event["container_id"].startswith("host:") and event["runtime_type"] == "NATIVE"


def test_forty_calls_right_after_dlopen_are_all_reported_after_the_process_exited(
        bpf_host: None, kafka_bootstrap: str, tmp_path: Path) -> None:
    tag, library, burst, prefix, names = _burst_program("sigplug", kafka_bootstrap, tmp_path)
    with AgentProcess(kafka_bootstrap, prefix, [f"libsigplug{tag}.so:plugin_entry"], tmp_path / "agent.log",
                      ["--target-rescan-interval-ms", "60000"]) as agent:
        _forty_calls_after_dlopen(agent, burst, library, kafka_bootstrap, names)


def test_a_process_that_calls_and_exits_at_once_keeps_its_attribution(
        bpf_host: None, kafka_bootstrap: str, tmp_path: Path) -> None:
    tag, library, program, prefix, names = _short_lived_program("sigshort", kafka_bootstrap, tmp_path)
    with AgentProcess(kafka_bootstrap, prefix, [f"sigshort{tag}:plugin_entry"], tmp_path / "agent.log",
                      ["--target-rescan-interval-ms", "60000"]) as agent:
        run = subprocess.Popen([str(program)], stdout=subprocess.DEVNULL)
        assert run.wait(30) == 0
        assert agent.stop() == 0, agent.log()[-4000:]
        log = agent.log()
    events = _events(kafka_bootstrap, names.raw, run.pid)
    assert sum(e["observation_count"] for e in events) == 5, log[-3000:]
    _assert_attributed(events, library)
    maps = _module_maps(kafka_bootstrap, names.modules, run.pid)
    assert maps, "no module map for the short-lived process"
    latest = max(maps, key=lambda m: m["version"])
    assert latest["executable"] == str(program)
    paths = {m["path"]: m for m in latest["modules"]}
    assert paths[str(library)]["binary_digest"] and paths[str(program)]["binary_digest"]


def test_debians_python_calling_a_debian_library_and_exiting_gets_its_package(
        bpf_host: None, kafka_bootstrap: str, tmp_path: Path) -> None:
    # libcrypt through Python's crypt module: a Debian library few processes here load, so
    # the test holds hardly anyone else's processes.
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no Debian python3 at /usr/bin/python3")
    tag = uuid.uuid4().hex[:8]
    prefix = f"pycrypt-{tag}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    with AgentProcess(kafka_bootstrap, prefix, ["crypt:crypt_r"], tmp_path / "agent.log",
                      ["--target-rescan-interval-ms", "60000"]) as agent:
        run = subprocess.Popen([str(python), "-W", "ignore", "-c", "import crypt; crypt.crypt('x', 'ab')"])
        assert run.wait(30) == 0
        assert agent.stop() == 0, agent.log()[-4000:]
        log = agent.log()
    events = _events(kafka_bootstrap, names.raw, run.pid)
    assert sum(e["observation_count"] for e in events) >= 1, log[-3000:]
    package = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}", "libcrypt1"],
                             capture_output=True, text=True, check=True).stdout.split()
    for event in events:
        assert event["purl"] and event["purl"].startswith(f"pkg:deb/debian/{package[0]}@"), event["purl"]
        assert event["runtime_type"] == "PYTHON" and event["container_id"].startswith("host:")
        top, caller = event["stack_frames"][-1], event["stack_frames"][-2]
        assert top["binary_digest"] and "libcrypt.so" in top["library"]
        assert caller["binary_digest"] and "_crypt" in caller["library"], caller
    maps = _module_maps(kafka_bootstrap, names.modules, run.pid)
    assert maps and any("libcrypt.so" in m["path"] and m["purl"] for m in maps[-1]["modules"])


def _stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def test_a_process_held_by_an_agent_killed_meanwhile_is_resumed_by_the_next_agent(
        bpf_host: None, kafka_bootstrap: str, tmp_path: Path) -> None:
    """The agent dies (SIGKILL: an OOM kill) while a process is stopped for it: the process
    must not stay stopped. The next agent of the same identity resumes it at its start, from
    the map of held processes the dead one pinned (bpf/loadwatch.bpf.c held_pids)."""
    tag, _library, program, prefix, _names = _short_lived_program("sigheld", kafka_bootstrap, tmp_path)
    args = ["--spool-dir", str(tmp_path / "spool"), "--target-rescan-interval-ms", "60000"]
    # A long heartbeat: the kernel keeps holding for 10 s after the agent's last beat.
    env = {"SIGNALS_AGENT__HOLD_HEARTBEAT_MS": "10000"}
    probe = [f"sigheld{tag}:plugin_entry"]
    first = AgentProcess(kafka_bootstrap, prefix, probe, tmp_path / "agent-1.log", args, env=env).start()
    run = None
    try:
        assert first.process is not None
        time.sleep(1.0)  # its state (identity, pin directory) written at its watermark ticks
        first.process.send_signal(signal.SIGSTOP)  # frozen: it cannot answer the hold
        run = subprocess.Popen([str(program)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _stopped(run.pid):
            assert time.monotonic() < deadline, "the kernel did not hold the process"
            time.sleep(0.05)
        first.process.kill()
        first.process.wait(30)
        time.sleep(0.5)
        assert _stopped(run.pid), "the premise: the dead agent's hold outlives it"
    finally:
        if first.process is not None and first.process.poll() is None:
            first.process.kill()
    try:
        with AgentProcess(kafka_bootstrap, prefix, probe, tmp_path / "agent-2.log", args, env=env) as second:
            assert run.wait(30) == 0, "the process was not resumed"
            assert second.stop() == 0, second.log()[-3000:]
            assert "held by an agent that died before resuming it" in second.log()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_a_plans_library_dlopened_later_is_held_and_its_first_calls_reported(
        bpf_host: None, kafka_bootstrap: str, tmp_path: Path) -> None:
    """A probe plan names a library no process has loaded yet; the loader holds learn its name
    when the plan arrives, so a process that dlopens it later is held while the agent reads its
    maps: the 40 calls right after the dlopen are all reported and attributed to the library,
    although the process exits at once and the rescan is a minute away. (Without the plan's
    names the uprobe on the file still counts the calls, but the process is gone before its
    maps are read: every frame loses its file.)"""
    _tag, library, burst, prefix, names = _burst_program("planplug", kafka_bootstrap, tmp_path)
    plan = {"format_version": 1, "plan_id": "hold", "created_at_us": 1_700_000_000_000_000,
            "advisories": ["TEST-PLUGIN-0001"], "not_watched": [],
            "targets": [{"vulnerability": "TEST-PLUGIN-0001", "purl": None, "language": "c",
                         "binary": str(library), "symbols": ["plugin_entry"], "containers": []}]}
    with AgentProcess(kafka_bootstrap, prefix, [f"{burst}:main"], tmp_path / "agent.log",
                      ["--target-rescan-interval-ms", "60000"]) as agent:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(names.plans, codec.encode(plan, "ProbePlan", codec.SchemaRegistry.default()), b"hold")
        assert producer.flush(30) == 0
        agent.wait_for("plan hold: ACTIVE", 60)  # taken on, and its status published
        _forty_calls_after_dlopen(agent, burst, library, kafka_bootstrap, names)
