"""The worker caps glibc's malloc arenas (processor/app.py, limit_malloc_arenas): threads
that allocate at once get at most two arenas, where glibc would give each its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Eight threads churn small blocks at once; then malloc_info(3) lists the arenas ("heaps").
_PROGRAM = """
import ctypes, sys, tempfile, threading
from runtime_signals.processor.app import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "limit" else None)
def churn():
    for _ in range(2000):
        blocks = [bytearray(4096) for _ in range(64)]
        del blocks
threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile() as out:
    stream = ctypes.c_void_p(libc.fopen(out.name.encode(), b"w"))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(out.name).read().count("<heap nr="))
"""


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"},
                               "PYTHONPATH": str(REPO), **env}, check=True)
    limited, heaps = done.stdout.split()
    return limited, int(heaps)


def test_the_workers_threads_share_two_malloc_arenas() -> None:
    if not hasattr(__import__("ctypes").CDLL(None), "malloc_info"):
        pytest.skip("this C library is not glibc: no malloc arenas to cap")
    assert _arenas("limit") == ("True", 2)
    _, uncapped = _arenas("none")
    assert uncapped > 2  # what the cap prevents, on this machine


def test_an_operators_malloc_arena_max_wins() -> None:
    limited, _ = _arenas("limit", MALLOC_ARENA_MAX="4")
    assert limited == "False"
