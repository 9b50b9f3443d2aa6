"""Probes on Python functions (python:MODULE:QUALNAME) against real interpreters: Debian's
python3 (built with USDT markers) and the pyenv builds (without)."""

from __future__ import annotations

import subprocess
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from runtime_signals.agent.procmaps import DigestCache
from runtime_signals.agent.purl import PurlResolver
from runtime_signals.agent.pycalls import PythonCallNamer, call_record
from runtime_signals.agent.pyframes import code_unit_digest
from runtime_signals.agent.pyprobes import (
    PythonProbeSpec,
    PythonTracer,
    interpreter_markers,
    interpreter_version,
)
from runtime_signals.agent.pysource import PythonSources, SourceIndex, module_candidates
from runtime_signals.agent.usdt import ARG_MEM, ARG_REG, UsdtArg
from runtime_signals.schemas import codec
from tests.bpf_support import bpf_unavailable_reason

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
PYENV = Path.home() / ".pyenv" / "versions"

WORKLOAD = textwrap.dedent('''\
    import json, sys

    class Other:
        def decode(self, text):  # same co_name as JSONDecoder.decode: the kernel passes it
            return text

    def from_a():
        for _ in range(7):
            json.loads('{"a": 1}')

    def from_b():
        for _ in range(4):
            json.loads('[1, 2]')
        Other().decode("x")

    sys.stdin.readline()  # the test attaches first
    from_a()
    from_b()
    print("done", flush=True)
    sys.stdin.readline()  # alive while the agent reads its files through /proc/<pid>/root
''')


def test_usdt_argument_forms() -> None:
    assert UsdtArg.parse("8@%rbp") == UsdtArg(ARG_REG, 8, False, reg_offset=32)
    assert UsdtArg.parse("-4@%eax") == UsdtArg(ARG_REG, 4, True, reg_offset=80)
    assert UsdtArg.parse("-4@112(%rsp)") == UsdtArg(ARG_MEM, 4, True, reg_offset=152, value=112)
    assert UsdtArg.parse("8@%r12") == UsdtArg(ARG_REG, 8, False, reg_offset=24)


def test_specs_and_module_names() -> None:
    spec = PythonProbeSpec.parse("python:json.decoder:JSONDecoder.decode")
    assert (spec.module, spec.qualname, spec.kernel_funcname) == ("json.decoder", "JSONDecoder.decode", "decode")
    assert PythonProbeSpec.parse("python:app.*:Handler.*").kernel_funcname == ""
    assert module_candidates("/usr/lib/python3.11/json/decoder.py") == ("json.decoder",)
    assert module_candidates("/venv/lib/python3.11/site-packages/requests/__init__.py") == ("requests",)
    assert module_candidates("/srv/app/handlers.py") == ("handlers", "app.handlers", "srv.app.handlers")


def test_qualified_names_come_from_the_definition_holding_the_line() -> None:
    index = SourceIndex.parse(textwrap.dedent('''\
        class A:
            @staticmethod
            def run():
                def inner():
                    return 1
                return inner()

        def run():
            return 2
    '''))
    assert index.qualname_at(2, "run") == "A.run"          # the decorator's line: co_firstlineno
    assert index.qualname_at(6, "run") == "A.run"          # a return line inside it
    assert index.qualname_at(5, "inner") == "A.run.<locals>.inner"
    assert index.qualname_at(9, "run") == "run"
    assert index.qualname_at(9, "inner") is None           # no such definition there: not guessed
    assert index.definition_at(6, "run") == index.definitions[1]  # where its code unit starts


@pytest.mark.parametrize("version", sorted(p.name for p in PYENV.glob("3.*")) if PYENV.exists() else [])
def test_pyenv_builds_have_no_markers(version: str) -> None:
    # Documented in docs/managed-runtimes.md: pyenv builds lack --with-dtrace. If one gains
    # markers this fails, and the documentation must say it can be probed.
    libraries = list((PYENV / version / "lib").glob("libpython3*.so.1.0"))
    assert libraries, f"pyenv {version} has no libpython"
    assert interpreter_markers(libraries[0]) == {}


@pytest.mark.skipif(not DEBIAN_PYTHON.exists() or not interpreter_markers(DEBIAN_PYTHON),
                    reason="Debian's python3.11 with USDT markers is not installed")
