"""Helpers for tests that run the real `signals agent` against a real broker: build a C
target, start and stop the agent with any flags, read a topic back and decode it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from runtime_signals.agent.symtab import read_symbol_table
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas import codec

TARGETS = Path(__file__).resolve().parent / "targets"
CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
STATISTICS = "io.runtimesignals.SignalStatistics"


def build_target(name: str, out_dir: Path) -> Path:
    """Compile tests/agent/targets/<name>.c with frame pointers, no inlining, no tail calls."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (scripts/bootstrap.sh installs gcc)"
    binary = out_dir / name
    subprocess.run([compiler, "-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-fno-optimize-sibling-calls",
                    "-o", str(binary), str(TARGETS / f"{name}.c")], check=True)
    return binary


@dataclass
class AgentProcess:
    """`signals agent ARGS` as a child process; a context manager that never leaves it running."""

    bootstrap: str
    topic_prefix: str
    probes: list[str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # settings as SIGNALS_* variables

    def start(self, timeout_s: float = 120.0) -> AgentProcess:
        argv = ["agent", "--bootstrap", self.bootstrap, "--topic-prefix", self.topic_prefix,
                "--watermark-interval-ms", "200", *self.extra_args]
        for probe in self.probes:
            argv += ["--probe", probe]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(signals_command(*argv), stdout=log, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, PYTHONUNBUFFERED="1", **self.env),
                                            start_new_session=True)
        self.wait_for("agent ready", timeout_s)
        return self

    def wait_for(self, needle: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited with {self.process.returncode}:\n{text[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"agent did not log {needle!r} within {timeout_s:.0f}s:\n{self.log()[-4000:]}")

    @property
    def metrics_port(self) -> int:
        match = re.search(r"agent metrics on port (\d+)", self.log())
        assert match, f"the agent did not say its metrics port:\n{self.log()[-2000:]}"
        return int(match.group(1))

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM (the agent collects, flushes or spools) and return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(f"agent ignored SIGTERM for {timeout_s:.0f}s:\n{self.log()[-4000:]}") from None
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def read_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) on every partition of topic, from the beginning to its current end."""
    reader = TopicReader(bootstrap, timeout_s=timeout_s)
    return [(r.key, r.value) for r in reader.read(topic, reader.whole_topic(topic)) if r.value is not None]


def decode_all(records: list[tuple[bytes | None, bytes]], schema: str) -> list[dict[str, Any]]:
    """The records written with `schema` (others, such as watermarks, are skipped), decoded."""
    registry = codec.SchemaRegistry.default()
    decoded = (codec.decode(value, registry) for _, value in records)
    return [d.record for d in decoded if d.schema_name == schema]


def last_statistics(bootstrap: str, topic: str) -> dict[str, Any]:
    reports = decode_all(read_all(bootstrap, topic), STATISTICS)
    assert reports, f"no SignalStatistics on {topic}"
    return max(reports, key=lambda r: r["reported_at_us"])


def calls_by_caller(events: list[dict[str, Any]], binary: Path) -> dict[str, int]:
    """observation_count summed by the name of the probed function's caller."""
    symbols = read_symbol_table(binary).symbols
    totals: dict[str, int] = defaultdict(int)
    for event in events:
        frames = event["stack_frames"]
        assert len(frames) >= 2, event
        offset = frames[-2]["binary_offset"]
        names = [s.name for s in symbols if s.file_offset <= offset < s.file_offset + s.size_bytes]
        totals[names[0] if names else hex(offset)] += event["observation_count"]
    return dict(totals)


def target_tally(stdout: str) -> dict[str, tuple[int, int, int]]:
    """hotloop's "<path> <attached> <detached> <ambiguous>" lines."""
    tally = {}
    for line in stdout.splitlines():
        name, attached, detached, ambiguous = line.split()
        tally[name] = (int(attached), int(detached), int(ambiguous))
    return tally


def wait_for_rules(agent: AgentProcess, pid: int, timeout_s: float = 240.0) -> None:
    """Until the agent has the rules of every file pid maps executable (or knows it has none)."""
    with open(f"/proc/{pid}/maps") as handle:
        paths = {line.split(maxsplit=5)[5].strip() for line in handle
                 if len(line.split()) >= 6 and "x" in line.split()[1] and line.split(maxsplit=5)[5].startswith("/")}
    # By digest: a file met first at another path (a private copy of a host library) is
    # logged under that path.
    digests = {p: "sha256:" + hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = agent.log()
        waiting = [p for p, d in digests.items() if f"[{d}] loaded" not in text and f"[{d}] (" not in text]
        if not waiting:
            return
        time.sleep(0.2)
    raise AssertionError(f"the agent did not load the rules of {waiting} in {timeout_s:.0f}s:\n{agent.log()[-3000:]}")


def fresh_topics(bootstrap: str, stem: str) -> tuple[str, Any]:
    """(prefix, its TopicNames) of a new topic prefix "<stem>-<random>.", its topics created."""
    import uuid

    from runtime_signals.devtools.demo import create_topics
    from runtime_signals.schemas.topics import TopicNames

    prefix = f"{stem}-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(bootstrap, names)
    return prefix, names
