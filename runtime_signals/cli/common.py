"""What every reading verb shares: where the cluster is and which pipeline's topics to read.

The read verbs (summaries, reachable, export, report, watch, capture, replay) take their
connection from the one configuration (runtime_signals.config.load_config): ``--config
FILE`` or ``$SIGNALS_CONFIG``, then ``SIGNALS_KAFKA__*`` variables, then ``--bootstrap`` and
``--topic-prefix``; TLS and SASL settings come along, so a secured cluster reads the same.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from runtime_signals.schemas.topics import TopicNames, normalize_prefix


@dataclass(frozen=True)
class Connection:
    """The effective connection of one command."""

    bootstrap: str
    topic_prefix: str              # normalised: empty, or ending in "."
    kafka_config: dict[str, str]   # librdkafka settings: bootstrap, client id, TLS, SASL

    @property
    def topics(self) -> TopicNames:
        return TopicNames().with_prefix(self.topic_prefix)

    def topic(self, name: str) -> str:
        """A topic's full name: a role (raw, symbols, modules, summaries, …) or a bare name
        (``signals.raw.v1``) gets the prefix; a name that already has it is kept."""
        roles = self.topics.__dict__
        if name in roles:
            return str(roles[name])
        if self.topic_prefix and not name.startswith(self.topic_prefix):
            return self.topic_prefix + name
        return name


def add_connection_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $SIGNALS_CONFIG)")
    parser.add_argument("--bootstrap", default=None,
                        help=f"Kafka bootstrap servers (setting: kafka.bootstrap_servers; default "
                             f"{default_bootstrap})")
    parser.add_argument("--topic-prefix", default=None,
                        help="prefix of the pipeline's topic names (setting: kafka.topic_prefix); "
                             "'ux.svc' reads ux.svc.signals.*")


def connection(args: argparse.Namespace) -> Connection:
    """The configuration's [kafka] section with this command's flags on top; raises
    SettingsError naming a bad setting and where it came from."""
    from runtime_signals.config import load_config

    config = load_config(getattr(args, "config", None), flags={
        "kafka.bootstrap_servers": getattr(args, "bootstrap", None),
        "kafka.topic_prefix": getattr(args, "topic_prefix", None),
    }, flag_names={"kafka.bootstrap_servers": "--bootstrap", "kafka.topic_prefix": "--topic-prefix"})
    kafka = config.kafka
    return Connection(kafka.bootstrap_servers, normalize_prefix(kafka.topic_prefix), kafka.librdkafka_config())
