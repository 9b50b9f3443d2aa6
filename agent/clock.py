"""Boot-time to wall-clock conversion.

The BPF program stamps calls with CLOCK_BOOTTIME (monotonic, counts suspend). Windows
need a wall-clock instant comparable across nodes, so the agent adds the node's
boot time, re-measured periodically to follow NTP slews.
"""

from __future__ import annotations

import time


def boot_to_wall_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_BOOTTIME, read back to back (tightest pair of three tries)."""
    best: tuple[int, int] | None = None
    for _ in range(3):
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall = time.clock_gettime_ns(time.CLOCK_REALTIME)
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        spread = after - before
        offset = wall - (before + after) // 2
        if best is None or spread < best[0]:
            best = (spread, offset)
    assert best is not None
    return best[1]


class BootClock:
    """Converts boot-time nanoseconds to wall-clock microseconds since the epoch."""

    def __init__(self, refresh_interval_ns: int = 10_000_000_000) -> None:
        self._refresh_interval_ns = refresh_interval_ns
        self._offset_ns = boot_to_wall_offset_ns()
        self._measured_at_ns = time.monotonic_ns()

    def wall_us(self, boot_ns: int) -> int:
        return (boot_ns + self.offset_ns()) // 1000

    def offset_ns(self) -> int:
        """CLOCK_REALTIME - CLOCK_BOOTTIME as this clock converts now (re-measured when due)."""
        now = time.monotonic_ns()
        if now - self._measured_at_ns > self._refresh_interval_ns:
            self._offset_ns = boot_to_wall_offset_ns()
            self._measured_at_ns = now
        return self._offset_ns

    @staticmethod
    def now_boot_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
