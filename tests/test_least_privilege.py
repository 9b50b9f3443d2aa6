"""The agent runs with exactly the capabilities the DaemonSet grants, and each is needed.

The real `signals agent` runs as uid 0 under capsh with every other capability dropped from
its bounding set, which is what a container runtime does with `capabilities: {drop: [ALL],
add: [...]}`: a uid-0 process's permitted and effective sets become its bounding set at
exec. It probes the demo workload, a process with the full root capability set, as target
containers (default capability sets) have more than the agent: reading their
/proc/<pid>/maps then needs CAP_SYS_PTRACE. Delivered means: every call reached the raw
topic with the file it was made in identified (a digest read through /proc/<pid>), and that
file's symbol table reached the symbols topic.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime_signals.consumer.summaries import read_topic
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.bpf_support import bpf_unavailable_reason
from tests.deploy.manifests import agent_capabilities

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

# Linux capability numbers (include/uapi/linux/capability.h), index = bit.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
UPLOADS, PREVIEWS = 3, 2
CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
SYMBOL_TABLE = "io.runtimesignals.SymbolTable"
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
REGISTRY = codec.SchemaRegistry.default()


def _kernel_capabilities() -> tuple[str, ...]:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return CAPABILITIES[:last + 1]


def _capability_set(status_line: str) -> set[str]:
    mask = int(status_line.split()[1], 16)
    return {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1}


def _own_bounding_set() -> set[str]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return _capability_set(line)
    raise AssertionError("no CapBnd line in /proc/self/status")


@pytest.fixture(scope="module")
def granted() -> set[str]:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    for tool in ("capsh", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` not found: scripts/bootstrap.sh installs it (libcap2-bin, util-linux)")
    caps = agent_capabilities()
    missing = caps - _own_bounding_set()
    if missing:
        pytest.skip(f"this test runs without {sorted(missing)} in its own bounding set, so it cannot grant them")
    return caps


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workload(tmp_path_factory.mktemp("workload"))


@dataclass
class Outcome:
    exit_code: int | None  # None: still running when the workload ran (then stopped by SIGTERM)
    effective: set[str]  # the agent process's effective capabilities, as the kernel reports them
    calls: int  # calls on the raw topic
    identified_calls: int  # ...whose probed file was identified through /proc/<pid>
    call_digests: set[str]  # the digests of those files
    symbol_tables: set[str]  # digests on the symbols topic
    log: str


def _agent_argv(bootstrap: str, prefix: str, probe: str, keep: set[str], read_only_tracefs: bool) -> list[str]:
    drop = [f"cap_{name.lower()}" for name in _kernel_capabilities() if name not in keep]
    signals = [sys.executable, "-m", "runtime_signals.cli", "agent", "--bootstrap", bootstrap,
               "--topic-prefix", prefix, "--watermark-interval-ms", "200", "--probe", probe]
    argv = ["capsh", f"--drop={','.join(drop)}", "--", "-c", 'exec "$0" "$@"', *signals]
    if read_only_tracefs:
        # A private mount namespace where tracefs is mounted read-only, as a pod would see
        # a hostPath mounted with readOnly: true.
        remount = " ".join(f'[ -d {m} ] && mount --bind {m} {m} && mount -o remount,bind,ro {m};'
                           for m in TRACEFS_MOUNTS)
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                f'{remount} exec "$0" "$@"', *argv]
    return argv


def _run_agent(bootstrap: str, workload: Path, log_path: Path, keep: set[str],
               read_only_tracefs: bool = False) -> Outcome:
    prefix = f"lp-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names, partitions=1)
    argv = _agent_argv(bootstrap, prefix, f"{workload}:{PROBED_SYMBOL}", keep, read_only_tracefs)
    with _spawned(argv, log_path) as process:
        ready = _wait_until_ready(process, log_path)
        effective = _effective_capabilities(process.pid) if ready else set()
        if ready:
            subprocess.run([str(workload), str(UPLOADS), str(PREVIEWS), "1000"], check=True,
                           stdout=subprocess.DEVNULL)
            process.send_signal(signal.SIGTERM)
        exit_code = process.wait(60)
    events = [codec.decode(v, REGISTRY) for _, v in read_topic(bootstrap, names.raw) if v is not None]
    calls = [e.record for e in events if e.schema_name == CALL_EVENT]
    tables = [codec.decode(v, REGISTRY).record for _, v in read_topic(bootstrap, names.symbols) if v is not None]
    return Outcome(
        exit_code=exit_code,
        effective=effective,
        calls=sum(c["observation_count"] for c in calls),
        identified_calls=sum(c["observation_count"] for c in calls if c["binary_digest"]),
        call_digests={c["binary_digest"] for c in calls if c["binary_digest"]},
        symbol_tables={t["binary_digest"] for t in tables},
        log=log_path.read_text(errors="replace")[-3000:],
    )


@contextlib.contextmanager
def _spawned(argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The agent as a child in its own session; killed if the test fails half-way."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 120.0) -> bool:
    """True once the agent says it is ready; False if it exited first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "agent ready" in log_path.read_text(errors="replace"):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.1)
    raise AssertionError(f"the agent neither got ready nor exited within {timeout_s:g}s:\n"
                         f"{log_path.read_text(errors='replace')[-3000:]}")


