"""`signals agent` flags for overhead control, statistics and delivery, and the objects
they configure. agent/cli.py adds them to its parser and applies them in run().

Defaults and why they keep the workload's slowdown small are in the README
("Overhead, drops and delivery").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .budget import BudgetSettings
from .errors import ConfigError
from .probes import ProbeLimits, TracerSettings
from .publisher import ProducerSettings
from .spool import Spool

if TYPE_CHECKING:
    from .collector import CollectorSettings

_NS_PER_S = 1_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    overhead = parser.add_argument_group("overhead control")
    overhead.add_argument("--no-dedup", action="store_true",
                          help="send every call as its own record instead of folding identical calls in the kernel")
    overhead.add_argument("--dedup-entries", type=int, default=16384,
                          help="distinct (probe, process, stack) keys folded per watermark interval (default: "
                               "%(default)s); beyond, calls go one by one through the ring buffer")
    overhead.add_argument("--rate-limit", type=int, default=0, metavar="CALLS_PER_S",
                          help="stack captures per second per probe per CPU; calls above are counted as "
                               "dropped 'rate_limited' (default: 0 = no limit)")
    overhead.add_argument("--rate-burst", type=int, default=1000,
                          help="captures allowed at once after a quiet spell (default: %(default)s)")
    overhead.add_argument("--no-budget", action="store_true",
                          help="never detach probes (the adaptive budget is on by default)")
    overhead.add_argument("--budget-quiet-s", type=float, default=5.0,
                          help="detach a probe after this long without a new call path... (default: %(default)s)")
    overhead.add_argument("--budget-min-rate", type=float, default=1000.0, metavar="CALLS_PER_S",
                          help="...while it is called at least this often (default: %(default)s)")
    overhead.add_argument("--budget-backoff-s", type=float, default=60.0,
                          help="re-arm a detached probe after this long, doubling while nothing new turns up "
                               "(default: %(default)s)")
    overhead.add_argument("--budget-max-backoff-s", type=float, default=600.0,
                          help="longest detached spell (default: %(default)s)")
    stats = parser.add_argument_group("statistics and health")
    stats.add_argument("--statistics-interval-ms", type=int, default=10_000,
                       help="how often SignalStatistics is published (default: %(default)s)")
    stats.add_argument("--metrics-port", type=int, default=None,
                       help="serve /metrics (Prometheus), /healthz and /readyz on this port (0: any free port; "
                            "default: off)")
    stats.add_argument("--metrics-address", default="0.0.0.0",
                       help="address the metrics server listens on (default: %(default)s)")
    delivery = parser.add_argument_group("delivery")
    delivery.add_argument("--spool-dir", type=Path, default=None,
                          help="directory of the on-disk spool used while Kafka cannot take records "
                               "(default: none; without it such records are dropped and counted)")
    delivery.add_argument("--spool-max-bytes", type=int, default=256 << 20,
                          help="bound of the spool; records beyond are dropped and counted (default: %(default)s)")
    delivery.add_argument("--producer-queue-max-kbytes", type=int, default=64 * 1024,
                          help="memory librdkafka may hold before records go to the spool (default: %(default)s)")
    delivery.add_argument("--producer-queue-max-messages", type=int, default=100_000,
                          help="records librdkafka may hold before records go to the spool (default: %(default)s)")
    delivery.add_argument("--shutdown-flush-timeout-ms", type=int, default=30_000,
                          help="on SIGTERM, how long to wait for Kafka before spooling the rest (default: %(default)s)")


@dataclass(frozen=True)
class Tuning:
    limits: ProbeLimits
    dedup_entries: int
    budget: BudgetSettings
    statistics_interval_ms: int
    metrics_port: int | None
    metrics_address: str
    spool_dir: Path | None
    spool_max_bytes: int
    producer_queue_max_kbytes: int
    producer_queue_max_messages: int
    shutdown_flush_timeout_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Tuning":
        if args.statistics_interval_ms <= 0:
            raise ConfigError(f"--statistics-interval-ms {args.statistics_interval_ms}: must be positive")
        if args.producer_queue_max_kbytes <= 0 or args.producer_queue_max_messages <= 0:
            raise ConfigError("--producer-queue-max-kbytes and --producer-queue-max-messages must be positive")
        limits = ProbeLimits(dedup=not args.no_dedup, rate_per_cpu_s=args.rate_limit, burst=args.rate_burst)
        limits.config()  # validates
        return cls(
            limits=limits,
            dedup_entries=args.dedup_entries,
            budget=BudgetSettings(enabled=not args.no_budget, quiet_ns=int(args.budget_quiet_s * _NS_PER_S),
                                  min_rate_per_s=args.budget_min_rate,
                                  backoff_ns=int(args.budget_backoff_s * _NS_PER_S),
                                  max_backoff_ns=int(args.budget_max_backoff_s * _NS_PER_S)),
            statistics_interval_ms=args.statistics_interval_ms,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
            spool_dir=args.spool_dir,
            spool_max_bytes=args.spool_max_bytes,
            producer_queue_max_kbytes=args.producer_queue_max_kbytes,
            producer_queue_max_messages=args.producer_queue_max_messages,
            shutdown_flush_timeout_s=args.shutdown_flush_timeout_ms / 1000,
        )

    def tracer_settings(self, ringbuf_pages: int) -> TracerSettings:
        return TracerSettings(ringbuf_pages=ringbuf_pages, dedup_entries=self.dedup_entries)

    def producer_settings(self, bootstrap_servers: str, extra: Mapping[str, str]) -> ProducerSettings:
        return ProducerSettings(bootstrap_servers=bootstrap_servers, extra=dict(extra),
                                queue_max_kbytes=self.producer_queue_max_kbytes,
                                queue_max_messages=self.producer_queue_max_messages)

    def open_spool(self) -> Spool | None:
        return Spool(self.spool_dir, self.spool_max_bytes) if self.spool_dir is not None else None

    def collector_settings(self, settings: CollectorSettings) -> CollectorSettings:
        return replace(settings, budget=self.budget, statistics_interval_ms=self.statistics_interval_ms,
                       shutdown_flush_timeout_s=self.shutdown_flush_timeout_s)
