"""Errors of the consumer library.

ConsumerError
 ├── TopicNotFoundError   the topic is not on the cluster (names topic and bootstrap)
 ├── BrokerUnreachableError  no broker of the bootstrap list answered (names the list)
 ├── ReadError            the broker refused or failed a read (names topic, partition, code)
 └── QueryError           a question cannot be asked as given (names the bad argument)

Errors raised because confluent-kafka failed keep that failure as ``__cause__`` and its
Kafka error code in ``code``.
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Root of every error this package raises."""


class TopicNotFoundError(ConsumerError, LookupError):
    """The topic does not exist on the cluster, or its metadata could not be fetched."""

    def __init__(self, topic: str, bootstrap: str, reason: str = "not in the cluster's metadata") -> None:
        super().__init__(
            f"topic {topic!r} on {bootstrap}: {reason}; check --bootstrap and --topic-prefix, "
            f"or create the topics with `signals kafka topics`"
        )
        self.topic = topic
        self.bootstrap = bootstrap


class BrokerUnreachableError(ConsumerError, ConnectionError):
    """No broker of the bootstrap list answered within the timeout."""

    def __init__(self, bootstrap: str, timeout_s: float, last_error: str | None = None) -> None:
        detail = f" (last error: {last_error})" if last_error else ""
        super().__init__(
            f"cannot reach Kafka at {bootstrap} within {timeout_s:g} s{detail}; check --bootstrap, "
            f"kafka.bootstrap_servers or $KAFKA_BOOTSTRAP_SERVERS, or start the local broker with "
            f"`signals kafka up`"
        )
        self.bootstrap = bootstrap


class ReadError(ConsumerError):
    """Kafka reported an error while reading a partition."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class QueryError(ConsumerError, ValueError):
    """The question is malformed: no target, a bad PURL, an inverted time range."""
