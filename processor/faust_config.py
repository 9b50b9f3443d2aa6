"""The faust App of a processor worker: settings, security, consumer. No logic.

Every setting here serves the exactness mechanism of docs/processor.md:
- the raw topic is declared with acks=False and the agent reads it with noack(), so faust
  never commits an offset on its own: the worker commits a partition's replay offset after
  its checkpoint is written (processor/faust_app.py);
- nothing is written through faust's producer: the worker writes its outputs and
  checkpoints with librdkafka (kafka_io.OutputWriter: idempotent, acks=all);
- no faust tables, no leader topic, no topic declaration: the topics exist (created with
  explicit settings by `signals kafka topics`), and state lives in checkpoints.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, cast

import faust
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, ConsumerT
from mode import Service, ServiceT
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds

from runtime_signals.processor.errors import ConfigError
from runtime_signals.processor.settings import ProcessorSettings


class StepFirst(Service):
    """A mode Service whose wait_first steps its first coroutine in place: what takes four
    asyncio tasks per record out of faust's consumer (StepFirstConsumer).

    faust's fetch loop (faust/transport/consumer.py, Consumer._drain_messages) hands every
    record to the topic conductor as ``await self.wait_first(callback(message),
    self.suspend_flow.wait())``: mode's wait_first wraps each argument, and the service's
    stopped and crashed events, in a task, then asyncio.wait()s them. Per record that is four
    tasks and a dozen event-loop callbacks, most of a worker's time. The callback nearly
    always finishes without suspending (flow active, room in the agent's buffer), so this
    steps it once, in place: finished, it is the first to complete, and the other waitables
    are dropped unstarted. Only if it suspends (a rebalance suspended the flow, a full
    buffer) is the rest of it raced against the others exactly as faust does, so a rebalance
    still cuts a blocked delivery short."""

    # mode's own signature, whose annotation omits the None that is its default ("no timeout").
    async def wait_first(self, *coros: WaitArgT,
                         timeout: Seconds = None) -> WaitResults:  # type: ignore[assignment]
        first = coros[0] if coros else None
        if len(coros) < 2 or not isinstance(first, Coroutine) or self.should_stop:
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = first.send(None)
        except BaseException as exc:
            for other in coros[1:]:
                if isinstance(other, Coroutine):
                    other.close()  # never started: no "never awaited" warning
            if isinstance(exc, StopIteration):
                return WaitResults([first], [exc.value], False)
            raise
        return await super().wait_first(_finish(first, pending), *coros[1:], timeout=timeout)


# (partition, the fetched records of one partition in offset order as aiokafka gives them,
# the consumer generation they were fetched in) -> how many of them, from the first, it took.
BatchHandler = Callable[[TP, list[Any], int], Awaitable[int]]


class StepFirstConsumer(StepFirst, aiokafka_driver.Consumer):
    """faust's aiokafka consumer, each record delivered without a task when it can be; the
    records of a topic that has a batch handler go to it as fetched, a partition's batch at a
    time, instead of through faust's message, event, conductor and stream.

    Why: faust's per-record path (a Message and an Event per record, the conductor, the
    agent's queue and stream) costs 2.3-3.6 times librdkafka's consume + decode on its own;
    aiokafka's fetch with the records handed over directly costs no more than that floor
    (docs/benchmarks.md). What faust's delivery loop guarantees is kept (docs/processor.md,
    "Throughput"): records fetched while the flow is stopped (a rebalance) are not delivered
    and the partitions go back to their committed offsets, records below a partition's read
    offset (fetched before a seek) are dropped, a batch from an older consumer generation is
    not delivered, and the handler itself drops the rest of a batch when a rebalance stops
    the flow or changes the generation while it runs (that rebalance's assignment seeks)."""

    batch_handlers: Mapping[str, BatchHandler] = {}

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        if not self.batch_handlers:
            await super()._drain_messages(fetcher)
            return
        try:
            while not (self.should_stop or cast(Service, fetcher).should_stop):
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)  # as faust: a fetch that returns at once still yields
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    # Fetched while a rebalance holds the flow, after its seek: dropped, so
                    # back to the committed offsets, as faust's getmany does, or they would
                    # never be read again.
                    await self.perform_seek()
                    continue
                generation = self.app.consumer_generation_id
                for tp, batch in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    read_from = self._read_offset[tp]
                    fresh = batch if read_from is None else [r for r in batch if r.offset >= read_from]
                    if not fresh:
                        continue
                    handler = self.batch_handlers.get(tp.topic)
                    if handler is not None:
                        taken = await handler(tp, fresh, generation)
                    else:
                        for record in fresh:
                            await self.wait_first(self.callback(self._to_message(tp, record)),
                                                  self.suspend_flow.wait())
                        taken = len(fresh)
                    # Past what was taken only, and not once a rebalance has begun: the records
                    # left are re-read after the seek the new assignment makes, and that seek
                    # sets the read offset anew.
                    if taken and self.flow_active and self.app.consumer_generation_id == generation:
                        self._read_offset[tp] = fresh[taken - 1].offset
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        except Exception:
            self.log.exception("handing fetched records over failed")  # then faust's fetcher stops the worker
            raise


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _resumed(coro, pending)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, None, Any]:
    """Run a coroutine already stepped once, which yielded ``pending`` (the future it waits
    on), to its end under the awaiting task: hand each yield up, each wake-up or
    cancellation down."""
    while True:
        try:
            yield pending
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = coro.send(None)
            except StopIteration as done:
                return done.value


