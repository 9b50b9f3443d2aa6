"""The on-disk spool: FIFO across segments and restarts, records put back ahead of the
rest, a byte bound that refuses rather than grows, and torn records skipped."""

from __future__ import annotations

from pathlib import Path

from runtime_signals.agent.spool import Spool, SpoolRecord


def _record(n: int, calls: int = 1, size: int = 20) -> SpoolRecord:
    return SpoolRecord("signals.raw.v1", f"key-{n}".encode(), bytes([n % 256]) * size, None if n % 2 else n % 3,
                       calls, (("origin", b"test"), ("empty", None)))


def _drain(spool: Spool) -> list[SpoolRecord]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record)
        spool.pop()
    return out


def test_records_come_back_in_order_across_segments_and_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    records = [_record(n, calls=n) for n in range(30)]
    for record in records:
        assert spool.append(record)
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert [spool.peek(), spool.peek()] == [records[0], records[0]]  # peek does not consume
    spool.pop()
    spool.close()

    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    assert len(reopened) == 29 and reopened.calls == sum(range(1, 30))
    assert _drain(reopened) == records[1:]
    assert not reopened and reopened.bytes == 0 and reopened.calls == 0
    reopened.close()
    assert not list(tmp_path.glob("*.seg"))


def test_prepended_records_go_before_everything_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=150)
    for n in range(5):
        spool.append(_record(n))
    spool.pop()  # the head segment is partly consumed
    assert spool.prepend([_record(100), _record(101)]) == []
    spool.close()
    assert [r.key for r in _drain(Spool(tmp_path, max_bytes=1 << 20))] == \
        [b"key-100", b"key-101", b"key-1", b"key-2", b"key-3", b"key-4"]


def test_the_byte_bound_refuses_records_instead_of_growing(tmp_path: Path) -> None:
    one = len(_record(0).encode())
    spool = Spool(tmp_path, max_bytes=3 * one)
    assert [spool.append(_record(n)) for n in range(4)] == [True, True, True, False]
    assert spool.bytes == 3 * one
    refused = spool.prepend([_record(7), _record(8)])
    assert refused == [_record(7), _record(8)]
    spool.pop()
    assert spool.append(_record(9))


def test_a_torn_record_from_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for n in range(3):
        spool.append(_record(n))
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # the last record lost its tail mid-write

    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [r.key for r in _drain(reopened)] == [b"key-0", b"key-1"]
    assert reopened.corrupt_records == 1 and not reopened


_TORN_CURSOR_CHILD = r"""
import os, signal, sys
from pathlib import Path
from runtime_signals.agent import spool as spool_module
from tests.agent.test_spool import _record

directory = Path(sys.argv[1])
spool = spool_module.Spool(directory, max_bytes=1 << 20, segment_bytes=1 << 20)
for n in range(300):
    spool.append(_record(n))
for _ in range(100):  # the cursor is written after 100 pops
    spool.peek(); spool.pop()
real_write = os.write

def torn(fd, data):
    # The process dies half-way through writing the next cursor, as a SIGKILL or a power
    # cut may take it: whatever file that write goes to holds half of it.
    if data.endswith(b"\n") and data[:-1].isdigit():
        real_write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(fd, data)

os.write = torn
for _ in range(100):
    spool.peek(); spool.pop()
"""


def test_a_cursor_torn_by_a_crash_leaves_the_previous_one(tmp_path: Path) -> None:
    """Killed while writing its cursor, the spool resumes where the previous cursor says:
    at most 100 records are sent again, never the whole segment (an empty or half-written
    cursor would read as another offset)."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-c", _TORN_CURSOR_CHILD, str(tmp_path)], cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    assert reopened.peek() == _record(100)  # after the first 100: what the intact cursor said
    assert len(reopened) == 200
    reopened.close()
