"""Event ids: random (version 4) UUIDs, one per call record the agent sends.

uuid.uuid4() reads 16 bytes from the kernel and builds a UUID object for every id; at tens
of thousands of records a second that was a twentieth of the agent's CPU. Here the random
bytes are read in blocks and each id is formatted straight from them. The processor counts a
record with an (agent, event id) it has seen once only (processor/aggregate.py), so two
records must never share an id: the pool is taken under a lock, whatever thread asks.
"""

from __future__ import annotations

import os
import threading

_BLOCK_IDS = 4096
# The variant's two top bits are 10 (RFC 9562); the nibble's two low bits stay random.
_VARIANT_NIBBLE = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}


class EventIds:
    """A source of random UUID strings (the form str(uuid.uuid4()) has)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = ""  # random bytes as hex, 32 digits an id
        self._at = 0

    def next(self) -> str:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool = os.urandom(16 * _BLOCK_IDS).hex()
                self._at = 0
            digits = self._pool[self._at:self._at + 32]
            self._at += 32
        # Version 4 in the 13th digit, the variant in the 17th.
        return (f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{_VARIANT_NIBBLE[digits[16]]}{digits[17:20]}-"
                f"{digits[20:]}")
