"""The checks that keep the house in order, run with every test run: the import graph's
layers (import-linter contracts in pyproject.toml), ruff, mypy --strict, and what the
processor's process loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_the_import_graph_keeps_its_layers() -> None:
    done = _run(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and ", 0 broken" in done.stdout


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    # The contracts are live: the same check fails on a tree where the processor imports the agent.
    copy = tmp_path / "tree"
    subprocess.run(["cp", "-a", "--dereference", str(REPO / "runtime_signals"), str(copy)], check=True)
    (copy / "processor" / "leak.py").write_text("from runtime_signals.agent import probes\n")
    package = tmp_path / "pkg"
    package.mkdir()
    (copy).rename(package / "runtime_signals")
    env = {**os.environ, "PYTHONPATH": str(package)}
    done = subprocess.run([str(BIN / "lint-imports"), "--no-cache", "--config", str(REPO / "pyproject.toml")],
                          cwd=package, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode != 0
    assert "runtime_signals.processor.leak -> runtime_signals.agent.probes" in done.stdout


def test_ruff_is_clean() -> None:
    done = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_mypy_strict_is_clean() -> None:
    done = _run(str(BIN / "mypy"), "--cache-dir", "/dev/null")  # [tool.mypy]: strict, package runtime_signals
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_the_processor_process_loads_no_bpf_modules() -> None:
    probe = ("import sys, runtime_signals.cli, runtime_signals.cli.processor, runtime_signals.processor.app; "
             "print(sorted(m for m in sys.modules if m == 'bcc' or m.startswith(('bcc.', 'runtime_signals.bpf', "
             "'runtime_signals.agent.probes', 'runtime_signals.agent.bpfsys', 'runtime_signals.agent.tracefs'))))")
    done = _run(sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
