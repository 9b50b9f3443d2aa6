"""`signals kafka`: the local development broker (up, down, status) and topic creation on any cluster."""

from __future__ import annotations

import argparse
import os
import sys

from runtime_signals.config import CONFIG_ENV, load_config
from runtime_signals.devtools import localkafka
from runtime_signals.kafka import admin
from runtime_signals.kafka.security import KafkaSecurityError, check_access
from runtime_signals.schemas.topics import TopicNames, topic_settings

EPILOG = "examples:\n  signals kafka up\n  signals kafka topics --partitions 3\n  signals kafka down"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "topics"])
    parser.add_argument("--topic-prefix", default="", help="with topics: prefix of the topic names")
    parser.add_argument("--partitions", type=int, default=3, help="with topics: partitions (default: %(default)s)")
    parser.add_argument("--bootstrap", default=None,
                        help="with topics: the cluster to create them on (default: $KAFKA_BOOTSTRAP_SERVERS, "
                             "else the local broker)")
    parser.add_argument("--replication-factor", type=int, default=1,
                        help="with topics: replicas of each topic (default: %(default)s; 3 on a production cluster)")
    parser.add_argument("--config", metavar="FILE",
                        help="with topics: configuration whose [kafka] settings (address, TLS, SASL) reach the "
                             "cluster (default: $SIGNALS_CONFIG)")


def run(args: argparse.Namespace) -> int:
    """`signals kafka up|down|status|topics`."""
    config = localkafka.LocalKafkaConfig.from_env()
    if args.action == "up":
        print(localkafka.up(config))
    elif args.action == "down":
        localkafka.down(config)
    elif args.action == "status":
        print(localkafka.status(config))
    else:
        return _create_topics(args, config.bootstrap)
    return 0


def _create_topics(args: argparse.Namespace, local_bootstrap: str) -> int:
    """`signals kafka topics`: on the cluster the configuration names (TLS and SASL
    included), else on the local broker."""
    configured = args.config or any(os.environ.get(name) for name in (
        CONFIG_ENV, "KAFKA_BOOTSTRAP_SERVERS", "SIGNALS_KAFKA__BOOTSTRAP_SERVERS"))
    bootstrap = args.bootstrap or (None if configured else local_bootstrap)
    client = load_config(args.config, flags={"kafka.bootstrap_servers": bootstrap}).kafka.librdkafka_config()
    names = TopicNames().with_prefix(args.topic_prefix)
    try:
        # A refused password or certificate is reported now, not as a create timeout.
        check_access(client)
        admin.ensure_topics(client["bootstrap.servers"], [
            admin.TopicSpec(t.name, t.partitions, t.config, args.replication_factor)
            for t in topic_settings(names, args.partitions)
        ], client_config=client)
    except (KafkaSecurityError, localkafka.LocalKafkaError, admin.TopicCreationError) as exc:
        print(f"signals kafka topics: {exc}", file=sys.stderr)
        return 1
    print(f"topics ready on {client['bootstrap.servers']}: {', '.join(t.name for t in topic_settings(names))}")
    return 0
