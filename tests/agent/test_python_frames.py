"""Python frames in native paths (agent/pyframes.py, bpf/calltrace.bpf.c): a probe on libz's
deflate reached from Python shows the Python functions that reached it, on Debian's python3
and on every pyenv CPython 3.8–3.13 here. Ground truth is the interpreter's own view of its
stack at each call (sys._getframe, function objects' __qualname__), printed by the workload."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.agent.procmaps import ResolvedAddress
from runtime_signals.agent.pyframes import (
    DEBUG_OFFSET_WORDS,
    code_unit_digest,
    debug_offsets_differ,
    evaluation_groups,
    process_description,
    pthread_tid_offset,
    read_interpreter,
    splice,
)
from runtime_signals.agent.pylayouts import LAYOUTS
from runtime_signals.agent.pysource import module_candidates
from runtime_signals.agent.wire import PY_ENTRY_EVERY_FRAME, PY_ENTRY_IS_ENTRY, PY_ENTRY_SHIM
from tests.bpf_support import bpf_unavailable_reason

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
PYENV = Path.home() / ".pyenv" / "versions"
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")

# Four distinct Python paths into deflate: through a method, directly, from a function C
# code called back (map: a second evaluation loop call on the C stack), and from a thread
# other than the main one while the main thread waits. Each call site prints the stack as
# the interpreter sees it, once per distinct stack, with the number of calls.
WORKLOAD = textwrap.dedent('''\
    import gc, json, sys, threading, types, zlib
    from collections import Counter

    seen = Counter()

    def truth():
        stack, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == "<module>":
                qualname = "<module>"
            else:
                functions = [o for o in gc.get_referrers(code) if isinstance(o, types.FunctionType)]
                qualname = functions[0].__qualname__ if functions else code.co_name
            stack.append((code.co_filename, qualname, code.co_firstlineno))
            frame = frame.f_back
        seen[json.dumps(stack)] += 1

    class Upload:
        def handle(self, data):
            truth()
            return zlib.compress(data)

    def compress_a(data):
        return Upload().handle(data)

    def compress_b(data):
        truth()
        return zlib.compress(data)

    def compress_c(data):
        truth()
        return zlib.compress(data)

    def in_thread(data):
        for _ in range(2):
            truth()
            zlib.compress(data)

    def main():
        sys.stdin.readline()
        data = b"x" * 100000
        for _ in range(7):
            compress_a(data)
        for _ in range(5):
            compress_b(data)
        list(map(compress_c, [data] * 3))
        worker = threading.Thread(target=in_thread, args=(data,))
        worker.start()
        worker.join()
        print(json.dumps(seen), flush=True)
        sys.stdin.readline()

    main()
''')


def _interpreters() -> list[Path]:
    found = [DEBIAN_PYTHON] if DEBIAN_PYTHON.exists() else []
    for version in sorted(LAYOUTS):
        found += sorted(PYENV.glob(f"{version[0]}.{version[1]}.*/bin/python{version[0]}.{version[1]}"))[:1]
    return found


def _frame(address: int, digest: str | None = "sha256:x", offset: int | None = 10) -> ResolvedAddress:
    return ResolvedAddress(address, "/bin/x" if digest else None, digest, offset)


# --- the pieces, without the kernel ---------------------------------------------------

def test_frames_split_per_evaluation_loop_call() -> None:
    frames = [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert evaluation_groups(frames, 0b0101) == ([[(1, 1)], [(2, 2), (3, 3)]], 1)
    assert evaluation_groups(frames, 0b1000) == ([frames], 0)


def test_each_loop_frame_is_replaced_by_its_python_frames_innermost_first() -> None:
    loop = {2, 4}
    native = [_frame(i) for i in range(6)]
    groups = [[_frame(100)], [_frame(200), _frame(201)]]
    spliced = splice(native, lambda i, f: f.address in loop, groups, native_complete=True, python_complete=True)
    assert spliced is not None
    assert [f.address for f in spliced] == [0, 1, 100, 3, 200, 201, 5]


def test_paths_that_do_not_line_up_are_left_native() -> None:
    native = [_frame(i) for i in range(4)]
    one_loop = lambda i, f: f.address == 2  # noqa: E731
    two_groups = [[_frame(100)], [_frame(200)]]
    # Both walks whole, with different numbers of calls: a custom evaluator, greenlets.
    assert splice(native, one_loop, two_groups, native_complete=True, python_complete=True) is None
    # The native walk cut short lines up from the innermost call.
    spliced = splice(native, one_loop, two_groups, native_complete=False, python_complete=True)
    assert spliced is not None and [f.address for f in spliced] == [0, 1, 100, 3]
    # The Python walk cut short: the outer loop frames stay native.
    two_loops = lambda i, f: f.address in (1, 3)  # noqa: E731
    spliced = splice(native, two_loops, [[_frame(100)]], native_complete=True, python_complete=False)
    assert spliced is not None and [f.address for f in spliced] == [0, 100, 2, 3]
    # The probed function itself is never replaced, even inside the loop.
    spliced = splice(native, lambda i, f: True, [[_frame(100)]] * 3, native_complete=True, python_complete=True)
    assert spliced is not None and spliced[0].address == 0


def test_a_code_unit_digest_names_its_file_function_and_line() -> None:
    digest = code_unit_digest("sha256:abc", "app.Upload.handle", 20)
    assert digest == code_unit_digest("sha256:abc", "app.Upload.handle", 20)
    assert digest.startswith("sha256:") and len(digest) == 71
    assert len({digest, code_unit_digest("sha256:abd", "app.Upload.handle", 20),
                code_unit_digest("sha256:abc", "app.Upload.handle", 21),
                code_unit_digest("sha256:abc", "app.Upload.close", 20)}) == 4


@pytest.mark.skipif(not LIBC.exists() or not shutil.which("gcc"), reason="glibc and gcc are needed")
def test_the_tid_offset_in_struct_pthread_is_libcs_own(tmp_path: Path) -> None:
    """libc's description for debuggers against a program that finds its tid in its own
    struct pthread."""
    source = tmp_path / "tid.c"
    source.write_text(textwrap.dedent('''\
        #define _GNU_SOURCE
        #include <pthread.h>
        #include <stdio.h>
        #include <unistd.h>
        int main(void) {
            unsigned char *self = (unsigned char *)pthread_self();
            int tid = gettid();
            for (int i = 0; i < 4096; i += 4)
                if (*(int *)(self + i) == tid) printf("%d\\n", i);
            return 0;
        }
    '''))
    subprocess.run(["gcc", "-o", str(tmp_path / "tid"), str(source)], check=True)
    found = subprocess.run([str(tmp_path / "tid")], check=True, capture_output=True, text=True).stdout.split()
    assert [str(pthread_tid_offset(LIBC))] == found


@pytest.mark.parametrize("interpreter", _interpreters(), ids=lambda p: p.name + "-" + p.parent.parent.name)
def test_each_interpreter_file_is_described(interpreter: Path) -> None:
    """The file defining _PyRuntime (the executable, or the libpython it links) has the
    evaluation loop, and each version gets the walk its frames need."""
    version = (int(interpreter.name[6]), int(interpreter.name[8:]))
    library = next(iter(sorted((interpreter.parent.parent / "lib").glob(f"libpython{version[0]}.{version[1]}*.so*"))),
                   None)
    described = read_interpreter(library or interpreter, version)
    assert described is not None and described.eval_ranges and described.runtime_address
    assert described.code_type_address  # what every code object's ob_type must hold
    # 3.13 publishes its offsets: they agree with the table; a changed one is refused.
    assert debug_offsets_differ(LAYOUTS[version], described) == []
    if version >= (3, 13):
        words = list(described.debug_offsets)
        words[DEBUG_OFFSET_WORDS["frame_owner"]] += 1
        assert debug_offsets_differ(LAYOUTS[version], replace(described, debug_offsets=tuple(words))) == ["frame_owner"]
    shape = LAYOUTS[version]
    value = process_description(shape, 0x1000, pthread_tid_offset(LIBC))
    assert value is not None
    expected = {(3, 11): PY_ENTRY_IS_ENTRY, (3, 12): PY_ENTRY_SHIM, (3, 13): PY_ENTRY_SHIM}
    assert value.entry_rule == expected.get(version, PY_ENTRY_EVERY_FRAME)
    assert (value.pthread_tid >= 0) == (version <= (3, 10))
    if version <= (3, 10):  # no glibc description, no walk: never another thread's frames
        assert process_description(shape, 0x1000, None) is None


# --- real interpreters, the real agent --------------------------------------------------

def _expected_names(stack: list[list[Any]]) -> tuple[str, ...]:
    """The interpreter's stack (innermost first) as the agent names frames, outermost first."""
    names = []
    for filename, qualname, _ in reversed(stack):
        candidates = module_candidates(filename)
        names.append(f"{candidates[0]}.{qualname}" if candidates else qualname)
    return tuple(names)


