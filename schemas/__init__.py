"""The wire contract shared by the agent and the processor.

- ``*.avsc``: one Avro schema per named type (namespace ``io.runtimesignals``); the
  single source of truth for every topic. docs/contract.md maps them to the seed model.
- ``codec``: Avro single-object encoding (magic, schema fingerprint, body) and the
  registry of writer schemas that lets one topic carry several record types and
  older schema versions.
- ``hashing``: the canonical hashes specified in HASHING.md.
- ``errors``: the exception tree, rooted at ``SchemaError``.
"""

from runtime_signals.schemas.codec import (
    NAMESPACE,
    Decoded,
    RuntimeType,
    SchemaRegistry,
    decode,
    encode,
    fingerprint_hex,
    load_schemas,
    self_contained_schema,
)
from runtime_signals.schemas.errors import (
    CorruptMessageError,
    EncodeError,
    HashInputError,
    IncompatibleSchemaError,
    SchemaError,
    SchemaLoadError,
    UnknownFingerprintError,
    UnknownSchemaError,
)
from runtime_signals.schemas.hashing import callstack_hash, combined_path_hash, frame_identity, node_hash, path_hash

__all__ = [
    "NAMESPACE",
    "CorruptMessageError",
    "Decoded",
    "EncodeError",
    "HashInputError",
    "IncompatibleSchemaError",
    "RuntimeType",
    "SchemaError",
    "SchemaLoadError",
    "SchemaRegistry",
    "UnknownFingerprintError",
    "UnknownSchemaError",
    "callstack_hash",
    "combined_path_hash",
    "decode",
    "encode",
    "fingerprint_hex",
    "frame_identity",
    "load_schemas",
    "node_hash",
    "path_hash",
    "self_contained_schema",
]
