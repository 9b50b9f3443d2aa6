"""The target scanner attaches a probe on its own thread while the pump reads calls: a call
that reaches the pump before the probe is registered still carries its target's name.
Real BPF, a real program, a real broker; the scanner is slowed down on purpose, between
the tracer linking the probe and the collector learning it."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from runtime_signals.agent.collector import Collector, CollectorSettings
from runtime_signals.agent.probes import AttachedProbe, CallTracer, ProbeLimits, TracerSettings
from runtime_signals.agent.publisher import ProducerSettings, Publisher
from runtime_signals.agent.selectors import TargetFilters
from runtime_signals.agent.targets import TargetManager
from runtime_signals.config.schema import TargetSettings
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, decode_all, read_all
from tests.agent.programs import compile_c
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

CALLS = 40
PROGRAM = r"""
#include <stdlib.h>
#include <unistd.h>
__attribute__((noinline)) int serve(int i) { asm volatile("" ::: "memory"); return i + 1; }
int main(int argc, char **argv) {
    int sum = 0;
    for (int i = 0; i < atoi(argv[1]); i++) { sum += serve(i); usleep(1000); }
    return sum == 0;
}
"""


def test_calls_made_between_attach_and_registration_are_named(kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    program = compile_c(PROGRAM, tmp_path / "server")
    prefix = f"registration-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)

    # Without dedup each call goes through the ring buffer, so the pump sees it at once.
    tracer = CallTracer(TracerSettings(ringbuf_pages=64))
    tracer.default_limits = ProbeLimits(dedup=False)
    filters = TargetFilters()
    collector = Collector(CollectorSettings(topics=names, watermark_interval_ms=100, shutdown_flush_timeout_s=10),
                          tracer, Publisher(ProducerSettings(kafka_bootstrap)), filters=filters)

    def slow_registration(probe: AttachedProbe) -> None:
        # The probe is linked: these calls fire it before the collector knows it, and the
        # pump (polling every 100 ms) has ten chances to read them before it does.
        subprocess.run([str(program), str(CALLS)], check=True)
        time.sleep(1.0)
        collector.register_probe(probe)

    stop = threading.Event()
    pump = threading.Thread(target=collector.run, args=(stop,), name="pump")
    try:
        pump.start()
        targets = TargetManager([TargetSettings(binary=str(program), symbols=["serve"])], ["agent.targets[0]"],
                                attach=tracer.attach, on_attached=slow_registration, filters=filters,
                                attach_lock=collector.attach_lock)
        assert targets.scan() == 1, targets.missing
    finally:
        stop.set()
        pump.join(timeout=60)
        tracer.close()
    assert not pump.is_alive()

    raw = read_all(kafka_bootstrap, names.raw)
    events = decode_all(raw, CALL_EVENT)
    assert sum(e["observation_count"] for e in events) == CALLS
    # Every call of the one stack reuses its encoded stack fields: each record is still the
    # encoding of what it decodes to, with its own event id and times.
    registry = codec.SchemaRegistry.default()
    assert all(codec.encode(codec.decode(value, registry).record, CALL_EVENT, registry) == value
               for _, value in raw if value[2:10].hex() == codec.fingerprint_hex(CALL_EVENT))
    assert len({e["event_id"] for e in events}) == len(events) == CALLS
    assert len({e["timestamp_ns"] for e in events}) == CALLS
    assert {e["probe_id"] for e in events} == {f"{program}:serve"}
    assert {e["symbol"] for e in events} == {"serve"}