def test_a_probe_on_a_python_function_counts_each_call_exactly(tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    tracer = PythonTracer()
    calls = []
    tracer.on_event(calls.append)
    process = None
    try:
        decode = tracer.add_probe(PythonProbeSpec.parse("python:json.decoder:JSONDecoder.decode"))
        assert tracer.attach_interpreter(DEBIAN_PYTHON)
        process = subprocess.Popen([str(DEBIAN_PYTHON), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
        assert process.stdout.readline() == b"done\n"
        tracer.drain()
        kernel = tracer.probe_counters(decode)
    except BaseException:
        if process is not None:
            process.kill()
        raise
    finally:
        tracer.close()
    ours = [c for c in calls if c.pid == process.pid]
    # Every call with co_name "decode" reached the agent: 11 JSONDecoder.decode, one
    # Other.decode, and whatever decode functions the interpreter's start-up ran.
    by_file = Counter(c.filename for c in ours)
    assert by_file["/usr/lib/python3.11/json/decoder.py"] == 11 and by_file[str(script)] == 1
    assert {c.funcname for c in ours} == {"decode"}
    assert kernel["calls"] == kernel["sent"]

    digests = DigestCache()
    namer = PythonCallNamer(PythonSources(PurlResolver()), digests)
    spec = decode.spec
    selected = Counter()
    records = []
    for call in ours:
        frames = namer.frames(call, interpreter=str(DEBIAN_PYTHON))
        if namer.selects(spec, frames[-1]):
            selected[(frames[-1].signature, frames[-1].path)] += 1
            records.append(call_record(call, 1, frames, spec, container_id="", host="h", agent_id="a",
                                       wall_us=1, last_boot_ns=call.boot_ns))
    assert selected == {("json.decoder.JSONDecoder.decode", "/usr/lib/python3.11/json/decoder.py"): 11}
    record = records[0]
    # The standard library's file belongs to the Debian package dpkg names for it.
    owner = subprocess.run(["dpkg-query", "-S", "/usr/lib/python3.11/json/decoder.py"], capture_output=True,
                           text=True, check=True).stdout.split(":")[0]
    assert record["purl"] and record["purl"].startswith(f"pkg:deb/debian/{owner}@")
    # Located as a unit of code: the file's digest, the function's name and its first line.
    decode = PythonSources(PurlResolver()).source(Path("/proc/self"), "/usr/lib/python3.11/json/decoder.py")
    assert decode.index is not None
    first_line = next(d.first_line for d in decode.index.definitions if d.qualname == "JSONDecoder.decode")
    assert record["runtime_type"] == "PYTHON" and record["binary_offset"] == 1
    assert record["binary_digest"] == code_unit_digest(digests.digest("/usr/lib/python3.11/json/decoder.py") or "",
                                                       "json.decoder.JSONDecoder.decode", first_line)
    # 3.11 fires at function__return and keeps no stack: the record says its callers are missing.
    assert record["stack_truncated"] is True and len(record["stack_frames"]) == 1
    codec.encode(record, "io.runtimesignals.RuntimeCallEvent", codec.SchemaRegistry.default())
    process.stdin.close()
    assert process.wait(timeout=60) == 0


def test_interpreter_versions_from_file_names() -> None:
    assert interpreter_version("/usr/bin/python3.11") == (3, 11)
    assert interpreter_version("/opt/lib/libpython3.9.so.1.0") == (3, 9)
    assert interpreter_version("/usr/bin/env") is None


@pytest.mark.skipif(not DEBIAN_PYTHON.exists() or not interpreter_markers(DEBIAN_PYTHON),
                    reason="Debian's python3.11 with USDT markers is not installed")
def test_the_agent_publishes_python_function_calls_with_exact_counts(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`signals agent --probe python:...` on a process already running when the agent
    starts (no restart), through the real broker: RuntimeCallEvents with the exact count."""
    import uuid

    from runtime_signals.devtools.demo import create_topics
    from runtime_signals.schemas.topics import TopicNames
    from tests.agent.agent_runs import (
        CALL_EVENT,
        STATISTICS,
        AgentProcess,
        decode_all,
        read_all,
    )

    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    bootstrap = kafka_bootstrap
    prefix = f"pyprobe-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names)
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    workload = subprocess.Popen([str(DEBIAN_PYTHON), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert workload.stdin is not None and workload.stdout is not None
    try:
        agent = AgentProcess(bootstrap, prefix, ["python:json.decoder:JSONDecoder.decode"], tmp_path / "agent.log",
                             ["--statistics-interval-ms", "1000"])
        with agent:
            workload.stdin.write(b"go\n")
            workload.stdin.flush()
            assert workload.stdout.readline() == b"done\n"
            time.sleep(1.0)  # a watermark tick or two: the records are built while the process lives
            assert agent.stop() == 0, agent.log()[-3000:]
    finally:
        workload.kill()
        workload.wait()
    events = [e for e in decode_all(read_all(bootstrap, names.raw), CALL_EVENT)
              if e["pid"] == workload.pid]
    assert sum(e["observation_count"] for e in events) == 11, agent.log()[-3000:]
    assert {(e["probe_id"], e["symbol"], e["runtime_type"]) for e in events} == {
        ("python:json.decoder:JSONDecoder.decode", "json.decoder.JSONDecoder.decode", "PYTHON")}
    # The process ran Python before the agent started, and its callers are known all the
    # same: the thread's frames are walked at each return (agent/pyframes.py describes the
    # interpreter), so the two Python callers are two paths with their exact counts.
    assert not any(e["stack_truncated"] for e in events), events
    paths: Counter[tuple[str, ...]] = Counter()
    for event in events:
        paths[tuple(f["library"].rsplit("/", 2)[-1] for f in event["stack_frames"])] += event["observation_count"]
    assert set(paths) == {("workload.py", "workload.py", "__init__.py", "decoder.py")}, paths
    # Every frame is a unit of code with its one-name symbol table: the processor names the
    # callers as well as the probed function.
    unit_names = {r["binary_digest"]: r["symbols"][0]["name"]
                  for r in decode_all(read_all(bootstrap, names.symbols), "io.runtimesignals.SymbolTable")
                  if (r["source"] or "").startswith("python-code:")}
    by_path: Counter[tuple[str, ...]] = Counter()
    for event in events:
        by_path[tuple(unit_names[f["binary_digest"]] for f in event["stack_frames"])] += event["observation_count"]
    assert by_path == {("workload.<module>", "workload.from_a", "json.loads", "json.decoder.JSONDecoder.decode"): 7,
                       ("workload.<module>", "workload.from_b", "json.loads", "json.decoder.JSONDecoder.decode"): 4}, \
        by_path
    statistics = max(decode_all(read_all(bootstrap, names.statistics), STATISTICS),
                     key=lambda r: r["reported_at_us"])
    assert statistics["dropped_by_reason"].get("not_selected", 0) >= 1  # Other.decode, by its full name
    # The source file is in the process's module map, with its package: the processor needs
    # no wait for it.
    modules = [m for r in decode_all(read_all(bootstrap, names.modules), "io.runtimesignals.ModuleMap")
               if r["pid"] == workload.pid for m in r["modules"]]
    sources = {m["path"]: m for m in modules if m["path"].endswith(".py")}
    decoder = sources["/usr/lib/python3.11/json/decoder.py"]
    assert decoder["binary_digest"] == events[0]["binary_digest"] and decoder["start_address"] == 0
    assert decoder["purl"] == events[0]["purl"]


HOT_WORKLOAD = textwrap.dedent('''\
    import sys, time

    def hot():
        return 1

    sys.stdin.readline()
    calls, end = 0, time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        hot()
        calls += 1
        time.sleep(0.0005)  # about 1,500 calls/s: hot for the budget, not a flood for the pump
    print(calls, flush=True)
    sys.stdin.readline()
''')


@pytest.mark.skipif(not DEBIAN_PYTHON.exists() or not interpreter_markers(DEBIAN_PYTHON),
                    reason="Debian's python3.11 with USDT markers is not installed")
def test_the_budget_switches_a_hot_python_probe_off_and_its_markers_go(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A Python probe on a hot function whose path is known is switched off by the budget, as
    a native one is detached; with every Python probe off the markers are detached, so the
    interpreter's calls stop paying the trap. The statistics say how long it was not watched."""
    from tests.agent.agent_runs import CALL_EVENT, STATISTICS, AgentProcess, decode_all, fresh_topics, read_all

    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    prefix, names = fresh_topics(kafka_bootstrap, "pybudget")
    script = tmp_path / "hot_loop.py"
    script.write_text(HOT_WORKLOAD)
    workload = subprocess.Popen([str(DEBIAN_PYTHON), str(script), "6"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert workload.stdin is not None and workload.stdout is not None
    # A budget scaled down to the test's seconds (tests/agent/test_overhead.py does the same
    # for a native probe), re-arming only after the test.
    budget = ["--budget-quiet-s", "1", "--budget-min-rate", "100", "--budget-backoff-s", "600",
              "--budget-max-backoff-s", "600", "--statistics-interval-ms", "1000"]
    try:
        with AgentProcess(kafka_bootstrap, prefix, ["python:hot_loop:hot"], tmp_path / "agent.log", budget) as agent:
            workload.stdin.write(b"go\n")
            workload.stdin.flush()
            made = int(workload.stdout.readline())
            time.sleep(1.5)  # a statistics interval after the loop
            assert agent.stop() == 0, agent.log()[-3000:]
            log = agent.log()
    finally:
        workload.kill()
        workload.wait()
    assert "budget: switched off python:hot_loop:hot" in log, log[-3000:]
    assert "the markers are detached" in log, log[-3000:]
    recorded = sum(e["observation_count"] for e in decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
                   if e["pid"] == workload.pid)
    # Recorded until the budget acted (at least its quiet second), not after.
    assert 0 < recorded < made, (recorded, made)
    statistics = max(decode_all(read_all(kafka_bootstrap, names.statistics), STATISTICS),
                     key=lambda r: r["reported_at_us"])
    assert statistics["detached_ns_by_probe"]["python:hot_loop:hot"] >= 2_000_000_000, statistics
