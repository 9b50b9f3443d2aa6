"""The settings of one processor worker (built by processor/cli.py from flags and config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime_signals.schemas.topics import OUTPUT_RETENTION_MS, TopicNames

from runtime_signals.processor.errors import ConfigError
from runtime_signals.processor.windows import WindowSpec


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    window: WindowSpec
    topics: TopicNames = field(default_factory=TopicNames)       # raw, symbols, modules are read here
    output_topics: TopicNames | None = None                      # default: topics
    app_id: str = "runtime-signals-processor"
    group_instance_id: str | None = None
    agent_idle_ms: int = 30_000
    symbol_wait_ms: int = 10_000
    max_pending_windows: int = 10_000
    latest_retention_ms: int = OUTPUT_RETENTION_MS  # kafka.output_retention_ms
    checkpoint_interval_ms: int = 1_000
    session_timeout_ms: int = 10_000
    metrics_port: int | None = None
    # librdkafka connection settings (security, client id) laid over bootstrap_servers:
    # runtime_signals/config.py's KafkaSettings.librdkafka_config(). The side readers use
    # them as they are; processor/faust_config.py maps them onto faust's settings.
    kafka_config: dict[str, Any] = field(default_factory=dict)

    def connection(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_config}

    def __post_init__(self) -> None:
        if self.checkpoint_interval_ms <= 0:
            raise ConfigError(f"checkpoint_interval_ms={self.checkpoint_interval_ms}: must be positive "
                              f"(--checkpoint-interval-ms)")
        if self.session_timeout_ms <= 0:
            raise ConfigError(f"session_timeout_ms={self.session_timeout_ms}: must be positive "
                              f"(--session-timeout-ms)")

    @property
    def outputs(self) -> TopicNames:
        return self.output_topics or self.topics
