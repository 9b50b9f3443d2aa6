"""The BPF C sources, shipped as package data so an installed agent can load them."""

from pathlib import Path

SOURCE_DIR: Path = Path(__file__).resolve().parent
CALLTRACE_SOURCE: Path = SOURCE_DIR / "calltrace.bpf.c"
CALLTRACE_HEADER: Path = SOURCE_DIR / "calltrace.h"
PYFUNC_SOURCE: Path = SOURCE_DIR / "pyfunc.bpf.c"
PYFUNC_HEADER: Path = SOURCE_DIR / "pyfunc.h"
LOADWATCH_SOURCE: Path = SOURCE_DIR / "loadwatch.bpf.c"
LOADWATCH_HEADER: Path = SOURCE_DIR / "loadwatch.h"
