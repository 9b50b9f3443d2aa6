"""Ground truth for the unwinding tests: Debian's python3 calling libz's deflate through
its zlib module. argv: CALLS [GOFILE], as unwind_corpus.c: one warm-up call, then (with
GOFILE) "warm" and a wait for the file, then CALLS calls, then a moment's stay."""

import os
import sys
import time
import zlib

DATA = bytes(range(256)) * 16


def compress(data):
    return zlib.compress(data, 6)


def handle(data):
    return len(compress(data))


zlib.compress(b"warm-up")
if len(sys.argv) > 2:
    print("warm", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.05)
total = 0
for _ in range(int(sys.argv[1])):
    total += handle(DATA)
print(total, flush=True)
if len(sys.argv) > 2:
    time.sleep(1)
