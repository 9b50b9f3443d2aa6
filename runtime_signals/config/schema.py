"""The configuration schema of every part: Kafka, the agent and the processor.

Plain dataclasses, one field per setting with its one default and its doc in the field's
metadata (the README's settings table, the flags' help and `signals config reference` are
made from it). runtime_signals.config.engine reads them from a TOML file, SIGNALS_* variables
and flags and calls each ``problems()``, so an error names the setting and where its value
came from. This module is a leaf: it imports no part of runtime-signals, and each part builds
its own objects from these values (runtime_signals.agent.config, runtime_signals.processor.settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_RINGBUF_MAX_PAGES = 1 << 18  # 4 KiB pages: 1 GiB
# librdkafka's own bounds for queue.buffering.max.kbytes and .max.messages.
_QUEUE_MAX_KBYTES = 2_147_483_647
_QUEUE_MAX_MESSAGES = 2_147_483_647
# Each dedup entry is a whole call record (64 frames: about 600 bytes) in each of two maps.
_DEDUP_MAX_ENTRIES = 1 << 20


def _doc(text: str, secret: bool = False) -> dict[str, Any]:
    return {"doc": text, "secret": secret}


@dataclass
class KafkaSettings:
    """How every part connects to Kafka. The security settings map one to one onto
    librdkafka's (security.protocol, sasl.*, ssl.*)."""

    bootstrap_servers: str = field(default="127.0.0.1:19092", metadata=_doc(
        "comma-separated host:port list; default also from $KAFKA_BOOTSTRAP_SERVERS"))
    topic_prefix: str = field(default="", metadata=_doc("prefix of every topic name (several pipelines, one cluster)"))
    client_id: str = field(default="runtime-signals", metadata=_doc("client.id, shown in broker logs and quotas"))
    security_protocol: str = field(default="PLAINTEXT", metadata=_doc(
        "security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))
    sasl_mechanism: str | None = field(default=None, metadata=_doc(
        "sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)"))
    sasl_username: str | None = field(default=None, metadata=_doc("sasl.username"))
    sasl_password: str | None = field(default=None, repr=False, metadata=_doc(
        "sasl.password; prefer SIGNALS_KAFKA__SASL_PASSWORD from a Secret", secret=True))
    ssl_ca_location: str | None = field(default=None, metadata=_doc(
        "ssl.ca.location: PEM file of the CA that signed the brokers' certificates"))
    ssl_certificate_location: str | None = field(default=None, metadata=_doc(
        "ssl.certificate.location: this client's PEM certificate (mutual TLS)"))
    ssl_key_location: str | None = field(default=None, metadata=_doc(
        "ssl.key.location: this client's PEM private key (mutual TLS)"))
    ssl_key_password: str | None = field(default=None, repr=False, metadata=_doc(
        "ssl.key.password, when the private key is encrypted", secret=True))
    ssl_endpoint_identification_algorithm: str = field(default="https", metadata=_doc(
        "ssl.endpoint.identification.algorithm: 'https' checks the broker's host name, 'none' does not"))
    # Same default as schemas/topics.py OUTPUT_RETENTION_MS (tests/schemas checks they agree).
    output_retention_ms: int = field(default=30 * 24 * 3600 * 1000, metadata=_doc(
        "retention.ms of the summaries, paths and latest-state topics (compact,delete): windows "
        "older than this are deleted; applied by `signals kafka topics`"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.bootstrap_servers.strip():
            found.append(("bootstrap_servers", "empty: give host:port of at least one broker"))
        if self.output_retention_ms <= 0:
            found.append(("output_retention_ms", f"{self.output_retention_ms}: must be a positive number of "
                          "milliseconds"))
        if self.security_protocol not in _PROTOCOLS:
            found.append(("security_protocol", f"{self.security_protocol!r} is not one of {', '.join(_PROTOCOLS)}"))
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            if self.sasl_mechanism not in _MECHANISMS:
                found.append(("sasl_mechanism", f"{self.sasl_mechanism!r}: with {self.security_protocol} "
                              f"give one of {', '.join(_MECHANISMS)}"))
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    found.append((name, f"required with security_protocol {self.security_protocol}"))
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            found.append(("security_protocol", f"{self.security_protocol} does not use SASL, but sasl_* "
                          "settings are given: use SASL_SSL (or SASL_PLAINTEXT)"))
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                found.append((name, f"{path} is not a readable file"))
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            found.append(("ssl_key_location", "mutual TLS needs both ssl_certificate_location and ssl_key_location"))
        if self.ssl_endpoint_identification_algorithm not in ("https", "none"):
            found.append(("ssl_endpoint_identification_algorithm", "must be 'https' or 'none'"))
        return found

    def librdkafka_config(self) -> dict[str, str]:
        """The connection settings as librdkafka keys (bootstrap, identity, security)."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        config.update({key: value for key, value in optional.items() if value})
        if "SSL" in self.security_protocol:
            config["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification_algorithm
        return config


@dataclass
class TargetSettings:
    """One binary or library and the functions to probe in it, optionally only for some
    containers or processes (all selector kinds given must match; within one kind, any)."""

    binary: str = field(metadata=_doc(
        "path of the executable or library as the process sees it (inside its container), "
        "or a library name: 'c', 'ssl', 'libssl.so.3'"))
    symbols: list[str] = field(metadata=_doc(
        "functions: exact symbol names, globs over the symbol table ('png_read_*'), or "
        "demangled C++/Rust names ('imgproc::Parser::parse', 'mycrate::decode'); or Python functions "
        "'python:MODULE:QUALNAME' with globs ('python:json.decoder:JSONDecoder.decode'), served by "
        "every CPython with USDT markers (docs/managed-runtimes.md)"))
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
    def is_python(self) -> bool:
        """A target of Python functions: every symbol is python:MODULE:QUALNAME (agent/pyprobes.py).
        Its binary is not searched: every interpreter with USDT markers serves it; the
        selectors choose the processes."""
        return bool(self.symbols) and all(s.startswith("python:") for s in self.symbols)

    @property
    def has_selectors(self) -> bool:
        return bool(self.containers or self.kubernetes_namespaces or self.kubernetes_pods
                    or self.pids or self.executables)


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
    jit_perf_maps: bool = field(default=True, metadata=_doc(
        "name frames in JIT code from the runtime's /tmp/perf-<pid>.map (JVM, Node --perf-basic-prof, "
        ".NET DOTNET_PerfMapEnabled=1), read through the process's root; docs/managed-runtimes.md"))
    jvm_jcmd: str = field(default="jcmd", metadata=_doc(
        "command the agent runs as `jcmd <pid> Compiler.perfmap` to have a JVM (JDK 17+) write its perf "
        "map when a stack holds unnamed JIT frames; empty: never ask"))
    host_root: str = field(default="/", metadata=_doc(
        "the node's root filesystem as the agent sees it, for library names (its ld.so.cache); "
        "in a pod with hostPID: /proc/1/root"))
    proc_root: str = field(default="/proc", metadata=_doc("the node's /proc (the agent needs hostPID)"))
    kubernetes_pods_dir: str = field(default="/var/log/pods", metadata=_doc(
        "kubelet's per-pod directories (<namespace>_<pod>_<uid>), read to name the pod of a "
        "cgroup's pod uid; mount it read-only. Without it pods are known by uid only"))
    host_name: str | None = field(default=None, metadata=_doc(
        "node name in records (default: the hostname; in Kubernetes pass spec.nodeName)"))
    hold_processes: bool = field(default=True, metadata=_doc(
        "stop a process for a moment (SIGSTOP, then SIGCONT) when its loader maps a library a "
        "target names, when it execs a target executable, and at its first exec in a new root, so "
        "the library is attached before it can be called and the process's maps are read while it "
        "lives (docs/attribution.md); false: libraries are attached by the rescan and the calls "
        "before it are counted as late_attaches"))
    hold_heartbeat_ms: int = field(default=2000, metadata=_doc(
        "processes are held only while the agent answered within this long: an agent that dies "
        "stops holding after it"))
    plans: bool = field(default=True, metadata=_doc(
        "follow the plans topic (docs/plans.md): probe plans published with `signals plan --publish` are "
        "attached and detached while the agent runs, beside agent.targets, and what each attached is "
        "published to the plan status topic"))
    plan_status_interval_ms: int = field(default=5000, metadata=_doc(
        "how often the agent re-checks what each plan has attached (after rescans found more) and "
        "publishes the plan's status when it changed"))
    # --- overhead control (README "Agent overhead, drop accounting and delivery") ---
    dedup: bool = field(default=True, metadata=_doc(
        "fold identical calls (same probe, process and stack) in the kernel into one record "
        "carrying their count; false sends every call as its own record"))
    dedup_entries: int = field(default=16384, metadata=_doc(
        "distinct (probe, process, stack) keys folded per watermark interval; beyond, calls go "
        "one by one through the ring buffer"))
    unwind_rows: int = field(default=1 << 21, metadata=_doc(
        "unwind rule rows all binaries share (a power of two; 12 bytes each, preallocated: 2^21 = "
        "24 MiB). A binary whose rules do not fit is walked by frame pointers and counted "
        "(docs/unwinding.md)"))
    unwind_cache_dir: str | None = field(default="/var/cache/runtime-signals/unwind", metadata=_doc(
        "directory where built unwind rules are kept by binary digest, so each binary's rules are "
        "built once per node rather than at every agent start (unset: built at every start)"))
    unwind_cache_max_bytes: int = field(default=256 << 20, metadata=_doc(
        "bound of unwind_cache_dir; the least recently used rules go beyond it"))
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
    signing_certificate: str | None = field(default=None, metadata=_doc(
        "PEM certificate of this agent (its common name is the agent's principal: its agent id becomes "
        "<common name>/<run>), issued by a CA in the processors' processor.agent_ca_file: every record is "
        "signed with it (docs/deploy.md, "
        "\"Record signing\"; unset: records are not signed)"))
    signing_key: str | None = field(default=None, metadata=_doc(
        "path of the signing certificate's unencrypted PEM private key (Ed25519, ECDSA or RSA; keep it 0600)"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.ringbuf_pages <= 0 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            found.append(("ringbuf_pages", f"{self.ringbuf_pages} is not a power of two (e.g. 1024 = 4 MiB)"))
        elif self.ringbuf_pages > _RINGBUF_MAX_PAGES:
            # The kernel takes a ring buffer's size as a u32 of bytes; beyond this it fails to
            # load, after clang has run, with an error that names nothing of ours.
            found.append(("ringbuf_pages", f"{self.ringbuf_pages} is above {_RINGBUF_MAX_PAGES} "
                                           f"(= 1 GiB of ring buffer)"))
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
        if not 2 <= self.unwind_rows <= 1 << 26 or self.unwind_rows & (self.unwind_rows - 1):
            found.append(("unwind_rows", f"{self.unwind_rows} is not a power of two in 2..67108864 (the walker's "
                          "search masks row indexes; 2^26 rows are 768 MiB)"))
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
        if bool(self.signing_certificate) != bool(self.signing_key):
            given, missing = (("signing_certificate", "signing_key") if self.signing_certificate
                              else ("signing_key", "signing_certificate"))
            found.append((missing, f"required with {given}: records are signed with both or neither"))
        return found


@dataclass
class ProcessorSection:
    """One processor worker."""

    window_ms: int = field(default=60_000, metadata=_doc("tumbling window length in event time"))
    allowed_lateness_ms: int = field(default=5_000, metadata=_doc(
        "how long after its end a window still takes calls"))
    app_id: str = field(default="runtime-signals-processor", metadata=_doc(
        "consumer group and faust app id, also in the checkpoint topic's name; workers with the same id share "
        "the partitions"))
    group_instance_id: str | None = field(default=None, metadata=_doc(
        "static group membership id of this worker (a pod name), so a restarted worker takes its partitions "
        "back at once"))
    output_topic_prefix: str | None = field(default=None, metadata=_doc(
        "prefix of the output topics (summaries, paths, latest, late, dlq) when they differ from the inputs' "
        "(unset: kafka.topic_prefix)"))
    agent_idle_ms: int = field(default=30_000, metadata=_doc(
        "event time after which an agent that sends no watermark stops holding windows open"))
    symbol_wait_ms: int = field(default=10_000, metadata=_doc(
        "wall-clock time a closed window waits for its binaries' symbol tables and module maps before it goes "
        "out with frames unnamed"))
    max_pending_windows: int = field(default=10_000, metadata=_doc(
        "closed windows per partition that may wait for symbol tables"))
    latest_states_in_memory: int = field(default=256, metadata=_doc(
        "containers' latest states a worker holds decoded in memory (about 8 KB per distinct call path of each; "
        "0.5 KB compressed in the file); "
        "the others wait compressed in a file under data_dir, read back when their container's next window "
        "closes"))
    latest_paths_in_memory: int = field(default=65_536, metadata=_doc(
        "distinct call paths, summed over the latest states held decoded, past which the least recently folded "
        "states move to the file as well: latest_states_in_memory counts containers however many paths each "
        "has, this bounds the memory they take (about 8 KB per path: 65,536 is about 0.5 GB)"))
    max_event_ahead_ms: int = field(default=120_000, metadata=_doc(
        "a call dated further than this after its record's broker timestamp goes to the dead-letter topic "
        "(clock_skew)"))
    inflight_dir: str = field(default="", metadata=_doc(
        "directory that keeps each partition's in-flight offset across worker restarts, so a record that "
        "kills the worker twice is dead-lettered (empty: the system temporary directory; \"off\": disabled)"))
    data_dir: str = field(default="/tmp/runtime-signals", metadata=_doc(
        "writable directory for faust's application directory (<data_dir>/<app_id>) and the worker's file of "
        "latest states beyond latest_states_in_memory (a cache, rebuilt from the latest topic when a partition "
        "is assigned, unlinked at once so nothing outlives the worker); must not be on a read-only root"))
    checkpoint_interval_ms: int = field(default=1_000, metadata=_doc(
        "how often each partition's outputs are flushed and its checkpoint written (docs/processor.md)"))
    session_timeout_ms: int = field(default=10_000, metadata=_doc(
        "consumer-group session timeout: how soon a dead worker's partitions move"))
    metrics_port: int | None = field(default=None, metadata=_doc(
        "serve /metrics (Prometheus), /healthz and /readyz on this port (unset: off)"))
    loglevel: str = field(default="info", metadata=_doc("debug, info, warning or error"))
    agent_ca_file: str | None = field(default=None, metadata=_doc(
        "PEM file of the CA(s) that issue the agents' signing certificates: every raw record, symbol table and "
        "module map must then be signed by an agent it issued, and a raw record's agent may only speak for "
        "itself (unsigned or forged: dead-letter topic, or a table kept aside; docs/processor.md). Unset: "
        "records are taken unsigned"))
    agent_flush_interval_ms: int = field(default=500, metadata=_doc(
        "the agents' watermark (dedup flush) interval; window_ms must be a multiple of it, so that no "
        "record of calls the agent folded spans a window boundary (each call counts in its own window)"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.agent_flush_interval_ms <= 0:
            found.append(("agent_flush_interval_ms", f"must be positive, got {self.agent_flush_interval_ms}"))
        elif self.window_ms > 0 and self.window_ms % self.agent_flush_interval_ms:
            found.append(("window_ms", f"{self.window_ms} is not a multiple of agent_flush_interval_ms "
                                       f"{self.agent_flush_interval_ms}: folded records would span windows and "
                                       f"count calls in the wrong one; choose a multiple (or set the agents' "
                                       f"watermark_interval_ms and agent_flush_interval_ms to a divisor)"))
        for name in ("window_ms", "agent_idle_ms", "checkpoint_interval_ms", "session_timeout_ms",
                     "latest_states_in_memory", "latest_paths_in_memory"):
            if getattr(self, name) <= 0:
                found.append((name, f"must be positive, got {getattr(self, name)}"))
        for name in ("allowed_lateness_ms", "symbol_wait_ms", "max_pending_windows", "max_event_ahead_ms"):
            if getattr(self, name) < 0:
                found.append((name, f"must not be negative, got {getattr(self, name)}"))
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            found.append(("metrics_port", f"{self.metrics_port} is not a TCP port (0..65535)"))
        if not self.data_dir.strip():
            found.append(("data_dir", "empty: give a writable directory (a tmpfs or emptyDir is enough)"))
        if self.loglevel not in ("debug", "info", "warning", "error"):
            found.append(("loglevel", f"{self.loglevel!r} is not debug, info, warning or error"))
        return found


@dataclass
class SignalsConfig:
    """Root of the configuration file."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings, metadata=_doc("Kafka connection"))
    agent: AgentSettings = field(default_factory=AgentSettings, metadata=_doc("the node agent"))
    processor: ProcessorSection = field(default_factory=ProcessorSection, metadata=_doc("processor workers"))
