"""A real single-node Apache Kafka broker on loopback, for tests and the local demo.

The broker runs in KRaft mode as one combined broker+controller process. Its classpath comes
from Maven Central through runtime_signals/devtools/data/pom.xml, copied once into a cache dir, so this machine
needs only `java` (17+) and `mvn`; no Docker, no Kafka tarball.

On disk:
    <cache root>/kafka-<version>/lib/*.jar    the classpath; `.complete` marks a finished copy
    <state dir>/server.properties             rewritten by every up()
    <state dir>/data/                         log.dirs, formatted once with a random cluster id
    <state dir>/logs/server.log, broker.out   broker log (INFO+) and the JVM's stdout/stderr
    <state dir>/broker.pid

Exceptions:
    LocalKafkaError            root of everything raised here
     ├── ToolNotFoundError     `java` or `mvn` is missing (`.tool` names it)
     ├── ProvisionError        Maven could not produce the classpath
     ├── BrokerStartError      formatting or start-up failed; the message quotes the broker log
     └── TopicCreationError    CreateTopics failed for a topic (`.topic`, `.code` kept)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# A copy of <kafka.version> in runtime_signals/devtools/data/pom.xml; tests/test_localkafka.py keeps them equal.
KAFKA_VERSION = "4.3.1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_CACHE_ROOT = Path("~/.cache/runtime-signals")
_DATA_DIR = Path(__file__).resolve().parent / "data"
_MAVEN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_LOG_TAIL_LINES = 25


class LocalKafkaError(Exception):
    """Root of the errors raised by runtime_signals.devtools.localkafka."""


class ToolNotFoundError(LocalKafkaError):
    def __init__(self, tool: str, hint: str) -> None:
        super().__init__(f"`{tool}` not found on PATH: {hint}")
        self.tool = tool


class ProvisionError(LocalKafkaError):
    pass


class BrokerStartError(LocalKafkaError):
    pass


@dataclass(frozen=True)
class LocalKafkaConfig:
    """Where the broker's jars and state live and where it listens.

    The constructor never reads the environment; from_env() applies the documented overrides.
    """

    cache_root: Path
    state_dir: Path
    version: str = KAFKA_VERSION
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    heap_max_mb: int = 512
    pom_path: Path = _DATA_DIR / "pom.xml"
    log4j_config_path: Path = _DATA_DIR / "log4j2.properties"
    # Broker settings laid over the defaults of _broker_properties() (e.g. for one test).
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    # Further listeners on host, name -> port; the name is also the listener's security
    # protocol (SSL, SASL_SSL, SASL_PLAINTEXT), configured through extra_properties
    # (listener.name.<name>.ssl.*, sasl.enabled.mechanisms, ...). The PLAINTEXT listener stays:
    # start-up probes, topic creation and inter-broker traffic use it.
    extra_listeners: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Absolute paths: they end up in server.properties and identify the broker's process.
        for name in ("cache_root", "state_dir", "pom_path", "log4j_config_path"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        state_dir: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
    ) -> LocalKafkaConfig:
        """Defaults, then RUNTIME_SIGNALS_CACHE (cache root), RUNTIME_SIGNALS_KAFKA_PORT and
        RUNTIME_SIGNALS_KAFKA_CONTROLLER_PORT, then the explicit arguments."""
        env = os.environ if environ is None else environ
        cache_root = Path(env.get("RUNTIME_SIGNALS_CACHE") or DEFAULT_CACHE_ROOT)
        return cls(
            cache_root=cache_root,
            state_dir=state_dir if state_dir is not None else cache_root.expanduser() / "broker",
            port=port if port is not None else _env_port(env, "RUNTIME_SIGNALS_KAFKA_PORT", DEFAULT_PORT),
            controller_port=controller_port
            if controller_port is not None
            else _env_port(env, "RUNTIME_SIGNALS_KAFKA_CONTROLLER_PORT", DEFAULT_CONTROLLER_PORT),
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka_dir(self) -> Path:
        return self.cache_root / f"kafka-{self.version}"

    @property
    def lib_dir(self) -> Path:
        return self.kafka_dir / "lib"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.state_dir / "server.properties"


@dataclass(frozen=True)
class BrokerStatus:
    pid: int | None  # None: no broker of this state dir is running
    answering: bool  # it answered a metadata request within the probe timeout
    bootstrap: str

    @property
    def running(self) -> bool:
        return self.pid is not None


def provision(cfg: LocalKafkaConfig) -> Path:
    """Make the broker's jars available and return the lib dir.

    Maven runs only when the marker is missing or was written for another pom or version, so a
    half-finished copy (interrupted download) is never mistaken for a classpath.
    """
    if not cfg.pom_path.is_file():
        raise ProvisionError(f"broker pom {cfg.pom_path} not found; run from a source checkout")
    digest = hashlib.sha256(cfg.pom_path.read_bytes() + cfg.version.encode()).hexdigest()
    marker = cfg.kafka_dir / ".complete"
    if _read_text(marker) == digest:
        return cfg.lib_dir
    mvn = _require_tool("mvn", "install Maven 3.8+ (Debian: apt-get install maven)")
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    # Two test sessions may provision at once; the second waits and then finds the marker.
    with _exclusive_lock(cfg.kafka_dir / ".lock"):
        if _read_text(marker) == digest:
            return cfg.lib_dir
        marker.unlink(missing_ok=True)
        staging = cfg.kafka_dir / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(cfg.pom_path), f"-Dkafka.version={cfg.version}",
               "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise ProvisionError(f"Maven did not resolve Kafka {cfg.version} within "
                                 f"{_MAVEN_TIMEOUT_S:g}s; is Maven Central reachable?") from exc
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            raise ProvisionError(
                f"Maven could not resolve Kafka {cfg.version} from {cfg.pom_path} "
                f"(exit {proc.returncode}); is Maven Central reachable?\n"
                + _last_lines(proc.stdout + proc.stderr))
        shutil.rmtree(cfg.lib_dir, ignore_errors=True)
        staging.rename(cfg.lib_dir)
        marker.write_text(digest)
    return cfg.lib_dir


def up(cfg: LocalKafkaConfig, timeout_s: float = 90.0) -> str:
    """Start the broker of cfg.state_dir unless it runs already; return its bootstrap address.

    timeout_s bounds the wait for the broker to answer, not a first Maven download.
    """
    pid = _running_pid(cfg)
    if pid is not None:
        _wait_until_answering(cfg, pid, timeout_s)  # it may still be starting
        return cfg.bootstrap
    cfg.pid_file.unlink(missing_ok=True)
    java = _java_binary()
    for port in (cfg.port, cfg.controller_port, *cfg.extra_listeners.values()):
        _check_port_free(cfg, port)
    lib = provision(cfg)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.properties_file.write_text(
        "".join(f"{k}={v}\n" for k, v in _broker_properties(cfg).items()))
    _format_storage(cfg, java, lib)
    pid = _spawn_broker(cfg, java, lib)
    cfg.pid_file.write_text(f"{pid}\n")
    try:
        _wait_until_answering(cfg, pid, timeout_s)
    except BrokerStartError:
        down(cfg, timeout_s=10.0)  # leave nothing half-started behind
        raise
    return cfg.bootstrap


def down(cfg: LocalKafkaConfig, timeout_s: float = 30.0) -> bool:
    """Stop the broker of cfg.state_dir; return False if none was running.

    SIGTERM lets Kafka shut down cleanly (so the next start skips log recovery); SIGKILL
    follows if it has not exited within timeout_s.
    """
    pid = _running_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_exited(pid, wait_s):
            cfg.pid_file.unlink(missing_ok=True)
            return True
    raise LocalKafkaError(f"Kafka broker pid {pid} ({cfg.state_dir}) survived SIGKILL")


def status(cfg: LocalKafkaConfig, timeout_s: float = 2.0) -> BrokerStatus:
    """Whether the broker of cfg.state_dir runs and answers; another process on the same port
    does not count as running."""
    pid = _running_pid(cfg)
    answering = pid is not None and _answers(cfg.bootstrap, timeout_s)
    return BrokerStatus(pid=pid, answering=answering, bootstrap=cfg.bootstrap)


def new_cluster_id() -> str:
    """A random cluster id shaped like Kafka's Uuid.randomUuid(): base64url, 22 chars."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka skips ids starting with "-" too: the CLI would parse them as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def _broker_properties(cfg: LocalKafkaConfig) -> dict[str, str]:
    plaintext, controller = f"{cfg.host}:{cfg.port}", f"{cfg.host}:{cfg.controller_port}"
    extra = [f"{name}://{cfg.host}:{port}" for name, port in cfg.extra_listeners.items()]
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": controller,
        "listeners": ",".join([f"PLAINTEXT://{plaintext}", f"CONTROLLER://{controller}", *extra]),
        "advertised.listeners": ",".join([f"PLAINTEXT://{plaintext}", *extra]),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT", *(f"{name}:{name}" for name in cfg.extra_listeners)]),
        "log.dirs": str(cfg.data_dir),
        # One node: every internal topic must accept replication 1, or groups and
        # transactions hang waiting for replicas that will never exist.
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions and threads than the defaults (50, 8 io): a 2-core test box
        # otherwise spends seconds creating __consumer_offsets on the first group join.
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.num.partitions": "5",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "num.partitions": "3",
        # Tests create their topics explicitly; a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        # Consumers in tests join alone; the default 3 s delay only slows every test down.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "24",
        "log.retention.bytes": str(256 * 1024 * 1024),
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.retention.check.interval.ms": "60000",
    }
    props.update(cfg.extra_properties)
    return props


