"""Errors of the processor.

A bad *record* is never an exception that escapes: it is counted and routed to the
dead-letter topic (processor/intake.py). These are for the worker itself::

    ProcessorError
     ├── ConfigError       a setting is wrong (names the setting and the allowed range)
     ├── BrokerError       the cluster does not answer at start (names the bootstrap servers)
     ├── CheckpointError   a checkpoint cannot be read, or was written with other settings
     └── DeliveryError     the broker refused an output for good (names topic, key, error)

Errors raised because a Kafka client failed keep that failure as ``__cause__`` and the
librdkafka error code in their message.
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Root of the processor's errors."""


class ConfigError(ProcessorError, ValueError):
    """A processor setting or command-line flag is invalid."""


class BrokerError(ProcessorError):
    """The Kafka cluster could not be reached or asked at start."""


class CheckpointError(ProcessorError):
    """A partition's checkpoint is unreadable or does not match this worker's settings."""


class DeliveryError(ProcessorError):
    """An output record could not be written; offsets are not advanced past it."""
