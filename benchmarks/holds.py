"""What a loader hold costs (agent/loadwatch.py): a short-lived program linked against a
library a target names is started RUNS times without the loader hook, then RUNS times with
it (each run held once, at start-up, captured as the agent does, and resumed). Reports
the median wall time of a run each way and the agent-side time per hold. Runs alternate
(the hook in place, the library's name in the kernel's list or not), so the difference is
the hold's alone, whatever else the machine is doing.

    sudo python -m benchmarks.holds [--runs 200]

Not a stage of the suite (it needs no broker): the figure is quoted in docs/attribution.md.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from runtime_signals.agent.fileid import BackingFiles
from runtime_signals.agent.loadwatch import LoadWatch, NameKey
from runtime_signals.agent.processes import ProcessTable
from runtime_signals.config.schema import TargetSettings

LIBRARY = "__attribute__((noinline)) int plugin_entry(int x) { return x * 3; }\n"
PROGRAM = "int plugin_entry(int x);\nint main(void) { return plugin_entry(1) == 3 ? 0 : 1; }\n"


def _build(base: Path, tag: str) -> Path:
    (base / "lib.c").write_text(LIBRARY)
    (base / "main.c").write_text(PROGRAM)
    library = base / f"libholdbench{tag}.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(base / "lib.c")], check=True)
    program = base / f"holdbench{tag}"
    subprocess.run(["gcc", "-O2", "-o", str(program), str(base / "main.c"), f"-L{base}", f"-Wl,-rpath,{base}",
                    f"-lholdbench{tag}"], check=True)
    return program


def _wall_ms(program: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(program)], check=True)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]  # the kernel side holds by library name: hold only our runs
    with tempfile.TemporaryDirectory() as tmp:
        program = _build(Path(tmp), tag)
        _wall_ms(program, 20)  # warm the page cache and the loader
        table = ProcessTable()  # the agent's answer: identity, maps, digests, packages (cached after the first)
        watch = LoadWatch([TargetSettings(binary=f"holdbench{tag}", symbols=["plugin_entry"])],
                          lambda pid, _kind: table.capture(pid) and None, backing=BackingFiles())
        watch.hook_all()
        stop = threading.Event()
        thread = watch.run(stop)
        stems = watch._bpf[b"library_stems"]  # a benchmark reaches in to switch holds
        key = NameKey(f"libholdbench{tag}.so".encode())
        free: list[float] = []
        held: list[float] = []
        for _ in range(args.runs):
            del stems[key]
            free += _wall_ms(program, 1)
            stems[key] = ctypes.c_uint8(1)
            held += _wall_ms(program, 1)
        counters = watch.counters()
        stop.set()
        thread.join(10)
    answered = max(1, counters.get("holds_answered", 0))
    print(f"runs: {args.runs} each way; holds answered: {counters.get('holds_answered', 0)}")
    print(f"median wall time of a run: {statistics.median(free):.2f} ms unheld, {statistics.median(held):.2f} ms held "
          f"(+{statistics.median(held) - statistics.median(free):.2f} ms)")
    print(f"agent-side time per hold (receive, capture, SIGCONT): {counters.get('held_ns_total', 0) / answered / 1e6:.3f} ms")


if __name__ == "__main__":
    main()
