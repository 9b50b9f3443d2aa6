"""What one processor worker runs with, built from the checked configuration
(runtime_signals.config.schema.ProcessorSection, whose defaults are the only ones)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime_signals.config.schema import ProcessorSection, SignalsConfig
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas.topics import OUTPUT_RETENTION_MS, TopicNames

_DEFAULTS = ProcessorSection()


def _inflight_dir(setting: str) -> Path | None:
    """processor.inflight_dir: empty for the system temporary directory, "off" for none."""
    if setting == "off":
        return None
    return Path(setting) if setting else Path(tempfile.gettempdir()) / "runtime-signals-inflight"


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    window: WindowSpec
    topics: TopicNames = field(default_factory=TopicNames)       # raw, symbols, modules are read here
    output_topics: TopicNames | None = None                      # default: topics
    app_id: str = _DEFAULTS.app_id
    group_instance_id: str | None = None
    agent_idle_ms: int = _DEFAULTS.agent_idle_ms
    symbol_wait_ms: int = _DEFAULTS.symbol_wait_ms
    max_pending_windows: int = _DEFAULTS.max_pending_windows
    max_event_ahead_ms: int = _DEFAULTS.max_event_ahead_ms
    latest_retention_ms: int = OUTPUT_RETENTION_MS  # kafka.output_retention_ms
    latest_states_in_memory: int = _DEFAULTS.latest_states_in_memory
    latest_paths_in_memory: int = _DEFAULTS.latest_paths_in_memory
    # Where each partition's in-flight offset is kept (processor/inflight.py); None: off.
    # Must survive a restart of the worker process (an emptyDir in Kubernetes).
    inflight_dir: Path | None = field(default_factory=lambda: _inflight_dir(_DEFAULTS.inflight_dir))
    checkpoint_interval_ms: int = _DEFAULTS.checkpoint_interval_ms
    session_timeout_ms: int = _DEFAULTS.session_timeout_ms
    metrics_port: int | None = None
    # faust's application directory is <data_dir>/<app_id>; faust creates it at start even
    # with in-memory tables, so it must be writable (a read-only root otherwise fails).
    data_dir: Path = Path(_DEFAULTS.data_dir)
    # librdkafka connection settings (security, client id) laid over bootstrap_servers:
    # runtime_signals.config.schema.KafkaSettings.librdkafka_config(). The side readers use
    # them as they are; processor/faust_config.py maps them onto faust's settings.
    kafka_config: dict[str, Any] = field(default_factory=dict)
    # CA bundle of the agents' signing certificates (runtime_signals/kafka/provenance.py);
    # None: records are taken unsigned.
    agent_ca_file: Path | None = None

    def connection(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_config}

    @classmethod
    def from_config(cls, config: SignalsConfig) -> ProcessorSettings:
        """The worker's settings from a checked configuration (load_config validated every value)."""
        section, kafka = config.processor, config.kafka
        topics = TopicNames().with_prefix(kafka.topic_prefix)
        outputs = (None if section.output_topic_prefix is None
                   else TopicNames().with_prefix(section.output_topic_prefix))
        return cls(bootstrap_servers=kafka.bootstrap_servers,
                   window=WindowSpec(size_ms=section.window_ms, allowed_lateness_ms=section.allowed_lateness_ms),
                   topics=topics, output_topics=outputs, app_id=section.app_id,
                   group_instance_id=section.group_instance_id, agent_idle_ms=section.agent_idle_ms,
                   symbol_wait_ms=section.symbol_wait_ms, max_pending_windows=section.max_pending_windows,
                   max_event_ahead_ms=section.max_event_ahead_ms, latest_retention_ms=kafka.output_retention_ms,
                   latest_states_in_memory=section.latest_states_in_memory,
                   latest_paths_in_memory=section.latest_paths_in_memory,
                   inflight_dir=_inflight_dir(section.inflight_dir), data_dir=Path(section.data_dir),
                   checkpoint_interval_ms=section.checkpoint_interval_ms,
                   session_timeout_ms=section.session_timeout_ms, metrics_port=section.metrics_port,
                   kafka_config=kafka.librdkafka_config(),
                   agent_ca_file=Path(section.agent_ca_file) if section.agent_ca_file else None)

    @property
    def outputs(self) -> TopicNames:
        return self.output_topics or self.topics
