"""Fleet probe plans, live: a real Go program built from golang.org/x/text v0.3.7 (GO-2022-1059)
and Debian's libz, a running agent that knew neither advisory, a plan built from the shipped
advisories over the inventory of the modules topic and published; the agent attaches it without
a restart, a call is reported, the status topic says what is watched and what is not here, and
removing the plan (a tombstone) detaches it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO, Any

import pytest

from runtime_signals.consumer.errors import ConsumerError, ReadError, TopicNotFoundError
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import AgentProcess, decode_all, read_all
from tests.agent.programs import compile_c
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

ADVISORIES = Path(__file__).resolve().parents[1] / "data" / "advisories"
GO_SOURCE = Path(__file__).resolve().parent / "targets" / "acceptlang"
RUST_SOURCE = Path(__file__).resolve().parent / "targets" / "smallvec_lines"
RUSTSEC = Path(__file__).resolve().parents[1] / "data" / "rustsec"
PARSE_ACCEPT = "golang.org/x/text/language.ParseAcceptLanguage"
# Reads lines; for each, a function of its own (the static probe that gets its module map
# published, hence the inventory) and libz's crc32 (what the plan adds).
ZLIB_LINES = r"""
#include <stdio.h>
#include <zlib.h>
__attribute__((noinline)) void on_line(void) { __asm__ volatile(""); }
int main(void) {
    char line[256];
    unsigned long crc = 0;
    while (fgets(line, sizeof line, stdin)) {
        on_line();
        crc = crc32(crc, (const unsigned char *)line, 4);
        printf("%lu\n", crc);
        fflush(stdout);
    }
    return 0;
}
"""


def _build_go(out: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (scripts/bootstrap.sh installs golang)")
    work = out.parent / "acceptlang-src"
    shutil.copytree(GO_SOURCE, work)
    done = subprocess.run([go, "build", "-o", str(out), "."], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "GOFLAGS": "-mod=mod"}, timeout=300)
    assert done.returncode == 0, f"go build failed (the Go module proxy must answer):\n{done.stderr}"
    return out


def _build_rust(out_dir: Path) -> Path:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        pytest.skip("no Rust toolchain (cargo) on this machine")
    work = out_dir / "smallvec-lines-src"
    shutil.copytree(RUST_SOURCE, work)
    # A debug build: insert_many stays a function of its own (a release build inlines it into
    # main, where only DWARF's inlined-copy records find it).
    done = subprocess.run([cargo, "build", "--locked", "--quiet"], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "CARGO_TARGET_DIR": str(out_dir / "cargo-target")}, timeout=600)
    assert done.returncode == 0, f"cargo build failed (crates.io must answer):\n{done.stderr}"
    return out_dir / "cargo-target" / "debug" / "smallvec-lines"


def _signals(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(signals_command(*args), capture_output=True, text=True, timeout=120)


def _latest(bootstrap: str, topic: str, schema: str) -> dict[bytes, dict[str, Any]]:
    reader = TopicReader(bootstrap, timeout_s=10)
    registry = codec.SchemaRegistry.default()
    found: dict[bytes, dict[str, Any]] = {}
    try:
        ranges = reader.whole_topic(topic)
    except ConsumerError:  # a just-created topic, or a busy shared broker: asked again by _wait
        return found
    for record in reader.read(topic, ranges):
        if record.value is not None:
            found[record.key or b""] = codec.decode(record.value, registry, schema).record
    return found


def _wait(predicate: Any, timeout_s: float, what: str, agent: AgentProcess) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{agent.log()[-5000:]}")


def _line(stdin: IO[bytes] | None) -> None:
    assert stdin is not None
    stdin.write(b"en-US,en;q=0.9,fr;q=0.8\n")
    stdin.flush()


def _calls(bootstrap: str, topic: str, pid: int, symbol: str) -> int:
    events = decode_all(read_all(bootstrap, topic), "io.runtimesignals.RuntimeCallEvent")
    return sum(e["observation_count"] for e in events if e["pid"] == pid and e["symbol"] == symbol)


def test_a_published_plan_is_attached_live_reported_and_detached_when_removed(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"plans-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    goapp = _build_go(tmp_path / "acceptlang")
    zapp = compile_c(ZLIB_LINES, tmp_path / "zlines", "-lz")
    connection = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    agent = AgentProcess(kafka_bootstrap, prefix, [f"{goapp}:main.main", f"{zapp}:on_line"],
                         tmp_path / "agent.log", ["--target-rescan-interval-ms", "500",
                                                  "--statistics-interval-ms", "500"])
    _topics_settle(kafka_bootstrap, names)
    with agent:
        go = subprocess.Popen([str(goapp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        zl = subprocess.Popen([str(zapp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            _line(zl.stdin)
            # 1. The inventory: both programs' packages, from their module maps.
            def inventory() -> str | None:
                done = _signals("inventory", *connection, "--json")
                return done.stdout if "zlib1g" in done.stdout and "pkg:golang/" in done.stdout else None
            listing = _wait(inventory, 60, "the inventory to list zlib1g and the Go program", agent)
            assert str(goapp) in listing
            # 2. The plan, printed and published while the agent runs.
            done = _signals("plan", str(ADVISORIES), "--plan-id", "live", "--publish", *connection)
            assert done.returncode == 0, done.stderr
            assert f"watch {goapp} (go, GO-2022-1059" in done.stdout
            assert "cannot watch TEST-PYPI-0001" in done.stdout and "language_not_supported" in done.stdout
            published_at = time.monotonic()

            # 3. The status topic: attached in this agent, within seconds, and what is not here.
            def attached() -> dict[str, Any] | None:
                status = _latest(kafka_bootstrap, names.plan_status, "PlanStatus").get(
                    f"live/{_host(agent)}".encode())
                symbols = {p["symbol"] for p in status["attached"]} if status else set()
                return status if {PARSE_ACCEPT, "crc32"} <= symbols else None
            status = _wait(attached, 120, "the plan's probes in the status topic", agent)
            attach_s = time.monotonic() - published_at
            assert status["state"] == "ACTIVE" and status["errors"] == []
            # MustParse is in the advisory, but the linker left it out of this program (Parse is
            # there, inlined: its copies are probed where DWARF says).
            assert any("golang.org/x/text/language.MustParse'" in p["reason"] for p in status["not_present"]), \
                status["not_present"]
            print(f"plan published -> attached and reported on the status topic: {attach_s:.1f} s")

            # 4. Calls of the plan's functions are reported, as any probe's.
            _line(go.stdin)
            _line(zl.stdin)
            _wait(lambda: _calls(kafka_bootstrap, names.raw, go.pid, PARSE_ACCEPT), 30,
                  "a ParseAcceptLanguage call on the raw topic", agent)
            _wait(lambda: _calls(kafka_bootstrap, names.raw, zl.pid, "crc32"), 30,
                  "a crc32 call on the raw topic", agent)
            shown = _signals("plan", "status", *connection)
            assert shown.returncode == 0 and "live on" in shown.stdout and "ACTIVE" in shown.stdout, shown.stdout
            assert f"watching {PARSE_ACCEPT}" in shown.stdout
            # The evidence loop: the VEX statement says what the plan watched, where, since when.
            vex = _signals("export", "--functions", str(ADVISORIES / "GO-2022-1059.json"), "--format", "openvex",
                           "--plan", "live", *connection)
            assert vex.returncode == 0, vex.stderr
            notes = json.loads(vex.stdout)["statements"][0]["status_notes"]
            assert "Plan live: watched on 1 node(s)" in notes and str(goapp) in notes, notes

            # 5. Removed: a tombstone; the agent says REMOVED and the probes are gone.
            assert _signals("plan", "remove", "live", *connection).returncode == 0
            _wait(lambda: _latest(kafka_bootstrap, names.plan_status, "PlanStatus").get(
                f"live/{_host(agent)}".encode(), {}).get("state") == "REMOVED", 30, "REMOVED status", agent)
            time.sleep(1.0)  # a watermark or two: every call before the detach is on the topic
            before = _calls(kafka_bootstrap, names.raw, go.pid, PARSE_ACCEPT)
            _line(go.stdin)
            _line(zl.stdin)
            time.sleep(2.0)
            assert _calls(kafka_bootstrap, names.raw, go.pid, PARSE_ACCEPT) == before
            assert "detached" in agent.log()
            # The statistics stop listing the plan's probes, so the time since counts as not
            # watched (consumer/watched.py); a retired probe listed on would read as watched.
            reports = sorted(decode_all(read_all(kafka_bootstrap, names.statistics),
                                        "io.runtimesignals.SignalStatistics"), key=lambda r: r["reported_at_us"])
            assert any("crc32" in p for r in reports for p in r["detached_ns_by_probe"]), reports[-1]
            assert not any("crc32" in p for p in reports[-1]["detached_ns_by_probe"]), reports[-1]
        finally:
            for process in (go, zl):
                process.kill()
                process.wait()
        assert agent.stop() == 0


def test_a_rustsec_advisory_is_watched_in_a_rust_binary_of_an_affected_crate_version(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """RUSTSEC-2021-0003 names `smallvec::SmallVec::insert_many`; the program has
    `smallvec::SmallVec<A>::insert_many`, compiled from smallvec 1.6.0 (affected). The plan is
    published while the agent runs, attached, and a call is reported; the fixed 1.6.1 is not
    watched."""
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    program = _build_rust(tmp_path)
    prefix = f"plans-rs-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    connection = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    fixed = _signals("plan", str(RUSTSEC), "--binary", f"pkg:cargo/smallvec@1.6.1={program}", "--plan-id", "rs",
                     *connection)
    assert fixed.returncode == 0 and "version_not_affected" in fixed.stdout, fixed.stdout + fixed.stderr
    agent = AgentProcess(kafka_bootstrap, prefix, [f"{program}:main"], tmp_path / "agent.log",
                         ["--target-rescan-interval-ms", "500"])
    _topics_settle(kafka_bootstrap, names)
    with agent:
        lines = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            done = _signals("plan", str(RUSTSEC), "--binary", f"pkg:cargo/smallvec@1.6.0={program}",
                            "--plan-id", "rs", "--publish", *connection)
            assert done.returncode == 0, done.stderr
            assert f"watch {program} (rust, RUSTSEC-2021-0003" in done.stdout, done.stdout

            def attached() -> list[str] | None:
                status = _latest(kafka_bootstrap, names.plan_status, "PlanStatus").get(
                    f"rs/{_host(agent)}".encode())
                symbols = [p["symbol"] for p in status["attached"]] if status else []
                return symbols or None
            (symbol,) = _wait(attached, 120, "the plan's probe in the status topic", agent)
            assert "insert_many" in symbol  # the mangled name of SmallVec<A>::insert_many

            def calls() -> int:
                events = decode_all(read_all(kafka_bootstrap, names.raw), "io.runtimesignals.RuntimeCallEvent")
                return sum(e["observation_count"] for e in events
                           if e["pid"] == lines.pid and e["symbol"] == symbol)
            for _ in range(3):
                _line(lines.stdin)
            assert _wait(lambda: calls() >= 3 and calls(), 30, "insert_many calls on the raw topic", agent) == 3
        finally:
            lines.kill()
            lines.wait()
        assert agent.stop() == 0


def _topics_settle(bootstrap: str, names: TopicNames, timeout_s: float = 400.0) -> None:
    """Just-created topics on the shared broker can take a while to answer metadata."""
    reader = TopicReader(bootstrap, timeout_s=5)
    deadline = time.monotonic() + timeout_s
    for topic in (names.raw, names.modules, names.plans, names.plan_status):
        while True:
            try:
                reader.whole_topic(topic)
                break
            except (ReadError, TopicNotFoundError, ConsumerError):
                assert time.monotonic() < deadline, f"{topic} was created but does not answer"
                # Seen on a busy shared broker (thousands of topics): a just-created topic
                # missing from the metadata for minutes.
                time.sleep(1.0)


def _host(agent: AgentProcess) -> str:
    import socket

    return socket.gethostname()
