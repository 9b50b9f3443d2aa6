"""`signals agent`: arguments and start-up of the node collector."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from schemas.topics import TopicNames

from .errors import AgentError, ProbeError
from .probes import CallTracer, ProbeSpec

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  signals agent --probe /usr/bin/myapp:handle_request
  signals agent --probe c:malloc --probe /opt/app/libssl.so.3:SSL_read --bootstrap kafka:9092

Needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_RESOURCE) and kernel headers for bcc.
SIGINT/SIGTERM: drains the ring buffer and flushes every event read to Kafka.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    parser.add_argument("--probe", action="append", default=[], metavar="BINARY:SYMBOL",
                        help="function to observe (repeatable); BINARY is a path or a library name such as 'c'")
    parser.add_argument("--bootstrap", default=default_bootstrap,
                        help="Kafka bootstrap servers (default: %(default)s; env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-prefix", default="", help="prefix of every topic name")
    parser.add_argument("--ringbuf-pages", type=int, default=1024,
                        help="BPF ring buffer size in 4 KiB pages, a power of two (default: %(default)s)")
    parser.add_argument("--watermark-interval-ms", type=int, default=500,
                        help="how often event time is promised to the processor (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Attach every probe that can be attached, then pump until SIGINT/SIGTERM."""
    from .collector import Collector, CollectorSettings
    from .publisher import ProducerSettings, Publisher

    specs = [ProbeSpec.parse(text) for text in args.probe]
    if not specs:
        raise AgentError("no probes given: pass --probe BINARY:SYMBOL at least once")
    tracer = CallTracer(ringbuf_pages=args.ringbuf_pages)
    publisher = Publisher(ProducerSettings(bootstrap_servers=args.bootstrap))
    collector = Collector(
        CollectorSettings(topics=TopicNames().with_prefix(args.topic_prefix),
                          watermark_interval_ms=args.watermark_interval_ms),
        tracer, publisher,
    )
    failed = []
    for spec in specs:
        try:
            collector.register_probe(tracer.attach(spec))
        except ProbeError as exc:
            # One bad target must not cost the others their observations.
            log.error("%s", exc)
            failed.append(spec.probe_id)
    if len(failed) == len(specs):
        raise AgentError(f"no probe could be attached ({', '.join(failed)})")

    stop = threading.Event()

    def _request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: draining and flushing", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    # Tests and wrappers wait for this line before starting the workload.
    print(f"agent ready: {len(specs) - len(failed)} probe(s) attached", file=sys.stderr, flush=True)
    try:
        collector.run(stop)
    finally:
        tracer.close()
    return 0
