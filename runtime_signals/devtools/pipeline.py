"""The whole pipeline on one machine, as child processes: for the demo and the tests.

Each part runs through the real `signals` command line, exactly as an operator would
start it, so what the tests exercise is what ships.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from runtime_signals.schemas.topics import TopicNames


class PipelineError(RuntimeError):
    """A part of the local pipeline did not start or stop as expected."""


def signals_command(*args: str) -> list[str]:
    """argv that runs `signals ARGS` with this interpreter."""
    return [sys.executable, "-m", "runtime_signals.cli", *args]


@dataclass
class LocalPipeline:
    """Agent + processor on one broker; use as a context manager."""

    bootstrap: str
    probes: list[str]
    topic_prefix: str = ""
    window_ms: int = 2000
    lateness_ms: int = 500
    log_dir: Path = field(default_factory=lambda: Path("."))
    processor_app_id: str = "runtime-signals-processor"
    env: Mapping[str, str] = field(default_factory=dict)  # settings for both (SIGNALS_AGENT__..., ...)
    _agent: subprocess.Popen[bytes] | None = None
    # Processor workers by name ("processor" unless a test runs several); each logs to NAME.log.
    _processors: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def topics(self) -> TopicNames:
        return TopicNames().with_prefix(self.topic_prefix)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Appended: a restarted worker's log follows the one it replaces.
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 -- the child keeps it; closed on stop
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def start_processor(self, name: str = "processor", extra_args: Sequence[str] = (),
                        wait_ready_s: float | None = None) -> None:
        """Start a processor worker (of group processor_app_id) named `name`; with
        wait_ready_s, return once it has subscribed."""
        path = self.log_dir / f"{name}.log"
        log_offset = path.stat().st_size if path.exists() else 0
        self._processors[name] = self._spawn(name, signals_command(
            "processor", "--bootstrap", self.bootstrap, "--topic-prefix", self.topic_prefix,
            "--window-ms", str(self.window_ms), "--allowed-lateness-ms", str(self.lateness_ms),
            "--app-id", self.processor_app_id, *extra_args,
        ))
        if wait_ready_s is not None:
            self._wait_for_line(name, "processor ready", wait_ready_s, log_offset)

    def kill_processor(self, name: str = "processor") -> None:
        """kill -9 a worker: no revoke, no flush, no last checkpoint."""
        process = self._processors.get(name)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def start_agent(self, timeout_s: float = 120.0, extra_args: Sequence[str] = ()) -> None:
        argv = ["agent", "--bootstrap", self.bootstrap, "--topic-prefix", self.topic_prefix,
                "--watermark-interval-ms", "200", *extra_args]
        for probe in self.probes:
            argv += ["--probe", probe]
        self._agent = self._spawn("agent", signals_command(*argv))
        self._wait_for_line("agent", "agent ready", timeout_s)

    def _wait_for_line(self, name: str, needle: str, timeout_s: float, after_byte: int = 0) -> None:
        path = self.log_dir / f"{name}.log"
        process = self._agent if name == "agent" else self._processors.get(name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = path.read_bytes()[after_byte:].decode(errors="replace") if path.exists() else ""
            if needle in text:
                return
            if process is not None and process.poll() is not None:
                raise PipelineError(f"{name} exited with {process.returncode}:\n{text[-4000:]}")
            time.sleep(0.2)
        raise PipelineError(f"{name} did not print {needle!r} within {timeout_s:.0f}s; see {path}")

    def stop_agent(self, timeout_s: float = 60.0) -> int:
        """SIGTERM the agent (it drains and flushes) and return its exit code."""
        return self._stop(self._agent, "agent", timeout_s)

    def stop_processor(self, timeout_s: float = 30.0, name: str = "processor") -> int:
        """SIGTERM a worker (it checkpoints, leaves the group) and return its exit code."""
        return self._stop(self._processors.get(name), name, timeout_s)

    def _stop(self, process: subprocess.Popen[bytes] | None, name: str, timeout_s: float) -> int:
        if process is None or process.poll() is not None:
            return process.returncode if process is not None else 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise PipelineError(f"{name} did not stop within {timeout_s:.0f}s of SIGTERM; killed") from None

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> LocalPipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for process in (self._agent, *self._processors.values()):
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(30)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
