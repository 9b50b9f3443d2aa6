"""Long-lived agent caches stay bounded and forget exited processes (issue 15): real
processes, real files, the agent's own classes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from runtime_signals.agent.processes import ProcessTable
from runtime_signals.agent.procmaps import (
    MAX_CACHED_ADDRESSES,
    DigestCache,
    ProcessMaps,
)
from runtime_signals.agent.purl import PurlResolver

PROC = Path("/proc")


def _sleepers(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "30"]) for _ in range(count)]


def test_every_pid_keyed_table_is_emptied_when_the_processes_exit() -> None:
    table = ProcessTable()
    children = _sleepers(20)
    try:
        for child in children:
            table.describe(child.pid)
        table.resolve_frames(children[0].pid, (0x1,))  # reads its maps too
        sizes = table.sizes()
        assert sizes["processes"] == 20 and sizes["runtimes"] == 20 and sizes["containers"] == 20
        assert sizes["process_maps"] == 20  # read to tell the runtime
    finally:
        for child in children:
            child.kill()
            child.wait()
    # Forgotten one sweep late (calls read just after an exit still resolve): the first
    # sweep only notes them gone.
    assert table.forget_exited() == 0
    assert table.sizes()["gone_pending"] == 20
    assert table.forget_exited() == 20
    sizes = table.sizes()
    assert (sizes["processes"], sizes["runtimes"], sizes["containers"], sizes["process_maps"]) == (0, 0, 0, 0)
    assert sizes["gone_pending"] == 0


def test_one_os_package_index_serves_every_process_of_one_root() -> None:
    """Keyed by the package database, not by /proc/<pid>/root: a node starting millions of
    processes of one image reads its dpkg database once and keeps one index."""
    resolver = PurlResolver()
    children = _sleepers(5)
    try:
        purls = {resolver.purl(PROC / str(child.pid) / "root", "/usr/bin/sleep") for child in children}
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert len(purls) == 1 and next(iter(purls), "").startswith("pkg:deb/")
    assert resolver.sizes()["purl_os_indexes"] == 1
    assert resolver.sizes()["purl_files"] == 1


def test_digests_are_bounded_and_one_slow_file_does_not_hold_up_another(tmp_path: Path) -> None:
    cache = DigestCache(max_entries=2)
    for name in "abc":
        (tmp_path / name).write_bytes(name.encode() * 100)
        assert cache.digest(tmp_path / name) is not None
    assert len(cache) == 2
    # A FIFO with no writer: opening it to hash it blocks, like a read of a huge binary on
    # a slow disk. Another file must still be hashed at once (no lock held across a read).
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    slow = threading.Thread(target=cache.digest, args=(fifo,), daemon=True)
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    (tmp_path / "d").write_bytes(b"d")
    assert cache.digest(tmp_path / "d") is not None
    assert time.monotonic() - started < 1.0
    with open(fifo, "wb"):
        pass  # lets the blocked reader finish
    slow.join(5)
    assert not slow.is_alive()


def test_addresses_in_no_mapping_are_remembered_up_to_the_bound() -> None:
    maps = ProcessMaps(DigestCache())
    junk = range(8, 8 * (MAX_CACHED_ADDRESSES + 1000), 8)  # below any mapping of this process
    resolved = maps.resolve(os.getpid(), junk)
    assert all(r.path is None for r in resolved)
    assert 0 < maps.sizes()["address_misses"] <= MAX_CACHED_ADDRESSES
    maps.resolve(os.getpid(), range(1 << 30, (1 << 30) + 8 * 2000, 8))
    assert maps.sizes()["address_misses"] <= MAX_CACHED_ADDRESSES
    maps.forget(os.getpid())
    assert maps.sizes() == {"process_maps": 0, "resolved_addresses": 0, "address_misses": 0}




def test_the_pump_gets_pending_frames_instead_of_waiting_for_a_hash(tmp_path: Path) -> None:
    """With background hashing (the event pump's mode) a frame of a file not hashed yet
    comes back at once, pending, while the hasher reads it; asked again later it carries
    the digest. The hasher is held up here by a FIFO queued first, as by a huge binary."""
    table = ProcessTable(background_hashing=True)
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    assert table.digests.lookup(fifo) == (False, None)  # the hasher now blocks opening it
    child = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.1)
        text = next(m for m in ProcessMaps(DigestCache()).mappings(child.pid) if m.path.endswith("/sleep"))
        frames = table.resolve_frames(child.pid, (text.start,))
        assert frames[0].pending and frames[0].binary_digest is None and frames[0].path == text.path
        assert table.sizes()["digests_queued"] >= 1
        with open(fifo, "wb"):
            pass  # the hasher goes on to sleep's binary
        deadline = time.monotonic() + 10
        while table.resolve_frames(child.pid, (text.start,))[0].pending and time.monotonic() < deadline:
            time.sleep(0.05)
        done = table.resolve_frames(child.pid, (text.start,))[0]
        assert not done.pending and done.binary_digest == DigestCache().digest(f"/proc/{child.pid}/exe")
    finally:
        child.kill()
        child.wait()
