"""The agent's settings: what to probe (targets) and how the node collector runs.

Plain dataclasses; runtime_signals/settings.py reads them from the TOML file
(``[agent]``, ``[[agent.targets]]``), SIGNALS_AGENT__* variables and flags, and calls
each ``problems()`` so an error names the setting. Docs live in field metadata and
become the README's settings table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .probes import ProbeSpec

_GLOB_CHARS = frozenset("*?[")


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
        "node name in records (default: the hostname; in Kubernetes pass spec.nodeName)"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.ringbuf_pages <= 0 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            found.append(("ringbuf_pages", f"{self.ringbuf_pages} is not a power of two (e.g. 1024 = 4 MiB)"))
        for name in ("watermark_interval_ms", "target_rescan_interval_ms", "process_sweep_interval_ms",
                     "max_symbols_per_pattern"):
            if getattr(self, name) <= 0:
                found.append((name, f"must be positive, got {getattr(self, name)}"))
        if not 4096 <= self.symbol_chunk_max_bytes <= 64 * 1024 * 1024:
            found.append(("symbol_chunk_max_bytes", f"{self.symbol_chunk_max_bytes} is outside 4096..67108864"))
        return found
