"""The agent's settings: what to probe (targets) and how the node collector runs,
including its overhead control, statistics, metrics endpoint and delivery.

Plain dataclasses; runtime_signals/settings.py reads them from the TOML file
(``[agent]``, ``[[agent.targets]]``), SIGNALS_AGENT__* variables and flags
(agent/tuning.py), and calls each ``problems()`` so an error names the setting. Docs
live in field metadata and become the README's settings table and the flags' help.
The objects the settings configure (ProbeLimits, BudgetSettings, TracerSettings) are
built here from checked values, so their own checks never fire at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime_signals.agent.budget import BudgetSettings
from runtime_signals.agent.probes import ProbeLimits, ProbeSpec, TracerSettings

_GLOB_CHARS = frozenset("*?[")
_NS_PER_S = 1_000_000_000
# librdkafka's own bounds for queue.buffering.max.kbytes and .max.messages.
_QUEUE_MAX_KBYTES = 2_147_483_647
_QUEUE_MAX_MESSAGES = 2_147_483_647
# Each dedup entry is a whole call record (64 frames: about 600 bytes) in each of two maps.
_DEDUP_MAX_ENTRIES = 1 << 20


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass
class TargetSettings:
    """One binary or library and the functions to probe in it, optionally only for some
    containers or processes (all selector kinds given must match; within one kind, any)."""

    binary: str = field(metadata=_doc(
        "path of the executable or library as the process sees it (inside its container), "
        "or a library name: 'c', 'ssl', 'libssl.so.3'"))
    symbols: list[str] = field(metadata=_doc(
        "functions: exact symbol names, globs over the symbol table ('png_read_*'), or "
        "demangled C++/Rust names ('imgproc::Parser::parse', 'mycrate::decode')"))
    containers: list[str] = field(default_factory=list, metadata=_doc(
        "only these containers: ids (full or 12+ character prefix), cgroup paths ('/kubepods.slice/...'), "
        "or 'host' for processes outside containers"))
    kubernetes_namespaces: list[str] = field(default_factory=list, metadata=_doc(
        "only pods in these namespaces (globs); needs agent.kubernetes_pods_dir"))
    kubernetes_pods: list[str] = field(default_factory=list, metadata=_doc(
        "only these pods, by name (globs); needs agent.kubernetes_pods_dir"))
    pids: list[int] = field(default_factory=list, metadata=_doc("only these process ids (node's PID namespace)"))
    executables: list[str] = field(default_factory=list, metadata=_doc(
        "only processes whose executable name or comm matches one of these globs"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.binary.strip():
            found.append(("binary", "must name a path or a library"))
        if not self.symbols:
            found.append(("symbols", "give at least one function name or pattern"))
        for index, symbol in enumerate(self.symbols):
            if not symbol.strip():
                found.append((f"symbols[{index}]", "empty symbol name"))
        for index, container in enumerate(self.containers):
            if not container.startswith("/") and container != "host" and (
                    len(container) < 12 or any(c not in "0123456789abcdef" for c in container)):
                found.append((f"containers[{index}]", f"{container!r} is not a container id (12 to 64 lowercase "
                              "hex digits), a cgroup path starting with '/', or 'host'"))
        for index, pid in enumerate(self.pids):
            if pid <= 0:
                found.append((f"pids[{index}]", f"{pid} is not a process id"))
        return found

    @property
    def label(self) -> str:
        return f"{self.binary}:{','.join(self.symbols)}"

    @property
    def has_selectors(self) -> bool:
        return bool(self.containers or self.kubernetes_namespaces or self.kubernetes_pods
                    or self.pids or self.executables)

    @classmethod
    def from_probe_flag(cls, text: str) -> "TargetSettings":
        """--probe BINARY:SYMBOL as a target."""
        spec = ProbeSpec.parse(text)
        return cls(binary=spec.binary, symbols=[spec.symbol])


def is_pattern(symbol: str) -> bool:
    return any(c in _GLOB_CHARS for c in symbol)


@dataclass
class AgentSettings:
    """The node collector."""

    targets: list[TargetSettings] = field(default_factory=list, metadata=_doc(
        "what to probe; `--probe BINARY:SYMBOL` flags add targets"))
    ringbuf_pages: int = field(default=1024, metadata=_doc(
        "BPF ring buffer size in 4 KiB pages, a power of two"))
    watermark_interval_ms: int = field(default=500, metadata=_doc(
        "how often the agent promises event time to the processor"))
    target_rescan_interval_ms: int = field(default=2000, metadata=_doc(
        "how often /proc/*/maps is scanned for target files that appeared (libraries loaded "
        "later, new containers); uprobes attach per file, so only new files cost an attach"))
    process_sweep_interval_ms: int = field(default=10_000, metadata=_doc(
        "how often what is known of exited processes is forgotten"))
    max_symbols_per_pattern: int = field(default=100, metadata=_doc(
        "a glob or demangled name matching more symbols than this is refused (each is a uprobe)"))
    symbol_chunk_max_bytes: int = field(default=512 * 1024, metadata=_doc(
        "symbol tables are split into records of at most this many bytes; keep it under the "
        "symbols topic's max.message.bytes (broker default 1 MiB)"))
    host_root: str = field(default="/", metadata=_doc(
        "the node's root filesystem as the agent sees it, for library names (its ld.so.cache); "
        "in a pod with hostPID: /proc/1/root"))
    proc_root: str = field(default="/proc", metadata=_doc("the node's /proc (the agent needs hostPID)"))
    kubernetes_pods_dir: str = field(default="/var/log/pods", metadata=_doc(
        "kubelet's per-pod directories (<namespace>_<pod>_<uid>), read to name the pod of a "
        "cgroup's pod uid; mount it read-only. Without it pods are known by uid only"))
    host_name: str | None = field(default=None, metadata=_doc(
        "node name in records (default: the node's hostname, read through host_root; in Kubernetes pass spec.nodeName); "
        "also the container id of host processes when the node's machine id cannot be read"))
    # --- overhead control (README "Agent overhead, drop accounting and delivery") ---
    dedup: bool = field(default=True, metadata=_doc(
        "fold identical calls (same probe, process and stack) in the kernel into one record "
        "carrying their count; false sends every call as its own record"))
    dedup_entries: int = field(default=16384, metadata=_doc(
        "distinct (probe, process, stack) keys folded per watermark interval; beyond, calls go "
        "one by one through the ring buffer"))
    rate_limit_per_s: int = field(default=0, metadata=_doc(
        "stack captures per second per probe per CPU; calls above are counted as dropped "
        "'rate_limited' (0: no limit)"))
    rate_burst: int = field(default=1000, metadata=_doc("captures allowed at once after a quiet spell"))
    budget: bool = field(default=True, metadata=_doc(
        "the adaptive budget: detach a hot probe whose call paths are all known, re-arm it later"))
    budget_quiet_s: float = field(default=5.0, metadata=_doc(
        "detach a probe that has shown no new call path for this long, if it is hot (budget_min_rate_per_s)"))
    budget_min_rate_per_s: float = field(default=1000.0, metadata=_doc(
        "calls per second from which a probe counts as hot; a colder probe is never detached"))
    budget_backoff_s: float = field(default=60.0, metadata=_doc(
        "re-arm a detached probe after this long, doubling while nothing new turns up"))
    budget_max_backoff_s: float = field(default=600.0, metadata=_doc("longest detached spell"))
    # --- statistics and health ---
    statistics_interval_ms: int = field(default=10_000, metadata=_doc(
        "how often SignalStatistics is published"))
    metrics_port: int | None = field(default=None, metadata=_doc(
        "serve /metrics (Prometheus), /healthz and /readyz on this port (0: any free port; unset: off)"))
    metrics_address: str = field(default="0.0.0.0", metadata=_doc("address the metrics server listens on"))
    # --- delivery ---
    spool_dir: str | None = field(default=None, metadata=_doc(
        "directory of the on-disk spool used while Kafka cannot take records (unset: no spool; "
        "such records are dropped and counted)"))
    spool_max_bytes: int = field(default=256 << 20, metadata=_doc(
        "bound of the spool; records beyond are dropped and counted"))
    producer_queue_max_kbytes: int = field(default=64 * 1024, metadata=_doc(
        "memory librdkafka may hold before records go to the spool"))
    producer_queue_max_messages: int = field(default=100_000, metadata=_doc(
        "records librdkafka may hold before records go to the spool"))
    shutdown_flush_timeout_ms: int = field(default=30_000, metadata=_doc(
        "on SIGTERM, how long to wait for Kafka before spooling the rest"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.ringbuf_pages <= 0 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            found.append(("ringbuf_pages", f"{self.ringbuf_pages} is not a power of two (e.g. 1024 = 4 MiB)"))
        for name in ("watermark_interval_ms", "target_rescan_interval_ms", "process_sweep_interval_ms",
                     "max_symbols_per_pattern", "statistics_interval_ms", "budget_quiet_s", "budget_backoff_s",
                     "spool_max_bytes", "rate_burst"):
            if getattr(self, name) <= 0:
                found.append((name, f"must be positive, got {getattr(self, name)}"))
        for name in ("rate_limit_per_s", "budget_min_rate_per_s", "shutdown_flush_timeout_ms"):
            if getattr(self, name) < 0:
                found.append((name, f"must not be negative, got {getattr(self, name)}"))
        if not 4096 <= self.symbol_chunk_max_bytes <= 64 * 1024 * 1024:
            found.append(("symbol_chunk_max_bytes", f"{self.symbol_chunk_max_bytes} is outside 4096..67108864"))
        if not 1 <= self.dedup_entries <= _DEDUP_MAX_ENTRIES:
            found.append(("dedup_entries", f"{self.dedup_entries} is outside 1..{_DEDUP_MAX_ENTRIES} (each entry "
                          "holds a call record in each of two kernel maps)"))
        if self.budget_max_backoff_s < self.budget_backoff_s:
            found.append(("budget_max_backoff_s", f"{self.budget_max_backoff_s} is shorter than "
                          f"budget_backoff_s {self.budget_backoff_s}"))
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            found.append(("metrics_port", f"{self.metrics_port} is not a TCP port (0..65535; 0: any free port)"))
        if not self.metrics_address.strip():
            found.append(("metrics_address", "empty: give an address such as 0.0.0.0 or 127.0.0.1"))
        if self.spool_dir is not None:
            if not self.spool_dir.strip():
                found.append(("spool_dir", "empty: give a directory, or leave it unset for no spool"))
            elif Path(self.spool_dir).exists() and not Path(self.spool_dir).is_dir():
                found.append(("spool_dir", f"{self.spool_dir} exists and is not a directory"))
        if not 1 <= self.producer_queue_max_kbytes <= _QUEUE_MAX_KBYTES:
            found.append(("producer_queue_max_kbytes", f"{self.producer_queue_max_kbytes} is outside "
                          f"1..{_QUEUE_MAX_KBYTES}"))
        if not 1 <= self.producer_queue_max_messages <= _QUEUE_MAX_MESSAGES:
            found.append(("producer_queue_max_messages", f"{self.producer_queue_max_messages} is outside "
                          f"1..{_QUEUE_MAX_MESSAGES}"))
        return found

    # --- what the settings configure (only called on checked settings) ---

    def probe_limits(self) -> ProbeLimits:
        return ProbeLimits(dedup=self.dedup, rate_per_cpu_s=self.rate_limit_per_s, burst=self.rate_burst)

    def budget_settings(self) -> BudgetSettings:
        return BudgetSettings(enabled=self.budget, quiet_ns=int(self.budget_quiet_s * _NS_PER_S),
                              min_rate_per_s=self.budget_min_rate_per_s,
                              backoff_ns=int(self.budget_backoff_s * _NS_PER_S),
                              max_backoff_ns=int(self.budget_max_backoff_s * _NS_PER_S))

    def tracer_settings(self) -> TracerSettings:
        return TracerSettings(ringbuf_pages=self.ringbuf_pages, dedup_entries=self.dedup_entries)
