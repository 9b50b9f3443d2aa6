"""Call paths without frame pointers, compared frame by frame with gdb's backtrace of the
same calls: real programs built by the test, Debian's libz, the real BPF program and agent.

Each program is first run under gdb (tests/agent/gdb_backtraces.py), which stops on every
entry of the probed function and records its physical frames as (file, offset); then it
runs again under the agent. Both describe a frame the same way (the entry of the probed
function, then each caller's return address, as a file and an offset in it), so the
agent's path must be gdb's: at least 95 % of gdb's frames, in order, and no frame gdb does
not have (a junk word would be one); as many distinct paths as gdb saw; each path with
exactly the calls made through it.

Debian's libz is used as a private copy of the file (same bytes, loaded through
LD_LIBRARY_PATH): a uprobe anyone else on the host holds on the shared file would take the
trap before gdb's breakpoint and hide the calls from gdb.

The programs make one warm-up call first and wait: the agent loads a process's mapping
table when it meets the process, and the rules of its binaries in the background; calls
made before that are walked by frame pointers and checked by the agent (docs/unwinding.md),
and are left out here by their timestamp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime_signals.agent.pyframes import read_interpreter
from runtime_signals.agent.symtab import read_symbol_table
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import (
    CALL_EVENT,
    TARGETS,
    AgentProcess,
    decode_all,
    read_all,
    wait_for_rules,
)
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

CALLS = 30
GDB_SCRIPT = Path(__file__).resolve().parent / "gdb_backtraces.py"
Frame = tuple[str, int]  # (mapped file, offset in it)
Path_ = tuple[Frame, ...]  # innermost first


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # in tests/agent/targets
    compiler: str  # or "python3": the source is a script Debian's python3 runs
    flags: tuple[str, ...]
    probe_binary: str | None  # None: the program itself
    probe_symbol: str  # as the agent's --probe takes it
    gdb_symbol: str  # as gdb evaluates it
    true_paths: int  # distinct paths the program makes after its warm-up
    after_load: str = ""  # see gdb_backtraces.py TRUTH_AFTER_LOAD
    start: str = ""  # see gdb_backtraces.py TRUTH_START


CASES = [
    # Frameless program calling Debian's frameless libz: two chains of 13 frames above libc,
    # and one of 11 through frames of up to 3,000 bytes (more than the walker's stack window).
    Case("c-O2-frameless-libz", "unwind_corpus.c", "gcc", ("-O2", "-fomit-frame-pointer", "-g", "-lz"),
         "/usr/lib/x86_64-linux-gnu/libz.so.1", "deflate", "deflate", 3),
    # The same, with libz loaded by dlopen at the start of main and called at once: its
    # rules and the process's table must be in place before the first call (a hold at the
    # loader's consistent point), in the short-lived variant too.
    Case("c-O2-frameless-dlopen-libz", "unwind_corpus.c", "gcc", ("-O2", "-fomit-frame-pointer", "-g",
                                                                   "-DCORPUS_DLOPEN"),
         "/usr/lib/x86_64-linux-gnu/libz.so.1", "deflate", "deflate", 3, after_load="libz"),
    # Frame pointers and no CFI at all in the program (mixed: libz and libc by rules, the
    # program by its frame pointers).
    Case("c-O1-frame-pointers-no-cfi", "unwind_corpus.c", "gcc",
         ("-O1", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-lz"),
         "/usr/lib/x86_64-linux-gnu/libz.so.1", "deflate", "deflate", 3),
    # C++ at -O2: a template recursion, a std::function and a virtual call.
    Case("cxx-O2", "unwind_corpus.cc", "g++", ("-O2", "-g"), None, "_ZN7imgproc6Parser5parseEPKc",
         "'imgproc::Parser::parse'", 3),
    # Debian's python3 (frameless, stripped) calling libz through its zlib module: the
    # interpreter's own C frames, down to _start. Two paths: the eval loop's generic call
    # and, once the call site is specialized, its specialized form.
    Case("python3-zlib", "unwind_corpus.py", "python3", (), "/usr/lib/x86_64-linux-gnu/libz.so.1", "deflate",
         "deflate", 2, after_load="libz"),
    # A Rust release build without frame pointers: the program's and Rust std's CFI.
    Case("rust-release", "unwind_corpus.rs", "rustc",
         ("--edition", "2021", "-C", "opt-level=3", "-C", "debuginfo=1", "-C", "force-frame-pointers=no"),
         None, "corpus_leaf", "corpus_leaf", 2),
    # Go: frame pointers, .debug_frame and no .eh_frame; the main goroutine's stack.
    Case("golang", "unwind_corpus.go", "go", ("build",), None, "main.leaf", "'main.leaf'", 2, start="main.main"),
]


def _command(case: Case, binary: Path) -> list[str]:
    """The program and its first arguments (before CALLS [GOFILE])."""
    return ["/usr/bin/python3", str(binary)] if case.compiler == "python3" else [str(binary)]


def _build(case: Case, out_dir: Path) -> Path:
    if case.compiler == "python3":
        if not Path("/usr/bin/python3").exists():
            pytest.skip("Debian's python3 is not installed")
        return TARGETS / case.source
    compiler = shutil.which(case.compiler)
    if compiler is None:
        pytest.skip(f"{case.compiler} is not installed (scripts/bootstrap.sh installs it)")
    binary = out_dir / case.name
    flags = [f for f in case.flags if f != "-lz"]
    libraries = [f for f in case.flags if f == "-lz"]
    subprocess.run([compiler, *flags, "-o", str(binary), str(TARGETS / case.source), *libraries],
                   check=True, capture_output=True)
    return binary


def _private_library(case: Case, out_dir: Path) -> dict[str, str]:
    """The environment of both runs (gdb's and the agent's): one that loads a private copy
    of case.probe_binary, and the copy's path as PROBE_BINARY, when the probe is in a
    library.

    Go's runtime preempts goroutines with SIGURG at any moment. One that arrives while gdb
    steps over its breakpoint sends the thread into the handler before the instruction ran;
    the handler returns to the breakpoint, and gdb reports one call twice (a rehearsal saw
    gdb's 62 stops for 61 calls). Without async preemption the program makes the same
    calls, and gdb's count is exact."""
    env = {"GODEBUG": "asyncpreemptoff=1"} if case.name == "golang" else {}
    if case.probe_binary is None:
        return env
    library_dir = out_dir / "lib"
    library_dir.mkdir(exist_ok=True)
    source = Path(case.probe_binary)
    copy = library_dir / source.name
    shutil.copy2(source.resolve(), copy)
    return {**env, "LD_LIBRARY_PATH": str(library_dir), "PROBE_BINARY": str(copy)}


def _gdb_paths(binary: Path, case: Case, out_dir: Path, private: dict[str, str],
               with_warm_up: bool = False) -> Counter[Path_]:
    """The paths gdb sees after the warm-up call (with it: all), each with its calls."""
    out = out_dir / f"{case.name}.gdb.json"
    program, *first_args = _command(case, binary)
    located = {}
    if "PROBE_BINARY" in private:
        symbols = read_symbol_table(private["PROBE_BINARY"]).symbols
        offset = next(s.file_offset for s in symbols if s.name == case.probe_symbol)
        located = {"TRUTH_LIBRARY": private["PROBE_BINARY"], "TRUTH_OFFSET": str(offset)}
    env = dict(os.environ, **private, **located, TRUTH_PROGRAM=program, TRUTH_ARGS=json.dumps([*first_args, str(CALLS)]),
               TRUTH_SYMBOL=case.gdb_symbol, TRUTH_OUT=str(out), TRUTH_AFTER_LOAD=case.after_load,
               TRUTH_START=case.start, TRUTH_SOFTWARE_BREAK="1" if case.probe_binary is None else "")
    done = subprocess.run(["gdb", "-batch", "-nx", "-x", str(GDB_SCRIPT)], env=env, capture_output=True, check=False,
                          text=True, timeout=300)
    assert out.exists(), f"gdb wrote no backtraces:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    backtraces = json.loads(out.read_text())
    assert backtraces, f"gdb never stopped on {case.gdb_symbol}:\n{done.stdout[-3000:]}"
    kept = backtraces if with_warm_up else backtraces[1:]  # [0]: the warm-up call
    return Counter(tuple((path, offset) for path, offset in trace) for trace in kept)


def _wait_for_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    """Until the broker lists topic: a busy shared broker may answer "created" before every
    listener's metadata has it, and the agent refuses to start without its topics."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if topic in admin.list_topics(topic, timeout=10).topics and not admin.list_topics(topic).topics[topic].error:
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not listed by {bootstrap} within {timeout_s:.0f}s")


def _agent_paths(binary: Path, case: Case, kafka_bootstrap: str, tmp_path: Path,
                 private: dict[str, str], short_lived: bool = False) -> tuple[Counter[Path_], list[dict]]:
    """The agent's paths of the calls after the warm-up; short_lived: of every call of a
    program started under the agent that runs straight through and exits."""
    prefix = f"unwind-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    _wait_for_topic(kafka_bootstrap, names.raw)
    probe = f"{private.get('PROBE_BINARY', binary)}:{case.probe_symbol}"
    go = tmp_path / "go-file"
    if short_lived:
        go.touch()
    # A held process waits for its rules up to 0.4 x the heartbeat (agent/collector.py): a
    # loaded test machine builds a new program's rules more slowly than a node would.
    with AgentProcess(kafka_bootstrap, prefix, [probe], tmp_path / "agent.log", ["--no-budget"],
                      env={"SIGNALS_AGENT__HOLD_HEARTBEAT_MS": "10000"}) as agent:
        program = subprocess.Popen([*_command(case, binary), str(CALLS), str(go)], stdout=subprocess.PIPE,
                                   text=True, env=dict(os.environ, **private))
        try:
            go_boot_ns = 0
            if not short_lived:
                assert program.stdout is not None and program.stdout.readline().strip() == "warm"
                wait_for_rules(agent, program.pid)
                # Past the warm-up's flush interval (200 ms): a call in the same interval on the
                # same path would be folded into the warm-up's record, which carries its time.
                time.sleep(0.5)
                go_boot_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                go.touch()
            assert program.wait(120) == 0
        finally:
            if program.poll() is None:
                program.kill()
        assert agent.stop() == 0, agent.log()[-4000:]
    events = [e for e in decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
              if e["pid"] == program.pid and e["timestamp_ns"] >= go_boot_ns]
    paths: Counter[Path_] = Counter()
    for event in events:
        frames = tuple((f["library"] or "", f["binary_offset"] if f["binary_offset"] is not None else f["address"])
                       for f in reversed(event["stack_frames"]))
        paths[frames] += event["observation_count"]
    return paths, events


def _to_libc_start(paths: Counter[Path_]) -> Counter[Path_]:
    """Each path down to its first frame in libc (__libc_start_call_main, which calls main):
    gdb's own unwinding below it is not reproducible (in some runs it reads a zero return
    address there and stops), so the comparison ends where gdb's always does."""
    cut: Counter[Path_] = Counter()
    for path, calls in paths.items():
        end = next((i + 1 for i, (file, _) in enumerate(path) if file.endswith("/libc.so.6")), len(path))
        cut[path[:end]] += calls
    return cut