def _java_command(cfg: LocalKafkaConfig, java: str, lib: Path, main_class: str) -> list[str]:
    return [
        java, f"-Xmx{cfg.heap_max_mb}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-XX:ErrorFile={cfg.logs_dir}/hs_err_pid%p.log",
        f"-Dkafka.logs.dir={cfg.logs_dir}", f"-Dlog4j2.configurationFile={cfg.log4j_config_path}",
        "-cp", f"{lib}/*", main_class,
    ]


def _format_storage(cfg: LocalKafkaConfig, java: str, lib: Path) -> None:
    if (cfg.data_dir / "meta.properties").exists():
        return
    # --standalone makes this node the single voter of the metadata quorum, which is what
    # controller.quorum.bootstrap.servers (rather than static quorum voters) requires.
    cmd = [*_java_command(cfg, java, lib, "kafka.tools.StorageTool"), "format", "-t", new_cluster_id(), "-c", str(cfg.properties_file), "--standalone"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_FORMAT_TIMEOUT_S)
    if proc.returncode != 0:
        raise BrokerStartError(
            f"formatting {cfg.data_dir} with kafka.tools.StorageTool failed "
            f"(exit {proc.returncode}):\n" + _last_lines(proc.stdout + proc.stderr))


def _spawn_broker(cfg: LocalKafkaConfig, java: str, lib: Path) -> int:
    out = cfg.logs_dir / "broker.out"
    argv = [*_java_command(cfg, java, lib, "kafka.Kafka"), str(cfg.properties_file)]
    # posix_spawn rather than Popen: the broker must outlive this process (the CLI exits right
    # after `up`), and a Popen whose child still runs warns when garbage-collected. Its own
    # session keeps a Ctrl-C in the caller's terminal from reaching the broker.
    return os.posix_spawn(java, argv, dict(os.environ), setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ])


