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

EPILOG = ("examples:\n  signals kafka up\n  signals kafka topics --partitions 3\n  signals kafka down\n"
          "  signals kafka status    # exit 0 running and answering, 1 running but silent, 3 not running")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "topics"])
    parser.add_argument("--topic-prefix", default=None,
                        help="with topics: prefix of the topic names (setting: kafka.topic_prefix)")
    parser.add_argument("--partitions", type=int, default=3, help="with topics: partitions (default: %(default)s)")
    parser.add_argument("--bootstrap", default=None,
                        help="with topics: the cluster to create them on (default: $KAFKA_BOOTSTRAP_SERVERS, "
                             "else the local broker)")
    parser.add_argument("--output-retention-ms", type=int, default=None,
                        help="with topics: retention of the summaries, paths and latest-state topics "
                             "(setting: kafka.output_retention_ms, default 30 days)")
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
        state = localkafka.status(config)
        if state.running and state.answering:
            print(f"local broker running (pid {state.pid}) and answering on {state.bootstrap}")
        elif state.running:
            print(f"local broker running (pid {state.pid}) but not answering on {state.bootstrap}; "
                  f"see its log under {config.state_dir}")
            return 1
        else:
            print(f"no local broker running (would listen on {state.bootstrap}); start it with `signals kafka up`")
            return 3
    else:
        return _create_topics(args, config.bootstrap)
    return 0


def _create_topics(args: argparse.Namespace, local_bootstrap: str) -> int:
    """`signals kafka topics`: on the cluster the configuration names (TLS and SASL
    included), else on the local broker."""
    configured = args.config or any(os.environ.get(name) for name in (
        CONFIG_ENV, "KAFKA_BOOTSTRAP_SERVERS", "SIGNALS_KAFKA__BOOTSTRAP_SERVERS"))
    bootstrap = args.bootstrap or (None if configured else local_bootstrap)
    config = load_config(args.config, flags={"kafka.bootstrap_servers": bootstrap,
                                             "kafka.topic_prefix": args.topic_prefix,
                                             "kafka.output_retention_ms": args.output_retention_ms})
    names = TopicNames().with_prefix(config.kafka.topic_prefix)
    client = config.kafka.librdkafka_config()
    try:
        # A refused password or certificate is reported now, not as a create timeout.
        check_access(client)
        admin.ensure_topics(client["bootstrap.servers"], [
            admin.TopicSpec(t.name, t.partitions, t.config, args.replication_factor)
            for t in topic_settings(names, args.partitions, config.kafka.output_retention_ms)
        ], client_config=client)
    except (KafkaSecurityError, localkafka.LocalKafkaError, admin.TopicCreationError) as exc:
        print(f"signals kafka topics: {exc}", file=sys.stderr)
        return 1
    print(f"topics ready on {client['bootstrap.servers']}: {', '.join(t.name for t in topic_settings(names))}")
    return 0
