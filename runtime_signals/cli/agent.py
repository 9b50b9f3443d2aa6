"""`signals agent`: arguments, configuration and start-up of the node collector."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from runtime_signals.agent.errors import BpfLoadError, ConfigError
from runtime_signals.cli import flags
from runtime_signals.config import SettingsError, SignalsConfig, load_config
from runtime_signals.config.schema import AgentSettings, KafkaSettings, TargetSettings
from runtime_signals.schemas.topics import TopicNames

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  signals agent --probe /usr/bin/myapp:handle_request
  signals agent --probe c:malloc --probe /opt/app/libssl.so.3:SSL_read --bootstrap kafka:9092
  signals agent --config /etc/runtime-signals/signals.toml
  signals agent --check /etc/runtime-signals/signals.toml     # validate, attach nothing

A config file names targets with globs, demangled C++/Rust names and container filters:
  [[agent.targets]]
  binary = "/app/bin/server"            # as the container sees it, or a library: "ssl"
  symbols = ["imgproc::Parser::parse", "png_read_*"]
  containers = ["4f1c3a9be2d0"]         # ids, cgroup paths, or "host"
Settings also come from SIGNALS_* environment variables (`signals config reference`).

Needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE; docs/deploy.md) and kernel headers for bcc.
SIGINT/SIGTERM: drains the ring buffer and flushes every event read to Kafka.
"""


_FLAGS = flags.KAFKA_FLAGS + flags.AGENT_FLAGS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Flags default to None so that the config file and SIGNALS_* variables decide
    # whatever the command line does not say.
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $SIGNALS_CONFIG)")
    parser.add_argument("--check", metavar="FILE", nargs="?", const="", default=None,
                        help="validate the configuration (FILE, or --config) and its targets on this host "
                             "without attaching anything; exit 0 when valid, 1 otherwise")
    parser.add_argument("--probe", action="append", default=[], metavar="BINARY:SYMBOL",
                        help="function to observe (repeatable, added to the config's targets); BINARY is a "
                             "path or a library name such as 'c'; python:MODULE:QUALNAME probes a Python "
                             "function in every CPython built with USDT markers")
    flags.add_arguments(parser, _FLAGS)  # one flag per setting operators change per run


def load(args: argparse.Namespace, config_path: str | None = None) -> SignalsConfig:
    """The effective configuration for these flags, --probe targets added."""
    try:
        config = load_config(config_path or args.config, flags=flags.flag_settings(args, _FLAGS),
                             flag_names=flags.flag_names(_FLAGS))
    except SettingsError as exc:
        raise ConfigError(str(exc)) from exc
    for text in args.probe:
        target = target_of_probe_flag(text)
        check_probe_file(text, target.binary)
        config.agent.targets.append(target)
    return config


def target_of_probe_flag(text: str) -> TargetSettings:
    """--probe BINARY:SYMBOL, or --probe python:MODULE:QUALNAME (every interpreter with USDT
    markers serves it), as a target."""
    from runtime_signals.agent.probes import ProbeSpec

    if text.startswith("python:"):
        return TargetSettings(binary="python", symbols=[text])
    spec = ProbeSpec.parse(text)
    return TargetSettings(binary=spec.binary, symbols=[spec.symbol])


