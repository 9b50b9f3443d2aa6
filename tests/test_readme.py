"""The README's commands, run as written: every ```sh and ```python block, in order, as one
script in a fresh directory, with `signals` on PATH as scripts/bootstrap.sh leaves it.

Three things are not run here, each for a stated reason: `./scripts/test.sh` (it is this
test suite), the benchmark suite (eight minutes; `benchmarks/` has its own smoke test), and
the set-up half of `./scripts/demo.sh` (scripts/bootstrap.sh, which the test command itself
has just run; the rest of demo.sh is `signals demo "$@"`, run here as such)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOT_RUN = {
    "./scripts/test.sh": "this test suite itself",
    "python -m benchmarks": "the eight-minute benchmark suite",
}


def readme_script(readme: str, workdir: Path) -> str:
    """The README's blocks as one bash script; python blocks run with this interpreter."""
    lines = ["set -euo pipefail"]
    for number, (language, body) in enumerate(BLOCK.findall(readme)):
        if language == "python":
            path = workdir / f"block{number}.py"
            path.write_text(body)
            lines.append(f"{sys.executable} {path}")
            continue
        for line in body.splitlines():
            if any(marker in line for marker in NOT_RUN):
                continue
            lines.append(line.replace("./scripts/demo.sh", "signals demo"))
    return "\n".join(lines) + "\n"


def test_the_readme_blocks_are_all_found(tmp_path: Path) -> None:
    script = readme_script(README.read_text(), tmp_path)
    for needed in ("signals demo", "signals watch", "signals export --format flamegraph", "signals report",
                   "signals capture modules", "signals replay", "signals processor", f"{tmp_path}/block"):
        assert needed in script, needed


def test_the_readme_commands_work_as_written(kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "readme.sh"
    script.write_text(readme_script(README.read_text(), tmp_path))
    bin_dir = Path(sys.prefix) / "bin"  # the virtualenv's bin, where `pip install -e .` put `signals`
    if not (bin_dir / "signals").exists():
        # A checkout used through PYTHONPATH, not installed: the same entry point, by a shim.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "signals").write_text(f'#!/bin/sh\nexec {sys.executable} -m runtime_signals.cli "$@"\n')
        (bin_dir / "signals").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env.pop("SIGNALS_KAFKA__TOPIC_PREFIX", None)
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, check=False, capture_output=True, text=True, timeout=600, env=env)
    out = done.stdout
    assert done.returncode == 0, f"{script} failed:\n{out[-4000:]}\n{done.stderr[-4000:]}"
    # The demo's summary, then the live view, the answer, the pictures and the report.
    assert "__libc_start_call_main → main → handle_upload → decode_image → parse_image_header" in out
    assert "provisional tally: 12 calls on 2 path(s)" in out
    assert "function decode_image: REACHED" in out
    assert "exit 3: not observed (3), did you mean shown" in out and "did you mean: decode_image?" in out
    assert (tmp_path / "paths.svg").read_text().startswith("<svg")
    assert "CVE-2099-0001" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.openvex.json").exists() and (tmp_path / "report.cdx.json").exists()
    # The replay reprocessed into the same summaries, and the library read them.
    assert "byte for byte" in out
    assert re.search(r"^True 12 \[", out, re.MULTILINE), out[-3000:]
    assert re.search(r"^12$", out, re.MULTILINE), out[-3000:]
