"""Child processes of the benchmarks (agents, workers, floors) and what /proc says of them."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BenchmarkError(RuntimeError):
    """Root of the benchmarks' errors: a part did not start, stop or answer as expected."""


def signals_argv(*args: str) -> list[str]:
    """argv running `signals ARGS` with this interpreter, as an operator would."""
    return [sys.executable, "-m", "runtime_signals.cli", *args]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (every thread), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS_PER_S


def memory_bytes(pid: int) -> dict[str, int]:
    """Resident set now (VmRSS) and its peak (VmHWM) of a process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return {"rss_bytes": values.get("VmRSS", 0), "peak_rss_bytes": values.get("VmHWM", 0)}


def reset_peak_rss(pid: int) -> None:
    """Restart VmHWM from the current RSS (proc(5): clear_refs 5), so each stage's peak
    is its own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def flags_offered(command: str) -> set[str]:
    """Long options `signals COMMAND --help` lists now: the suite uses a part's newer
    flags only where that part offers them."""
    done = subprocess.run(signals_argv(command, "--help"), capture_output=True, text=True, timeout=60)
    return set(re.findall(r"(--[a-z][a-z0-9-]+)", done.stdout))


class Child:
    """A long-running part (agent, worker) with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, needle: str, timeout_s: float, count: int = 1) -> None:
        """Wait until the log holds needle count times; fail if the process exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log().count(needle) >= count:
                return
            if self.process.poll() is not None:
                raise BenchmarkError(f"{self.name} exited with {self.process.returncode} before "
                                     f"printing {needle!r}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise BenchmarkError(f"{self.name} did not print {needle!r} within {timeout_s:.0f}s; "
                             f"see {self.log_path}")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (parts drain and flush on it), then SIGKILL the group if it hangs."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise BenchmarkError(f"{self.name} did not stop within {timeout_s:.0f}s of SIGTERM; "
                                 f"killed; see {self.log_path}") from None

    def __enter__(self) -> Child:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process.poll() is None:
            try:
                self.stop(timeout_s=30.0)
            except BenchmarkError:
                pass


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(fraction * len(ordered))) - 1)]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def epoch_micros(value: int | datetime) -> int:
    """Microseconds since the epoch of an Avro timestamp-micros, which fastavro may decode
    to an aware datetime; exact (no float seconds)."""
    if isinstance(value, int):
        return value
    return (value - _EPOCH) // timedelta(microseconds=1)