def _show(paths: Counter[Path_]) -> str:
    return "\n".join(f"{calls} calls: " + " <- ".join(f"{Path(file).name}+{offset:#x}" for file, offset in path)
                     for path, calls in paths.items())


LOOP_CALL: Frame = ("<an evaluation loop call>", 0)


def _agent_evidence(tmp_path: Path, events: list[dict]) -> str:
    """What tells a lost call from a double stop in gdb: the agent's counts and warnings,
    and each record's time and count (a count that does not add up fails rarely, and its
    test directory may be gone by the time anyone looks)."""
    log = (tmp_path / "agent.log").read_text(errors="replace") if (tmp_path / "agent.log").exists() else ""
    kept = [line for line in log.splitlines()
            if "agent stopped" in line or "WARNING" in line or "ERROR" in line or "loader holds" in line]
    records = [(e["timestamp_ns"], e["observation_count"], e["pid"], len(e["stack_frames"])) for e in events]
    return "agent log:\n" + "\n".join(kept[-20:]) + f"\nrecords (time, count, pid, frames): {records}"


def _evaluation_loops_marked(paths: Counter[Path_]) -> Counter[Path_]:
    """Each CPython evaluation loop call as one marker: gdb, without CPython's debug
    information, sees a _PyEval_EvalFrameDefault frame where the agent puts the Python
    frames that call ran (agent/pyframes.py; tests/agent/test_python_frames.py checks those
    against the interpreter's own view)."""
    loops: dict[str, tuple[tuple[int, int], ...]] = {}
    marked: Counter[Path_] = Counter()
    for path, calls in paths.items():
        frames: list[Frame] = []
        prior_was_python = False
        for file, offset in path:
            if file.endswith(".py"):  # one loop call's Python frames: one marker
                if not prior_was_python:
                    frames.append(LOOP_CALL)
                prior_was_python = True
                continue
            prior_was_python = False
            if file not in loops:
                described = read_interpreter(Path(file), (0, 0)) if "python" in Path(file).name else None
                loops[file] = described.eval_ranges if described else ()
            in_loop = any(start <= offset - 1 < end for start, end in loops[file])
            frames.append(LOOP_CALL if in_loop else (file, offset))
        marked[tuple(frames)] += calls
    return marked