def _live_setup(bootstrap: str, tmp_path: Path) -> tuple[str, Any, Path]:
    """(topic prefix, its topics, the workload's script), the topics created; skips where
    BPF cannot run."""
    from tests.agent.agent_runs import fresh_topics

    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    prefix, names = fresh_topics(bootstrap, "pyframes")
    script = tmp_path / "app.py"
    script.write_text(WORKLOAD)
    return prefix, names, script


def _agent_config(tmp_path: Path, pids: list[int]) -> Path:
    """A target on libz's deflate for these processes only: the rules of other processes'
    binaries (this machine is shared) are neither built nor loaded."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[[agent.targets]]\nbinary = "z"\nsymbols = ["deflate"]\npids = {sorted(pids)}\n')
    return config


@pytest.mark.skipif(not _interpreters(), reason="no CPython 3.8-3.13 on this machine")
def test_paths_into_deflate_carry_the_python_frames_of_every_interpreter(kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:
    from tests.agent.agent_runs import CALL_EVENT, AgentProcess, decode_all, read_all, wait_for_rules

    prefix, names, script = _live_setup(kafka_bootstrap, tmp_path)
    workloads = {path: subprocess.Popen([str(path), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for path in _interpreters()}
    truths: dict[Path, Counter[tuple[str, ...]]] = {}
    try:
        config = _agent_config(tmp_path, [p.pid for p in workloads.values()])
        agent = AgentProcess(kafka_bootstrap, prefix, [], tmp_path / "agent.log", ["--config", str(config)])
        with agent:
            for path, process in workloads.items():
                assert process.stdin is not None and process.stdout is not None
                wait_for_rules(agent, process.pid)  # whole native paths, where the loop frames are
                process.stdin.write(b"go\n")
                process.stdin.flush()
                seen = json.loads(process.stdout.readline())
                truths[path] = Counter({_expected_names(json.loads(stack)): count for stack, count in seen.items()})
            time.sleep(1.0)  # a watermark tick or two while the processes live
            assert agent.stop() == 0, agent.log()[-3000:]
    finally:
        for process in workloads.values():
            process.kill()
            process.wait()
    events = decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
    symbols = {r["binary_digest"]: r["symbols"][0]["name"]
               for r in decode_all(read_all(kafka_bootstrap, names.symbols), "io.runtimesignals.SymbolTable")
               if r["source"] and r["source"].startswith("python-code:")}
    modules = {m["binary_digest"]: m for r in decode_all(read_all(kafka_bootstrap, names.modules),
                                                         "io.runtimesignals.ModuleMap") for m in r["modules"]}
    for path, process in workloads.items():
        found: Counter[tuple[str, ...]] = Counter()
        for event in (e for e in events if e["pid"] == process.pid):
            assert event["runtime_type"] == "PYTHON" and event["stack_frames"][-1]["library"].startswith(
                "/usr/lib/x86_64-linux-gnu/libz.so"), event
            python = [f for f in event["stack_frames"] if f["binary_digest"] in symbols]
            # Every Python frame is named and listed in the module map with its file; nothing else
            # of the path lies in a .py file.
            assert all(modules[f["binary_digest"]]["path"] == f["library"] for f in python)
            assert not [f for f in event["stack_frames"] if f not in python and (f["library"] or "").endswith(".py")]
            found[tuple(symbols[f["binary_digest"]] for f in python)] += event["observation_count"]
        assert found == truths[path], f"{path}: {found} != {truths[path]}\n" + repr([e["stack_frames"] for e in events if e["pid"] == process.pid][:1]) + repr(len(symbols))
        assert sorted(truths[path].values()) == [2, 3, 5, 7]


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="Debian's python3.11 is not installed")
def test_summaries_name_the_python_functions_and_their_packages(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Agent + processor through the broker: the summaries' paths hold the Python functions,
    named by the processor from the tables the agent published, with the standard library's
    Debian package on its frames."""
    from runtime_signals.consumer.summaries import latest_summaries, read_topic
    from runtime_signals.devtools.pipeline import LocalPipeline

    prefix, names, script = _live_setup(kafka_bootstrap, tmp_path)
    workload = subprocess.Popen([str(DEBIAN_PYTHON), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert workload.stdin is not None and workload.stdout is not None
    config = _agent_config(tmp_path, [workload.pid])
    found: Counter[tuple[str, ...]] = Counter()
    try:
        with LocalPipeline(kafka_bootstrap, [], topic_prefix=prefix, window_ms=1000, lateness_ms=300,
                           log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
            pipeline.start_processor(extra_args=["--symbol-wait-ms", "60000"])
            pipeline.start_agent(extra_args=["--config", str(config)])
            workload.stdin.write(b"go\n")
            workload.stdin.flush()
            seen = json.loads(workload.stdout.readline())
            truth = Counter({_expected_names(json.loads(stack)): count for stack, count in seen.items()})
            deadline = time.monotonic() + 120
            while sum(found.values()) < 17 and time.monotonic() < deadline:
                time.sleep(1.0)
                found.clear()
                for summary in latest_summaries(read_topic(kafka_bootstrap, names.summaries, timeout_s=5)):
                    for path in summary["call_paths"]:
                        python = tuple(s for s, library in zip(path["symbols"], path["libraries"], strict=True)
                                       if (library or "").endswith(".py"))
                        assert path["runtime_type"] == "PYTHON" and path["symbols"][-1] == "deflate", path
                        stdlib = [p for p, library in zip(path["purls"], path["libraries"], strict=True)
                                  if (library or "").endswith("/threading.py")]
                        assert all(p and p.startswith("pkg:deb/debian/libpython3.11-minimal@") for p in stdlib), \
                            [f for f in zip(path["symbols"], path["purls"], path["libraries"], strict=True) if f[2] and f[2].endswith(".py")]
                        found[python] += path["observation_count"]
            assert pipeline.stop_agent() == 0, pipeline.log("agent")
    finally:
        workload.kill()
        workload.wait()
    assert found == truth, f"{found} != {truth}\n" + pipeline.log("processor")[-3000:]
