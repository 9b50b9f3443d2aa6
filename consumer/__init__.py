"""Typed reading of runtime-signals' output topics, and the reachability question.

    from runtime_signals.consumer import SignalsClient, Target

    client = SignalsClient("kafka:9092")                      # TopicNames() by default
    for summary in client.summaries("host:3d1219c7", since_us=t0_us):
        ...
    state = client.latest_state("host:3d1219c7")              # ContainerState | None
    answer = client.is_reached(Target(function="parse_image_header"))
    answer.reached, answer.paths[0].symbols, answer.coverage.windows

Pure logic lives in runtime_signals.consumer.query (usable on Summary objects from anywhere,
such as a capture file); runtime_signals.consumer.kafka is the only module that talks to Kafka.
"""

from runtime_signals.consumer.client import SignalsClient
from runtime_signals.consumer.errors import ConsumerError, QueryError, ReadError, TopicNotFoundError
from runtime_signals.consumer.kafka import KafkaRecord, OffsetRange, TimestampType, TopicReader
from runtime_signals.consumer.models import (
    CallPath,
    ContainerState,
    Coverage,
    PathEvidence,
    PathTotal,
    Reachability,
    Summary,
    Target,
    iso,
)

__all__ = [
    "CallPath", "ConsumerError", "ContainerState", "Coverage", "KafkaRecord", "OffsetRange",
    "PathEvidence", "PathTotal", "QueryError", "Reachability", "ReadError", "SignalsClient",
    "Summary", "Target", "TimestampType", "TopicNotFoundError", "TopicReader", "iso",
]