def _in_order(frames: Path_, truth: Path_) -> int:
    """How many of frames appear in truth in the same order (a subsequence): all of them
    unless the agent reported a frame gdb does not have or in another order."""
    position, matched = 0, 0
    for frame in frames:
        try:
            position = truth.index(frame, position) + 1
            matched += 1
        except ValueError:
            return matched
    return matched


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_paths_equal_gdbs_backtraces(case: Case, kafka_bootstrap: str, tmp_path: Path) -> None:
    _compare_with_gdb(case, kafka_bootstrap, tmp_path, short_lived=False)


SHORT_LIVED = [c for c in CASES if c.name in ("c-O2-frameless-libz", "c-O2-frameless-dlopen-libz", "python3-zlib",
                                               "rust-release", "golang")]


@pytest.mark.parametrize("case", SHORT_LIVED, ids=[c.name for c in SHORT_LIVED])
def test_a_short_lived_process_gets_gdbs_paths_from_its_first_call(case: Case, kafka_bootstrap: str,
                                                                  tmp_path: Path) -> None:
    """Started under the agent and run straight through to its exit: the process is held at
    start-up or at its dlopen of libz (agent.hold_processes) and its table loaded then, so
    its very first call is walked as gdb sees it and attributed after it has exited."""
    _compare_with_gdb(case, kafka_bootstrap, tmp_path, short_lived=True)