def _wait_until_answering(cfg: LocalKafkaConfig, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    admin = _probe_client(cfg.bootstrap)
    while True:
        if not _alive(pid):
            raise BrokerStartError(f"Kafka broker (pid {pid}, state {cfg.state_dir}) exited "
                                   f"during start-up.\n{_log_excerpt(cfg)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerStartError(f"Kafka broker (pid {pid}, state {cfg.state_dir}) did not "
                                   f"answer on {cfg.bootstrap} within {timeout_s:g}s.\n"
                                   f"{_log_excerpt(cfg)}")
        with contextlib.suppress(KafkaException):
            if admin.list_topics(timeout=min(1.0, remaining)).brokers:
                return


def _probe_client(bootstrap: str) -> AdminClient:
    # log_level 0: a broker still starting refuses connections, and librdkafka would print
    # every refusal to stderr. Short reconnect backoff so we notice the listener opening.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                        "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 500})


def _answers(bootstrap: str, timeout_s: float) -> bool:
    try:
        return bool(_probe_client(bootstrap).list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def _running_pid(cfg: LocalKafkaConfig) -> int | None:
    """The pid in the pid file if that process is this state dir's broker (not a reused pid)."""
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"kafka.Kafka" in cmdline and os.fsencode(cfg.properties_file) in cmdline:
        return pid
    return None


def _reap(pid: int) -> None:
    # A broker spawned by this process stays a zombie (and looks alive) until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_exited(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def free_port_pair(host: str = DEFAULT_HOST) -> tuple[int, int]:
    """Two adjacent free ports (client, controller) for a second broker, below the kernel's
    ephemeral range, so a client's outgoing connection cannot take them between this check
    and the broker's bind."""
    for _ in range(200):
        port = random.randrange(20000, 32000, 2)
        if _bindable(host, port) and _bindable(host, port + 1):
            return port, port + 1
    raise LocalKafkaError(f"no two adjacent free ports on {host} in 20000-32000")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _check_port_free(cfg: LocalKafkaConfig, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the broker's own listener: ignore TIME_WAIT left by a broker just stopped.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise BrokerStartError(
                f"{cfg.host}:{port} is already in use, so the broker of {cfg.state_dir} cannot "
                "listen there; stop what holds it or choose other ports "
                "(RUNTIME_SIGNALS_KAFKA_PORT, RUNTIME_SIGNALS_KAFKA_CONTROLLER_PORT)") from exc


def _java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    return _require_tool("java", "install a Java 17+ runtime (Debian: apt-get install "
                                 "openjdk-17-jre-headless) or set JAVA_HOME")


def _require_tool(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolNotFoundError(tool, hint)
    return path


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log_excerpt(cfg: LocalKafkaConfig) -> str:
    parts = []
    for path in (cfg.logs_dir / "broker.out", cfg.logs_dir / "server.log"):
        with contextlib.suppress(OSError), path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64 * 1024))  # logs grow to megabytes
            tail = _last_lines(handle.read().decode(errors="replace"))
            if tail.strip():
                parts.append(f"--- last lines of {path} ---\n{tail}")
    return "\n".join(parts) or f"(no broker output in {cfg.logs_dir})"


def _last_lines(text: str, count: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LocalKafkaError(f"{name}={raw!r} is not a TCP port number (1-65535)")
    return int(raw)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime_signals.devtools.localkafka",
        description="Run the local single-node Kafka broker (KRaft) used by tests and the demo.",
        epilog="examples:\n  python -m runtime_signals.devtools.localkafka provision\n"
               "  python -m runtime_signals.devtools.localkafka up\n"
               "  python -m runtime_signals.devtools.localkafka status\n"
               "  python -m runtime_signals.devtools.localkafka down --state-dir /tmp/broker",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("provision", "up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, help="default: <cache root>/broker")
    parser.add_argument("--port", type=int, help=f"client port (default {DEFAULT_PORT})")
    parser.add_argument("--controller-port", type=int,
                        help=f"KRaft controller port (default {DEFAULT_CONTROLLER_PORT})")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="seconds to wait for start (90) or stop (30)")
    args = parser.parse_args(argv)
    try:
        cfg = LocalKafkaConfig.from_env(state_dir=args.state_dir, port=args.port,
                                        controller_port=args.controller_port)
        if args.command == "provision":
            print(provision(cfg))
        elif args.command == "up":
            print(up(cfg, timeout_s=args.timeout_s or 90.0))
        elif args.command == "down":
            stopped = down(cfg, timeout_s=args.timeout_s or 30.0)
            print(f"stopped broker of {cfg.state_dir}" if stopped else "not running")
        else:
            st = status(cfg)
            print(f"running={st.running} pid={st.pid} answering={st.answering} "
                  f"bootstrap={st.bootstrap} state={cfg.state_dir}")
            return 0 if st.answering else 3
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
