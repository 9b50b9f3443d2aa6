"""Benchmark: what the Python frame walk adds to a probed native call (issue 14, point 6).

Debian's python3.11 calls libz's crc32 (zlib.crc32 of one byte: almost no work) N times from
a function DEPTH Python calls deep. Each role loads its own copy of libz
(LD_LIBRARY_PATH), so a uprobe on one copy fires in that role only:
  - unprobed: no uprobe;
  - no-op: the counting no-op uprobe (benchmarks/noop.bpf.c), the floor every uprobe pays;
  - native path: `signals agent` probing crc32, the interpreter a copy of python3.11 under
    another name, which the agent does not describe: only the native walk runs;
  - Python frames: the same agent and probe, python3.11 itself: the native walk, then the
    Python walk (thread state lookup, DEPTH + 2 frames, names copied once per code object).
Medians of REPEATS runs, in turn. Reported: ns per call of each, the Python walk's extra
ns per call, and both probed roles as ratios of the no-op floor.

    python -m benchmarks.python_frames --bootstrap 127.0.0.1:19092 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from . import native
from .kafka_io import pipeline_topics
from .procs import BenchmarkError, Child, median, signals_argv

PYTHON = Path("/usr/bin/python3.11")
LIBZ = Path("/lib/x86_64-linux-gnu/libz.so.1")
WORKLOAD = """\
import sys, time, zlib
def nest(depth, calls):
    if depth:
        return nest(depth - 1, calls)
    data = b"x"
    start = time.perf_counter_ns()
    for _ in range(calls):
        zlib.crc32(data)
    return time.perf_counter_ns() - start
zlib.crc32(b"warm")
print("warm", flush=True)
sys.stdin.readline()
calls = int(sys.argv[1])
print(f"ns_per_call={nest(int(sys.argv[2]), calls) / calls}", flush=True)
"""


def _timed(interpreter: Path, library_dir: Path, script: Path, calls: int, depth: int, pause_s: float) -> float:
    env = dict(os.environ, LD_LIBRARY_PATH=str(library_dir), PYTHONHOME="/usr")
    process = subprocess.Popen([str(interpreter), str(script), str(calls), str(depth)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdin is not None and process.stdout is not None
    try:
        if process.stdout.readline().strip() != "warm":
            raise BenchmarkError(f"{interpreter} {script} did not start")
        # The agent meets the process at its warm-up call and writes its tables.
        subprocess.run(["sleep", str(pause_s)], check=True)
        process.stdin.write("go\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line.startswith("ns_per_call="):
            raise BenchmarkError(f"the workload printed {line!r}")
        return float(line.split("=", 1)[1])
    finally:
        process.kill()
        process.wait()


def run(bootstrap: str, work_dir: Path, calls: int, depth: int, repeats: int) -> dict[str, Any]:
    if not PYTHON.exists() or not LIBZ.exists():
        raise BenchmarkError(f"{PYTHON} and {LIBZ} are needed (Debian's python3.11 and zlib1g)")
    script = work_dir / "crc_loop.py"
    work_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(WORKLOAD)
    libs = {}
    for role in ("unprobed", "noop", "agent"):
        libs[role] = work_dir / f"lib-{role}"
        libs[role].mkdir(exist_ok=True)
        shutil.copy2(LIBZ, libs[role] / LIBZ.name)
    undescribed = work_dir / "interp-undescribed"  # not a python3.X name: the agent does not describe it
    shutil.copy2(PYTHON, undescribed)
    prefix = f"bench-pyframes-{uuid.uuid4().hex[:8]}."
    pipeline_topics(bootstrap, prefix, partitions=1)
    agent_argv = signals_argv("agent", "--bootstrap", bootstrap, "--topic-prefix", prefix, "--no-budget",
                              "--watermark-interval-ms", "200", "--probe", f"{libs['agent'] / LIBZ.name}:crc32")
    samples: dict[str, list[float]] = {"unprobed": [], "noop": [], "native_path": [], "python_frames": []}
    noop = native.NoopProbe()
    try:
        noop.attach(libs["noop"] / LIBZ.name, "crc32")
        with Child("agent-pyframes", agent_argv, work_dir / "logs") as agent:
            agent.wait_for("agent ready", 180)
            for interpreter in (PYTHON, undescribed):  # warm-up: rules built, cached
                _timed(interpreter, libs["agent"], script, 1000, depth, 3.0)
            for _ in range(repeats):
                samples["unprobed"].append(_timed(PYTHON, libs["unprobed"], script, calls, depth, 0.5))
                samples["noop"].append(_timed(PYTHON, libs["noop"], script, calls, depth, 0.5))
                samples["native_path"].append(_timed(undescribed, libs["agent"], script, calls, depth, 1.0))
                samples["python_frames"].append(_timed(PYTHON, libs["agent"], script, calls, depth, 1.0))
            if agent.stop() != 0:
                raise BenchmarkError(f"the agent exited with {agent.process.returncode}; see {agent.log_path}")
    finally:
        noop.close()
    unprobed, noop_ns, native_ns, python_ns = (median(samples[k]) for k in
                                               ("unprobed", "noop", "native_path", "python_frames"))
    floor = noop_ns - unprobed
    return {"interpreter": str(PYTHON), "calls": calls, "python_depth": depth, "repeats": repeats,
            "unprobed_ns_per_call": unprobed, "noop_ns_per_call": noop_ns,
            "native_path_ns_per_call": native_ns, "python_frames_ns_per_call": python_ns,
            "python_walk_extra_ns_per_call": python_ns - native_ns,
            "native_path_vs_floor": (native_ns - unprobed) / floor if floor > 0 else None,
            "python_frames_vs_floor": (python_ns - unprobed) / floor if floor > 0 else None,
            "runs_ns_per_call": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.python_frames", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--depth", type=int, default=10, help="Python calls between <module> and the loop")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-pyframes"))
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = run(args.bootstrap, args.work_dir, args.calls, args.depth, args.repeats)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