def check_probe_file(flag: str, binary: str) -> None:
    """A --probe naming a file by path must name an ELF file: a directory or a text file
    would otherwise surface later as "symbol not found", which sends one looking for the
    wrong mistake. Library names (`c`, `ssl`) are resolved per process later."""
    if "/" not in binary:
        return
    path = Path(binary)
    if path.is_dir():
        raise ConfigError(f"--probe {flag}: {binary} is a directory; name the executable or library file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        return  # may appear later, or exist only inside containers: the target scanner waits for it
    except OSError as exc:
        raise ConfigError(f"--probe {flag}: {binary} cannot be read: {exc.strerror or exc}") from exc
    if magic != b"\x7fELF":
        raise ConfigError(f"--probe {flag}: {binary} is not an ELF executable or library")


def target_names(config: SignalsConfig, probe_flags: list[str]) -> list[str]:
    """How messages name each target: its place in the file, or the flag that made it."""
    from_file = len(config.agent.targets) - len(probe_flags)
    return [f"agent.targets[{i}]" for i in range(from_file)] + [f"--probe {text}" for text in probe_flags]


def check(args: argparse.Namespace) -> int:
    """`signals agent --check`: settings, then every target's files and symbols on this host."""
    from runtime_signals.agent.targets import TargetManager

    config = load(args, args.check or None)
    agent = config.agent
    if not agent.targets:
        print("signals agent --check: agent.targets: no targets (add [[agent.targets]] or --probe)", file=sys.stderr)
        return 1
    names = target_names(config, args.probe)
    native = [(t, n) for t, n in zip(agent.targets, names, strict=False) if not t.is_python]
    manager = TargetManager([t for t, _ in native], [n for _, n in native], attach=None,
                            proc_root=Path(agent.proc_root), host_root=Path(agent.host_root),
                            max_symbols_per_pattern=agent.max_symbols_per_pattern)
    # The scan logs each problem as it finds it (a running agent's log wants that); here they
    # are printed once, below, with what resolved.
    targets_log = logging.getLogger("runtime_signals.agent.targets")
    level = targets_log.level
    targets_log.setLevel(logging.CRITICAL)
    try:
        manager.scan()
    finally:
        targets_log.setLevel(level)
    for name, path, symbols in manager.resolved():
        print(f"{name}: {path}: {', '.join(symbols) if symbols else 'no symbol resolved'}")
    for key, reason in sorted(manager.missing.items()):
        print(f"problem: {key}: {reason}", file=sys.stderr)
    inlined = manager.counts["inlined_copies"]
    print(f"settings valid; {len(manager.resolved())} file(s) resolved, {manager.counts['probes_attached']} "
          f"probe(s) would attach{f' ({inlined} at inlined copies)' if inlined else ''}, "
          f"{len(manager.missing)} problem(s)")
    return 1 if manager.missing else 0


def _check_kafka_access(kafka: KafkaSettings) -> None:
    """Refuse to start with credentials, certificates or ACLs the cluster rejects: librdkafka
    would retry them forever while records pile up. A cluster that does not answer is no
    reason to stop: the spool holds records until it does."""
    from runtime_signals.kafka.security import KafkaAccessError, KafkaUnreachableError, check_access

    names = TopicNames().with_prefix(kafka.topic_prefix)
    try:
        check_access(kafka.librdkafka_config(), topics=[names.raw, names.symbols, names.modules, names.statistics],
                     timeout_s=5.0)
    except KafkaUnreachableError as exc:
        log.warning("%s; starting anyway", exc)
    except KafkaAccessError as exc:
        raise ConfigError(str(exc)) from exc


def _open_spool(agent: AgentSettings) -> Any:
    """The on-disk spool of agent.spool_dir (agent/spool.Spool), or None without one."""
    from runtime_signals.agent.spool import Spool

    if agent.spool_dir is None:
        return None
    try:
        return Spool(Path(agent.spool_dir), agent.spool_max_bytes)
    except ConfigError as exc:
        raise ConfigError(f"agent.spool_dir: {exc}") from exc


def _record_signer(agent: AgentSettings, names: TopicNames) -> Any:
    """The signer of agent.signing_certificate (runtime_signals/kafka/provenance.RecordSigner),
    or None when records are not signed."""
    from runtime_signals.kafka.provenance import ProvenanceError, RecordSigner

    if not agent.signing_certificate or not agent.signing_key:
        return None
    try:
        signer = RecordSigner.from_files(Path(agent.signing_certificate), Path(agent.signing_key), names.roles())
    except ProvenanceError as exc:
        raise ConfigError(f"agent.signing_certificate: {exc}") from exc
    log.info("records signed as %s (%s)", signer.principal, agent.signing_certificate)
    return signer


def _start_python_targets(targets: list[TargetSettings], collector: Any, filters: Any, settings: Any,
                          agent: AgentSettings) -> Any:
    """The Python-function probes (agent/pytargets.PythonTargets), fed into the collector; None without any."""
    if not targets:
        return None
    from runtime_signals.agent.config import probe_limits
    from runtime_signals.agent.pycalls import PythonCallNamer
    from runtime_signals.agent.pyprobes import PythonProbeSpec, PythonTracer
    from runtime_signals.agent.pysource import PythonSources
    from runtime_signals.agent.pytargets import PythonTargets
    from runtime_signals.agent.selectors import ProcessSelector

    node = collector.node_files
    namer = PythonCallNamer(PythonSources(node.purls), node.digests, Path(agent.proc_root))
    python = PythonTargets(PythonTracer(), namer, collector.describe_process, filters, host=settings.host,
                           agent_id=settings.agent_id, proc_root=Path(agent.proc_root),
                           rescan_interval_ms=agent.target_rescan_interval_ms,
                           on_code_unit=collector.note_code_unit,
                           describe_interpreter=collector.python_marker_description,
                           budget=collector.settings.budget)
    for target in targets:
        for symbol in target.symbols:
            probe = python.add(PythonProbeSpec.parse(symbol), probe_limits(agent))
            filters.add(probe.spec.probe_id, ProcessSelector.of(target))
    python.scan()
    collector.add_source(python)
    return python


def run(args: argparse.Namespace) -> int:
    """Attach every target that can be attached, then pump until SIGINT/SIGTERM; targets
    that appear later (libraries, containers) are attached by a rescan thread."""
    if args.check is not None:
        return check(args)
    from runtime_signals.agent import bpfsys
    from runtime_signals.agent.collector import Collector, CollectorSettings, hold_rules_wait_s
    from runtime_signals.agent.config import budget_settings, probe_limits, tracer_settings
    from runtime_signals.agent.filewatch import FileWatch
    from runtime_signals.agent.identity import PodDirectory, host_id, node_name
    from runtime_signals.agent.metrics import HealthServer
    from runtime_signals.agent.pinning import (
        PIN_ROOT,
        PinnedGeneration,
        abandoned_generations,
        run_directory,
    )
    from runtime_signals.agent.probes import CallTracer
    from runtime_signals.agent.processes import NodeFiles
    from runtime_signals.agent.publisher import ProducerSettings, Publisher
    from runtime_signals.agent.selectors import TargetFilters
    from runtime_signals.agent.state import AgentState
    from runtime_signals.agent.targets import TargetManager
    from runtime_signals.kafka.provenance import speaks_for

    config = load(args)
    agent, kafka = config.agent, config.kafka
    if not agent.targets and not agent.plans:
        raise ConfigError("no targets: pass --probe BINARY:SYMBOL, or [[agent.targets]] in --config, or "
                          "follow probe plans (agent.plans)")
    # Probes are attached at once, whatever the broker does: the access check (refused
    # credentials stop the agent) runs beside the start-up, never before it.
    refused: list[ConfigError] = []
    stop = threading.Event()

    def _check_access() -> None:
        try:
            _check_kafka_access(kafka)
        except ConfigError as exc:
            refused.append(exc)
            stop.set()

    threading.Thread(target=_check_access, name="kafka-access-check", daemon=True).start()
    signer = _record_signer(agent, TopicNames().with_prefix(kafka.topic_prefix))
    # The identity and figures of earlier runs, beside the spool (agent/state.py).
    state_dir = Path(agent.spool_dir) if agent.spool_dir else None
    previous = AgentState.load(state_dir) if state_dir is not None else None
    if previous is not None and signer is not None and not speaks_for(signer.principal, previous.agent_id):
        log.warning("agent id %s of the last run is not %s's (this node's signing certificate): starting as a "
                    "new agent identity", previous.agent_id, signer.principal)
        previous = None
    # A signing agent is named by its certificate: the processor takes its records only as that
    # principal's (runtime_signals/kafka/provenance.py).
    state = AgentState.new(agent.host_name if signer is None else signer.principal) if previous is None \
        else previous
    if previous is not None:
        state.restarts += 1
    tracer = CallTracer(tracer_settings(agent))
    tracer.default_limits = probe_limits(agent)
    generation = None
    if state_dir is not None and bpfsys.bpffs_mounted(PIN_ROOT.parent):
        # Pinned, the probes and maps outlive a killed agent (agent/pinning.py).
        if previous is not None and previous.pin_dir:
            _resume_left_holds(Path(previous.pin_dir))
            generation = PinnedGeneration.open(Path(previous.pin_dir))
            if generation is not None:
                tracer.adopt(generation, {i: (p.path, p.file_offset) for i, p in previous.probes.items()})
        try:
            tracer.pin(run_directory(state.agent_id, state.restarts))
        except (BpfLoadError, OSError) as exc:
            tracer.unpin()
            log.warning("probes and maps not pinned (%s): a killed agent's uncollected calls will be lost, and "
                        "counted at restart", exc)
    elif state_dir is not None:
        log.warning("no BPF filesystem at %s: probes and maps are not pinned, a killed agent's uncollected calls "
                    "are lost (counted at restart); mount it: mount -t bpf bpf %s", PIN_ROOT.parent, PIN_ROOT.parent)
    security = {k: v for k, v in kafka.librdkafka_config().items() if k != "bootstrap.servers"}
    producer = ProducerSettings(bootstrap_servers=kafka.bootstrap_servers, extra=security,
                                queue_max_kbytes=agent.producer_queue_max_kbytes,
                                queue_max_messages=agent.producer_queue_max_messages)
    publisher = Publisher(producer, spool=_open_spool(agent), signer=signer)
    # In a container the agent's hostname is the container's: the node is named from its
    # own files (through host_root) or the configured name, so recreating the agent's
    # container changes neither the node's name nor its processes' container id.
    host_root = Path(agent.host_root)
    node = NodeFiles(pods=PodDirectory(Path(agent.kubernetes_pods_dir)), host=host_id(host_root, agent.host_name))
    log.info("node %s; its own processes are container %s", node_name(host_root, agent.host_name), node.host)
    filters = TargetFilters()
    settings = CollectorSettings(topics=TopicNames().with_prefix(kafka.topic_prefix),
                                 watermark_interval_ms=agent.watermark_interval_ms,
                                 process_sweep_interval_ms=agent.process_sweep_interval_ms,
                                 symbol_chunk_max_bytes=agent.symbol_chunk_max_bytes,
                                 statistics_interval_ms=agent.statistics_interval_ms,
                                 shutdown_flush_timeout_s=agent.shutdown_flush_timeout_ms / 1000,
                                 budget=budget_settings(agent), jit_perf_maps=agent.jit_perf_maps,
                                 jvm_jcmd=agent.jvm_jcmd, unwind_cache_dir=agent.unwind_cache_dir,
                                 unwind_cache_max_bytes=agent.unwind_cache_max_bytes)
    settings.host = node_name(host_root, agent.host_name)
    collector = Collector(settings, tracer, publisher, node=node, filters=filters, state=state, state_dir=state_dir)
    metrics = None
    if agent.metrics_port is not None:
        metrics = HealthServer(agent.metrics_address, agent.metrics_port, lambda: collector.latest,
                               collector.healthy, collector.ready)
        metrics.start()
        print(f"agent metrics on port {metrics.port}: /metrics /healthz /readyz", file=sys.stderr, flush=True)
    names = target_names(config, args.probe)
    native = [(t, n) for t, n in zip(agent.targets, names, strict=False) if not t.is_python]
    python = _start_python_targets([t for t in agent.targets if t.is_python], collector, filters, settings, agent)
    # Every attach goes through the file watch: a probed file written in place loses its
    # probes at the first write (agent/filewatch.py), and is probed afresh once rewritten.
    watch = FileWatch(tracer.attach, tracer.retire)
    targets = TargetManager([t for t, _ in native], [n for _, n in native], attach=watch.attach,
                            on_attached=collector.register_probe, filters=filters,
                            proc_root=Path(agent.proc_root), host_root=Path(agent.host_root),
                            max_symbols_per_pattern=agent.max_symbols_per_pattern, purls=node.purls,
                            pods=node.pods, attach_lock=collector.attach_lock, host=node.host,
                            detach=tracer.retire_many, prepare=collector.prepare)
    watch.on_changed = targets.forget_file
    collector.add_cache_sizes(targets.sizes)
    watch.start(stop)
    targets.scan()
    collector.take_over(previous, generation)
    keep = tuple(p for p in (tracer.pin_dir,) if p is not None)
    # A process held by any agent that died is resumed now, not once its pins are judged
    # abandoned: nothing else would ever resume it.
    for dead in abandoned_generations(keep=keep, max_age_s=0):
        _resume_left_holds(dead)
    for abandoned in abandoned_generations(keep=keep):
        stale = PinnedGeneration.open(abandoned)
        if stale is not None:
            log.warning("removing %s: pins of an agent that died and was not restarted with its state; what its "
                        "probes counted since is lost", abandoned)
            stale.remove()
    tracer.remove_stale_events()
    if metrics is not None:
        metrics.add_counters("file_watch", "Probes retired because their file was written in place; the file is "
                             "probed afresh once rewritten (agent/filewatch.py)",
                             lambda: {"probes_retired_file_changed": watch.counts["probes_retired_file_changed"]})
        metrics.add_counters("targets", "Target files and probes: late_attaches are files attached by a rescan after "
                             "a process had mapped them (calls before were not observed)", targets.counters)
    loadwatch = None
    from runtime_signals.agent.loadwatch import can_resume_any_process

    if agent.hold_processes and not can_resume_any_process():
        log.warning("agent.hold_processes: off, the agent lacks CAP_KILL and could not resume a process it held; "
                    "libraries are attached by the rescan and calls before it are counted as late_attaches")
    elif agent.hold_processes:
        from runtime_signals.agent.loadwatch import KIND_NEW_ROOT, LoadWatch

        rules_wait_s = hold_rules_wait_s(agent.hold_heartbeat_ms)

        def _answer_hold(pid: int, kind: int) -> None:
            targets.scan_pid(pid)
            if kind != KIND_NEW_ROOT:  # a new root's loader is hooked (LoadWatch); its process maps no target yet
                collector.capture(pid, wait_s=rules_wait_s)

        loadwatch = LoadWatch(agent.targets, _answer_hold, backing=targets.backing, proc_root=Path(agent.proc_root),
                              host_root=Path(agent.host_root), heartbeat_ms=agent.hold_heartbeat_ms,
                              pin_dir=tracer.pin_dir)
        hooked = loadwatch.hook_all()
        log.info("loader hooks: %d loader file(s) hooked", hooked)
        loadwatch_thread = loadwatch.run(stop)
        if metrics is not None:
            metrics.add_counters("loader_holds", "Processes held for the agent at exec or library load "
                                 "(docs/attribution.md)", loadwatch.counters)

    def _request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: draining and flushing", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    targets.start(stop, agent.target_rescan_interval_ms)
    plans = None
    if agent.plans:
        from runtime_signals.agent.plans import PlanFollower

        # Plan targets join the manager's, and the loader holds watch their names too: a plan's
        # library loaded later is attached before its process goes on.
        if loadwatch is not None:
            targets.on_targets_changed = loadwatch.watch
        plans = PlanFollower(targets, publisher, settings.topics, consumer_config=kafka.librdkafka_config(),
                             host=settings.host, agent_id=settings.agent_id,
                             status_interval_ms=agent.plan_status_interval_ms)
        plans.run(stop)
        if metrics is not None:
            metrics.add_counters("plans", "Probe plans followed from the plans topic (docs/plans.md)",
                                 lambda: dict(plans.counts) if plans is not None else {})
    if python is not None:
        python.start(stop)
    # Tests and wrappers wait for this line before starting the workload.
    print(f"agent ready: {targets.counts['probes_attached']} probe(s) attached, "
          f"{len(targets.missing)} target problem(s) on {socket.gethostname()}", file=sys.stderr, flush=True)
    try:
        collector.run(stop)
    finally:
        if loadwatch is not None:
            stop.set()
            loadwatch_thread.join(10)
            log.info("loader holds: %s", loadwatch.counters())
        log.info("targets: %s", targets.counters())
        tracer.close()
        if python is not None:
            python.close()
        if metrics is not None:
            metrics.close()
    if refused:
        raise refused[0]
    return 0


def _resume_left_holds(pin_dir: Path) -> None:
    """Resume what a killed agent held (agent/loadwatch.py): its processes must not stay stopped."""
    from runtime_signals.agent.loadwatch import resume_left_holds

    try:
        resumed = resume_left_holds(pin_dir)
    except (BpfLoadError, OSError) as exc:
        log.error("reading the processes held by the agent that pinned %s failed: %s; any it left stopped stay "
                  "stopped (SIGCONT them)", pin_dir, exc)
        return
    if resumed:
        log.warning("resumed %d process(es) held by the agent that pinned %s", resumed, pin_dir)
