"""How long a probe plan takes to attach: N symbols of one file through the TargetManager's
run-time path (add_targets + scan, as agent/plans.py does on a plan record), then removed
(remove_targets). A C file with N noinline functions is built and mapped by a running process.

    sudo python -m benchmarks.plan_attach [--symbols 1000]

Each symbol is one uprobe made the way bcc exposes it: a perf event per (file, offset), then
a link of the BPF program to it (agent/probes.py CallTracer.attach). The kernel's uprobe
multi-link (BPF_TRACE_UPROBE_MULTI, Linux 6.6+) would attach them all in one call, but bcc
(Debian 12's 0.26) has no API for it, so it is not used; the figure is what is here.
Detaching reports two times: until the probes' calls stop being taken (their config marked
retired) and until the background closer has unregistered every uprobe (the kernel waits a
grace period per uprobe).
Not a stage of the suite (no broker); the figure is quoted in docs/plans.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from runtime_signals.agent.probes import CallTracer, TracerSettings
from runtime_signals.agent.targets import TargetManager
from runtime_signals.config.schema import TargetSettings


def _build(base: Path, count: int) -> Path:
    lines = [f"__attribute__((noinline)) int bench_fn_{i}(int x) {{ return x + {i}; }}" for i in range(count)]
    lines.append("#include <unistd.h>\nint main(void) { pause(); return bench_fn_0(0); }")
    source = base / "many.c"
    source.write_text("\n".join(lines) + "\n")
    binary = base / "many"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(source)], check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = _build(Path(tmp), args.symbols)
        process = subprocess.Popen([str(binary)])
        try:
            tracer = CallTracer(TracerSettings(max_probes=max(1024, args.symbols + 8)))
            lock = threading.Lock()
            manager = TargetManager([], [], attach=tracer.attach, detach=tracer.retire_many, attach_lock=lock,
                                    max_symbols_per_pattern=args.symbols)
            symbols = [f"bench_fn_{i}" for i in range(args.symbols)]
            started = time.perf_counter()
            indices = manager.add_targets([TargetSettings(binary=str(binary), symbols=symbols)], ["plan.bench"])
            manager.scan()
            attach_s = time.perf_counter() - started
            attached = len(manager.attached_for(indices[0]))
            started = time.perf_counter()
            detached = manager.remove_targets(indices)
            detach_s = time.perf_counter() - started  # calls no longer taken from here
            while tracer.uprobes_closing():
                time.sleep(0.05)
            unregister_s = time.perf_counter() - started
            tracer.close()
        finally:
            process.kill()
            process.wait()
    print(f"kernel {os.uname().release}; uprobe multi-link: not used (bcc has no API for it)")
    print(f"{attached} of {args.symbols} symbols attached in {attach_s:.2f} s "
          f"({attach_s / max(1, attached) * 1e3:.2f} ms per symbol, symbol lookup included); "
          f"{detached} detached (calls no longer taken) in {detach_s:.2f} s, their uprobes unregistered by the "
          f"background closer in {unregister_s:.1f} s")


if __name__ == "__main__":
    main()
