"""The C target (targets/hot.c) and the floor uprobe (noop.bpf.c).

A uprobe belongs to a file (its inode), not to a process, so the target is copied once per
role: the unprobed copy, the copy under the no-op uprobe and the copy under the agent can
run one after the other in the same minute, with every probe in place all along.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .procs import BenchmarkError

HERE = Path(__file__).resolve().parent
TARGET_SOURCE = HERE / "targets" / "hot.c"
NOOP_SOURCE = HERE / "noop.bpf.c"
SYMBOL = "bench_target"     # starts with `push %rbp`: the kernel emulates it
LEAF_SYMBOL = "bench_leaf"  # starts with a rip-relative load: single-stepped out of line
MAX_PATHS = 1000            # callers[] in hot.c


def build_target(out_dir: Path) -> Path:
    """Compile hot.c into out_dir (once per source content): frame pointers on, no inlining,
    like the demo workload, so every call path survives as written."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchmarkError("no C compiler (cc or gcc) on PATH to build benchmarks/targets/hot.c")
    digest = hashlib.sha256(TARGET_SOURCE.read_bytes()).hexdigest()[:12]
    binary = out_dir / f"hot-{digest}"
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([compiler, "-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline",
                        "-o", str(binary), str(TARGET_SOURCE)], check=True)
    return binary


def copy_for(binary: Path, role: str) -> Path:
    """A copy of the target with its own inode, for one role (unprobed, noop, agent...)."""
    copy = binary.with_name(f"{binary.name}-{role}")
    shutil.copy2(binary, copy)
    return copy


@dataclass(frozen=True)
class Timed:
    """What `hot time` printed: the loop's cost per call."""

    calls: int
    paths: int
    work: int
    ns_per_call: float

    @property
    def calls_per_s(self) -> float:
        return 1e9 / self.ns_per_call if self.ns_per_call else 0.0


class RunningTarget:
    """A target that has finished its loop and waits (stdin open) so that the agent can
    still read its /proc/<pid>/maps; release() lets it exit."""

    def __init__(self, argv: list[str]) -> None:
        self.started_monotonic_s = time.monotonic()
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.finished_monotonic_s = time.monotonic()
        if not line.startswith("calls="):
            self.release()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise BenchmarkError(f"{' '.join(argv)} printed {line!r} instead of its timing: {stderr}")
        fields = dict(part.split("=", 1) for part in line.split())
        self.timed = Timed(int(fields["calls"]), int(fields["paths"]), int(fields["work"]),
                           float(fields["ns_per_call"]))

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait(30)

    def __enter__(self) -> RunningTarget:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def timed_argv(binary: Path, calls: int, paths: int = 1, work: int = 0, leaf: bool = False) -> list[str]:
    if leaf:
        return [str(binary), "leaf", str(calls)]
    return [str(binary), "time", str(calls), str(paths), str(work)]


def run_timed(binary: Path, calls: int, paths: int = 1, work: int = 0, leaf: bool = False) -> Timed:
    with RunningTarget(timed_argv(binary, calls, paths, work, leaf)) as target:
        return target.timed


def calibrate_work(binary: Path, target_ns_per_call: float) -> int:
    """Spin iterations per call that make the unprobed loop cost about target_ns_per_call."""
    probe_work = 1000
    per_iteration_ns = run_timed(binary, 20_000, 1, probe_work).ns_per_call / probe_work
    return max(0, int(target_ns_per_call / max(per_iteration_ns, 1e-3)))


class NoopProbe:
    """noop.bpf.c loaded with bcc: the floor every uprobe pays."""

    def __init__(self) -> None:
        try:
            import bcc
        except ImportError as exc:
            raise BenchmarkError("the bcc Python module is not importable: run the benchmarks with "
                                 "the project's virtualenv (scripts/bootstrap.sh makes bcc visible)") from exc
        self._bpf = bcc.BPF(src_file=str(NOOP_SOURCE).encode())
        self._attached: list[tuple[bytes, bytes]] = []

    def attach(self, binary: Path, symbol: str) -> None:
        self._bpf.attach_uprobe(name=str(binary).encode(), sym=symbol.encode(), fn_name=b"on_call")
        self._attached.append((str(binary).encode(), symbol.encode()))

    def hits(self) -> int:
        return int(sum(self._bpf["hits"][ctypes.c_int(0)]))

    def close(self) -> None:
        self._bpf.cleanup()
