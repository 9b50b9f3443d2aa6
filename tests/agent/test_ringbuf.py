"""agent/ringbuf.py against a real BPF ring buffer: every record the program sent is read
whole, in order, across many wraps of a small ring, by the agent's own reader and by
libbpf's (the reader where the agent does not read the ring's memory itself)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runtime_signals.agent import probes
from runtime_signals.agent.probes import CallTracer, ProbeLimits, ProbeSpec, RawCall, TracerSettings

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("direct", [True, False], ids=["agent-reader", "libbpf-reader"])
def test_every_record_sent_is_read_whole_by_either_reader(hotloop: Path, monkeypatch: pytest.MonkeyPatch,
                                                           direct: bool) -> None:
    monkeypatch.setattr(probes, "READ_RING_DIRECTLY", direct)
    tracer = CallTracer(TracerSettings(ringbuf_pages=4))  # 16 KiB: about 14 records, wrapped over and over
    collected: list[RawCall] = []
    try:
        tracer.on_event(collected.append)
        assert (tracer._reader is not None) is direct
        probe = tracer.attach(ProbeSpec(str(hotloop), "hot"), ProbeLimits(dedup=False))
        target = subprocess.Popen([str(hotloop), "300", "0", "0"], stdout=subprocess.PIPE, text=True)
        while target.poll() is None:
            tracer.poll(5)
        tracer.detach(probe)
        tracer.drain()
        counters = tracer.probe_counters(probe)
        stdout = target.stdout.read() if target.stdout else ""
    finally:
        tracer.close()
    # Every record the program put in the ring reached the callback, once; the rest were
    # counted as dropped when the ring was full (a tight loop outruns any reader).
    assert counters["sent"] == len(collected) > 1_000, counters
    assert counters["calls"] == counters["sent"] + counters["drop_ringbuf_full"], counters
    assert {call.pid for call in collected} == {target.pid}
    assert all(call.count == 1 for call in collected)
    times = [call.boot_ns for call in collected]
    assert times == sorted(times)  # one thread: the ring's order is the calls' order
    # Each record whole: hot() at the top, and under it one of the program's two paths, as
    # many times as the program says it called each with the probe in place.
    callers = {call.frames[1] for call in collected}
    assert len(callers) == 2, callers
    assert all(len(call.frames) >= 3 for call in collected)
    assert "path_a" in stdout and "path_b" in stdout
