"""Building the demo workload (runtime_signals/devtools/data/workload.c) with the system C compiler."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

WORKLOAD_SOURCE = Path(__file__).resolve().parent / "data" / "workload.c"
PROBED_SYMBOL = "parse_image_header"


def build_workload(out_dir: Path, source: Path = WORKLOAD_SOURCE) -> Path:
    """Compile the workload into out_dir (once per source content) and return its path.
    Frame pointers on, inlining off: the call paths must survive as written."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH to build the demo workload")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = out_dir / f"workload-{digest}"
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [compiler, "-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o", str(binary), str(source)],
            check=True,
        )
    return binary
