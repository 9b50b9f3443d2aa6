"""faust-streaming wiring: topics in, Engine, topics out. No logic lives here.

faust runs its windows' expiry on the wall clock and its exactly-once mode has open
bugs, so windows are ours (processor/windows.py) and faust only moves records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import faust

from schemas import codec
from schemas.errors import SchemaError
from schemas.topics import TopicNames

from .engine import Engine
from .symbol_store import SymbolStore
from .windows import WindowSpec

log = logging.getLogger(__name__)

SYMBOL_TABLE = "io.runtimesignals.SymbolTable"


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    window: WindowSpec
    topics: TopicNames = field(default_factory=TopicNames)
    app_id: str = "runtime-signals-processor"
    web_port: int = 6066
    web_enabled: bool = False


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def build_app(settings: ProcessorSettings, engine: Engine | None = None) -> faust.App:
    """A faust App whose one agent feeds the raw topic through an Engine."""
    symbols = SymbolStore()
    engine = engine or Engine(settings.window, symbols=symbols)
    registry = codec.SchemaRegistry.default()
    app = faust.App(
        settings.app_id,
        broker=_broker_urls(settings.bootstrap_servers),
        autodiscover=False,
        store="memory://",
        consumer_auto_offset_reset="earliest",
        # No leader topic: this app has no faust tables or timers that need one.
        topic_disable_leader=True,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        key_serializer="raw",
        value_serializer="raw",
    )
    raw = app.topic(settings.topics.raw, key_type=bytes, value_type=bytes)
    symbol_tables = app.topic(settings.topics.symbols, key_type=bytes, value_type=bytes)
    outputs = {
        "summary": app.topic(settings.topics.summaries, key_type=bytes, value_type=bytes),
        "path": app.topic(settings.topics.paths, key_type=bytes, value_type=bytes),
    }

    @app.agent(raw, name="process-raw")
    async def process(stream: faust.StreamT) -> None:
        async for event in stream.events():
            for output in engine.handle(event.message.partition, event.value):
                await outputs[output.kind].send(key=output.key, value=output.value)

    @app.agent(symbol_tables, name="load-symbols")
    async def load_symbols(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                symbols.add(codec.decode(value, registry, SYMBOL_TABLE).record)
            except SchemaError as exc:
                log.warning("symbol table record skipped: %s", exc)

    app.runtime_engine = engine  # type: ignore[attr-defined]  # for tests and metrics
    return app


def run_worker(settings: ProcessorSettings, loglevel: str = "info") -> None:
    """Run one worker in the foreground until SIGINT/SIGTERM."""
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