def _effective_capabilities(pid: int) -> set[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return _capability_set(line)
    raise AssertionError(f"no CapEff line in /proc/{pid}/status")


def test_the_agent_delivers_with_only_the_daemonset_capabilities(kafka_bootstrap: str, workload: Path,
                                                                 granted: set[str], tmp_path: Path) -> None:
    outcome = _run_agent(kafka_bootstrap, workload, tmp_path / "agent.log", granted)
    assert outcome.effective == granted, outcome.log  # the kernel's view: nothing more was held
    assert outcome.exit_code == 0, outcome.log
    assert outcome.calls == UPLOADS + PREVIEWS, outcome.log
    assert outcome.identified_calls == outcome.calls, outcome.log
    # The workload's symbol table, read through /proc/<pid>/root, reached the symbols topic.
    assert outcome.call_digests and outcome.call_digests <= outcome.symbol_tables, outcome.log


def test_kill_is_needed_to_hold_processes(kafka_bootstrap: str, workload: Path, granted: set[str],
                                         tmp_path: Path) -> None:
    """CAP_KILL: the agent resumes the processes it holds (agent/loadwatch.py), also those of
    other users; without it it keeps holds off rather than leave a process stopped."""
    assert "KILL" in granted, "the DaemonSet no longer grants CAP_KILL: update this test"
    with_kill = _run_agent(kafka_bootstrap, workload, tmp_path / "with.log", granted)
    without = _run_agent(kafka_bootstrap, workload, tmp_path / "without.log", granted - {"KILL"})
    assert "KILL" not in without.effective and without.exit_code == 0
    refused = "agent.hold_processes: off, the agent lacks CAP_KILL"
    assert refused in (tmp_path / "without.log").read_text() and "loader hooks:" not in (tmp_path / "without.log").read_text()
    assert refused not in (tmp_path / "with.log").read_text() and "loader hooks:" in (tmp_path / "with.log").read_text()
    assert with_kill.calls == without.calls == UPLOADS + PREVIEWS


@pytest.mark.parametrize("capability", ["BPF", "PERFMON", "SYS_PTRACE"])
def test_each_granted_capability_is_needed(kafka_bootstrap: str, workload: Path, granted: set[str],
                                           tmp_path: Path, capability: str) -> None:
    assert capability in granted, f"the DaemonSet no longer grants CAP_{capability}: update this test"
    outcome = _run_agent(kafka_bootstrap, workload, tmp_path / "agent.log", granted - {capability})
    assert capability not in outcome.effective
    # Without it the agent either cannot load its program (BPF, PERFMON: no calls at all), or
    # cannot tell which file a call was made in (SYS_PTRACE: calls arrive unidentified).
    assert outcome.identified_calls == 0, outcome.log


def test_tracefs_is_the_one_host_mount_that_must_be_writable(kafka_bootstrap: str, workload: Path,
                                                             granted: set[str], tmp_path: Path) -> None:
    outcome = _run_agent(kafka_bootstrap, workload, tmp_path / "agent.log", granted, read_only_tracefs=True)
    # uprobes are defined by writing tracefs's uprobe_events: read-only, nothing attaches.
    assert outcome.calls == 0, outcome.log
    assert "uprobe" in outcome.log.lower() or "tracefs" in outcome.log.lower(), outcome.log