class NoTablesManager(TableManager):
    """faust's table manager without its fixed one-second wait at start for tables to
    register (faust/tables/manager.py, TableManager.on_start): this app has no tables, and
    the second delays every restart's first record."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class ProcessorApp(faust.App):
    """faust.App whose consumer steps each record in place, or hands a topic's records to its
    batch handler (set before the worker starts)."""

    batch_handlers: dict[str, BatchHandler]

    def _new_consumer(self) -> ConsumerT:
        consumer = StepFirstConsumer(self.transport, callback=self.topics.on_message,
                                     on_partitions_revoked=self._on_partitions_revoked,
                                     on_partitions_assigned=self._on_partitions_assigned,
                                     beacon=self.beacon, loop=self.transport.loop)
        consumer.batch_handlers = dict(getattr(self, "batch_handlers", {}))
        return consumer


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def ssl_context(kafka_config: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS settings (librdkafka keys ssl.*) as the ssl.SSLContext aiokafka takes."""
    try:
        context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH,
                                             cafile=kafka_config.get("ssl.ca.location"))
        certificate = kafka_config.get("ssl.certificate.location")
        if certificate:
            context.load_cert_chain(certificate, keyfile=kafka_config.get("ssl.key.location"),
                                    password=kafka_config.get("ssl.key.password"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"kafka.ssl_ca_location / ssl_certificate_location / ssl_key_location: cannot load "
                          f"them for TLS ({exc}); check the paths and the key password") from exc
    if kafka_config.get("ssl.endpoint.identification.algorithm", "https") == "none":
        context.check_hostname = False  # as librdkafka: the chain is still verified
    return context


def credentials(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """faust settings (broker_credentials, ssl_context) for the librdkafka security keys of
    runtime_signals.config: security.protocol, sasl.mechanism|username|password, ssl.*."""
    protocol = str(kafka_config.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return {}
    context = ssl_context(kafka_config) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(context), "ssl_context": context}
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return {"broker_credentials": faust.SASLCredentials(
            username=kafka_config.get("sasl.username"), password=kafka_config.get("sasl.password"),
            mechanism=kafka_config.get("sasl.mechanism", "PLAIN"), ssl_context=context)}
    raise ConfigError(f"kafka.security_protocol {protocol!r}: the processor supports PLAINTEXT, SSL, "
                      f"SASL_PLAINTEXT and SASL_SSL")


def check_port_free(port: int, address: str = "0.0.0.0") -> None:
    """Fail at start, naming the flag, when another process listens on the metrics port:
    faust's web server would only log its failure to bind."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: cannot listen on {address}:{port} ({exc}); "
                              f"choose a free port") from exc


def build_app(settings: ProcessorSettings) -> ProcessorApp:
    session_timeout_s = settings.session_timeout_ms / 1000
    # faust makes its application directory without parents: make data_dir first.
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"processor.data_dir {settings.data_dir}: cannot be created ({exc.strerror or exc}); "
                          "give a writable directory (SIGNALS_PROCESSOR__DATA_DIR)") from exc
    web: dict[str, Any] = {"web_enabled": False}
    if settings.metrics_port is not None:
        # faust's web server (aiohttp, on the worker's event loop) serves /metrics, /healthz
        # and /readyz; faust's own statistics pages are left off.
        web = {"web_enabled": True, "web_port": settings.metrics_port, "web_bind": "0.0.0.0",
               "web_stats_enabled": False, "web_graph_enabled": False, "web_tables_enabled": False,
               "web_router_enabled": False}
    return ProcessorApp(
        settings.app_id,
        broker=broker_urls(settings.bootstrap_servers),
        broker_client_id=str(settings.kafka_config.get("client.id", "runtime-signals")),
        **credentials(settings.kafka_config),
        autodiscover=False,
        datadir=str(settings.data_dir / settings.app_id),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # Records fetched ahead of the agent (faust's default 4096): past a share of it faust
        # pauses the partition's fetching, and a deeper buffer pauses it less often.
        stream_buffer_maxsize=16_384,
        consumer_group_instance_id=settings.group_instance_id,  # static membership: fast restarts
        broker_session_timeout=session_timeout_s,
        # Notice a rebalance (a worker joining) within a third of the session timeout.
        broker_heartbeat_interval=max(0.1, min(3.0, session_timeout_s / 3)),
        broker_request_timeout=max(90.0, session_timeout_s),  # faust requires >= session timeout
        # faust's own commit loop has nothing to commit (no acks); the worker commits.
        broker_commit_interval=3600.0,
        topic_allow_declare=False,
        topic_disable_leader=True,
        TableManager=NoTablesManager,
        **web,
    )
