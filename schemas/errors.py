"""Errors raised by the ``schemas`` package.

Every error derives from one root, so a consumer loop can catch ``SchemaError``,
count the bad record, route it to a dead-letter topic and carry on::

    SchemaError
    ├── SchemaLoadError          an .avsc file (or a schema given to register) is unusable
    ├── UnknownSchemaError       a schema name the registry has no current version of
    ├── EncodeError              a record does not fit the writer schema
    ├── UnknownFingerprintError  a message's writer schema is not registered
    ├── CorruptMessageError      bad magic, too short, or a body that does not decode
    ├── IncompatibleSchemaError  the writer schema cannot be resolved to the reader schema
    └── HashInputError           an input to a canonical hash breaks the HASHING.md rules

Errors raised because a third-party library failed keep that failure as ``__cause__``.
"""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error this package raises."""


class SchemaLoadError(SchemaError):
    """A schema file or schema document cannot be parsed or is inconsistent."""


class UnknownSchemaError(SchemaError, KeyError):
    """A schema name is not known to the registry (as a current, writable version)."""

    def __str__(self) -> str:
        # KeyError would otherwise wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class EncodeError(SchemaError, ValueError):
    """A record does not match the schema it is being written with."""


class UnknownFingerprintError(SchemaError):
    """The 8-byte fingerprint in a single-object message matches no registered schema."""

    def __init__(self, fingerprint_hex: str, byte_length: int) -> None:
        self.fingerprint_hex = fingerprint_hex
        self.byte_length = byte_length
        super().__init__(
            f"writer schema with fingerprint {fingerprint_hex} (CRC-64-AVRO, wire byte order) "
            f"is not registered; message is {byte_length} bytes. Register that schema version "
            f"with SchemaRegistry.register() or upgrade this consumer."
        )


class CorruptMessageError(SchemaError):
    """A message is not a well-formed single-object-encoded Avro datum."""

    def __init__(self, reason: str, byte_length: int) -> None:
        self.reason = reason
        self.byte_length = byte_length
        super().__init__(f"corrupt single-object message ({byte_length} bytes): {reason}")


class IncompatibleSchemaError(SchemaError):
    """Avro schema resolution from the writer schema to the reader schema failed."""


class HashInputError(SchemaError, ValueError):
    """An argument to a canonical-hash function is outside what HASHING.md allows."""