def _compare_with_gdb(case: Case, kafka_bootstrap: str, tmp_path: Path, short_lived: bool) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed (scripts/bootstrap.sh installs it)")
    binary = _build(case, tmp_path)
    private = _private_library(case, tmp_path)
    truth = _gdb_paths(binary, case, tmp_path, private, with_warm_up=short_lived)
    # The premise: the true paths, several frames deep (with the warm-up call: maybe one more,
    # maybe shallow).
    expected = {case.true_paths, case.true_paths + 1} if short_lived else {case.true_paths}
    assert len(truth) in expected and sum(len(p) < 5 for p in truth) <= short_lived, \
        f"the premise: gdb saw {len(truth)} paths:\n{_show(truth)}"
    truth = _evaluation_loops_marked(_to_libc_start(truth))

    observed, events = _agent_paths(binary, case, kafka_bootstrap, tmp_path, private, short_lived)
    observed = _evaluation_loops_marked(_to_libc_start(observed))

    # As many distinct paths as gdb saw, each one gdb's (>= 95 % of its frames, in order,
    # nothing gdb does not have), with exactly the calls made through it.
    assert len(observed) == len(truth), \
        f"{len(observed)} paths reported for {len(truth)} true ones:\n{_show(observed)}\ngdb's:\n{_show(truth)}"
    for path, calls in observed.items():
        candidates = [t for t in truth if path and t[0] == path[0] and _in_order(path, t) == len(path)]
        assert candidates, (f"a reported path with a frame gdb does not have (junk) or out of order:\n"
                            f"{_show(Counter({path: calls}))}\ngdb's:\n{_show(truth)}")
        # The path itself when gdb has it: two of gdb's paths may differ only in frames one
        # of them lacks (as two loop calls do once marked).
        true_path = path if path in candidates else max(candidates, key=len)
        assert len(path) >= 0.95 * len(true_path), f"{len(path)} of gdb's {len(true_path)} frames: {path}"
        assert calls == truth[true_path], (f"{calls} calls reported on {path}, gdb saw {truth[true_path]}\n"
                                           + _agent_evidence(tmp_path, events))
    assert sorted(observed.values()) == sorted(truth.values()), _agent_evidence(tmp_path, events)
    complete = [e for e in events if not e["stack_truncated"]]
    assert complete == events, [e["truncation_reason"] for e in events]
