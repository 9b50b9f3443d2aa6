"""Avro single-object encoding for the runtime-signals topics.

Every Kafka value this project writes is one Avro *single-object* message
(Avro specification, "Single-object encoding")::

    C3 01 | fingerprint (8 bytes) | Avro binary body

The fingerprint is the CRC-64-AVRO (Rabin) fingerprint of the writer schema's
Parsing Canonical Form, little-endian. It is what lets one topic carry two record
types (RuntimeCallEvent and AgentWatermark) and lets a consumer read messages
written with an older version of a schema: the registry maps fingerprint to
writer schema, and Avro schema resolution turns that into the current shape.

Python values are plain, on purpose: ``timestamp-micros`` fields are ``int``
microseconds (the ``_us`` in their names) and ``uuid`` fields are ``str``. fastavro
would otherwise turn them into ``datetime``/``UUID`` on read and break round trips;
the codec hands fastavro a copy of each schema without ``logicalType``
annotations. Fingerprints are unaffected because the Parsing Canonical Form drops
``logicalType`` anyway.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import IntEnum
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from runtime_signals.schemas.errors import (
    CorruptMessageError,
    EncodeError,
    IncompatibleSchemaError,
    SchemaLoadError,
    UnknownFingerprintError,
    UnknownSchemaError,
)

NAMESPACE = "io.runtimesignals"
SCHEMA_DIR = Path(__file__).resolve().parent
# Files are parsed in this order so that every named type is defined before a
# later file refers to it by name. A test fails if an .avsc is missing here.
SCHEMA_ORDER: tuple[str, ...] = (
    "RuntimeType",
    "StackFrame",
    "RuntimeCallEvent",
    "AgentWatermark",
    "ObservedCallPath",
    "RuntimeSignalSummary",
    "SignalStatistics",
    "SymbolTable",
    "ModuleMap",  # agent: per-process module maps (agent/modules.py)
    "ContainerState", "ProcessorCheckpoint",  # processor outputs (docs/processor.md)
    "ProbePlan", "PlanStatus",  # fleet probe plans and what each agent made of them (docs/plans.md)
)
MAGIC = b"\xc3\x01"
HEADER_BYTES = len(MAGIC) + 8

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


class RuntimeType(IntEnum):
    """Language runtime of a process, with the stable numeric codes of docs/contract.md.

    Member names are the Avro enum symbols of RuntimeType.avsc (write ``rt.name``
    into records). The numbers are NOT Avro's symbol positions: UNKNOWN is 255 here
    and position 7 on the wire.
    """

    NATIVE = 0
    JVM = 1
    NODE = 2
    PYTHON = 3
    DOTNET = 4
    GO = 5
    RUBY = 6
    UNKNOWN = 255

    @classmethod
    def from_symbol(cls, symbol: str) -> RuntimeType:
        """Member for an Avro symbol; a symbol this code does not know maps to UNKNOWN,
        as the Avro enum default does for readers."""
        return cls.__members__.get(symbol, cls.UNKNOWN)


def full_name(schema_name: str) -> str:
    """``RuntimeCallEvent`` -> ``io.runtimesignals.RuntimeCallEvent``; full names pass through."""
    return schema_name if "." in schema_name else f"{NAMESPACE}.{schema_name}"


def read_schema_files(schema_dir: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """The .avsc documents of ``schema_dir`` as written, by full name, in SCHEMA_ORDER."""
    present = {path.stem for path in schema_dir.glob("*.avsc")}
    unlisted = present - set(SCHEMA_ORDER)
    if unlisted:
        raise SchemaLoadError(
            f"{schema_dir}: {sorted(unlisted)} not in codec.SCHEMA_ORDER; add them there, "
            f"after the types they reference"
        )
    documents: dict[str, dict[str, Any]] = {}
    for stem in SCHEMA_ORDER:
        path = schema_dir / f"{stem}.avsc"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaLoadError(f"{path}: cannot read schema: {exc}") from exc
        name = _named_full_name(document, None)
        if name != full_name(stem):
            raise SchemaLoadError(f"{path}: defines {name!r}; the file must be named after it")
        documents[name] = document
    return documents


def read_history_files(schema_dir: Path = SCHEMA_DIR) -> list[dict[str, Any]]:
    """Earlier versions of the records (``history/<Name>.v<N>.avsc``), each self-contained
    (every named type inlined as that version had it), so that messages and capture files
    written with them still decode: a registry reads them, never writes them."""
    documents = []
    for path in sorted((schema_dir / "history").glob("*.avsc")):
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SchemaLoadError(f"{path}: cannot read schema: {exc}") from exc
    return documents


def load_schemas(schema_dir: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """All schemas of ``schema_dir`` parsed by fastavro with a shared ``named_schemas``,
    by full name (references between files resolve through that dict)."""
    named: dict[str, Any] = {}
    parsed: dict[str, dict[str, Any]] = {}
    for name, document in read_schema_files(schema_dir).items():
        try:
            parsed[name] = cast(dict[str, Any], parse_schema(document, named_schemas=named))
        except Exception as exc:  # fastavro raises several unrelated types here
            raise SchemaLoadError(f"{name}: fastavro rejects the schema: {exc}") from exc
    return parsed


def self_contained_schema(schema_name: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The schema with every referenced named type inlined at its first use, as Apache
    Avro (``avro.schema.parse``) and schema registries need it."""
    documents = read_schema_files(schema_dir)
    name = full_name(schema_name)
    if name not in documents:
        raise UnknownSchemaError(f"no schema {name!r} in {schema_dir}")
    # A type defined inside another file's record (ObservedCallPath's ProcessExecutable) may
    # be referred to by a later file too.
    nested: dict[str, Any] = {}
    for document in documents.values():
        _collect_definitions(document, None, nested)
    known = {**nested, **documents}
    return cast(dict[str, Any], _inline(documents[name], known, set(), None))


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: the writer schema's full name and the record in the reader's shape."""

    schema_name: str
    record: dict[str, Any]
    fingerprint_hex: str


@dataclass(frozen=True, slots=True)
class _Writer:
    name: str
    fingerprint: bytes
    canonical_form: str
    declared: dict[str, Any]  # self-contained, with docs and logical types
    wire: dict[str, Any]  # fastavro-parsed, logical types stripped
    has_maps: bool
    definitions: dict[str, Any]  # named types inside declared, for walking references
    splices: dict[str, _ArrayField] = dataclass_field(default_factory=dict)  # encode_with_items' layouts


class SchemaRegistry:
    """Writer schemas by fingerprint, plus the *current* version of each schema name.

    ``encode`` writes with the current version; ``decode`` accepts any registered
    version and resolves it to the current one. Registering an older version
    (``current=False``, the default) only teaches the registry to read it.
    """

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, _Writer] = {}
        self._current: dict[str, _Writer] = {}
        # Raw definitions of current named types: how references in later
        # registrations (e.g. an old RuntimeCallEvent naming RuntimeType) resolve.
        self._definitions: dict[str, dict[str, Any]] = {}

    @classmethod
    def default(cls, schema_dir: Path = SCHEMA_DIR) -> SchemaRegistry:
        """A new registry holding every schema in ``schema_dir`` as the current version."""
        registry = cls()
        for name, document in read_schema_files(schema_dir).items():
            if document.get("type") in ("record", "error"):
                registry.register(document, current=True)
            else:
                registry._definitions[name] = document
        for document in read_history_files(schema_dir):
            registry.register(document)
        return registry

    def register(self, schema: Mapping[str, Any], *, current: bool = False) -> str:
        """Accept ``schema`` (a record schema as JSON-like data) as a writer schema.

        Names it references but does not define resolve to the current definitions
        already registered. Returns the fingerprint in hex (wire byte order).
        """
        if not isinstance(schema, Mapping) or schema.get("type") not in ("record", "error"):
            raise SchemaLoadError(f"only record schemas can be registered, got {schema!r:.80}")
        name = _named_full_name(schema, None)
        declared = _inline(schema, self._definitions, set(), None)
        try:
            parsed = parse_schema(declared, named_schemas={})
            canonical = to_parsing_canonical_form(parsed)
            wire = cast(dict[str, Any], parse_schema(_without_logical_types(declared), named_schemas={}))
        except Exception as exc:  # fastavro raises several unrelated types here
            raise SchemaLoadError(f"{name}: fastavro rejects the schema: {exc}") from exc
        digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        known = self._by_fingerprint.get(digest)
        if known is not None and known.canonical_form != canonical:
            raise SchemaLoadError(
                f"{name}: fingerprint {digest.hex()} collides with a different {known.name}"
            )
        definitions: dict[str, Any] = {}
        _collect_definitions(declared, None, definitions)
        writer = _Writer(
            name, digest, canonical, declared, wire, _contains_map(declared), definitions
        )
        self._by_fingerprint[digest] = writer
        if current:
            self._current[name] = writer
            self._definitions.update(definitions)
        return digest.hex()

    def names(self) -> list[str]:
        """Full names that have a current version, sorted."""
        return sorted(self._current)

    def current_schema(self, schema_name: str) -> dict[str, Any]:
        """Self-contained JSON-like form of the current version of ``schema_name``."""
        return cast(dict[str, Any], json.loads(json.dumps(self._writer(schema_name).declared)))

    def fingerprint_hex(self, schema_name: str) -> str:
        """Fingerprint of the current version, hex in wire byte order (bytes 2..9)."""
        return self._writer(schema_name).fingerprint.hex()

    def _writer(self, schema_name: str) -> _Writer:
        writer = self._current.get(full_name(schema_name))
        if writer is None:
            raise UnknownSchemaError(
                f"no current version of schema {full_name(schema_name)!r} is registered "
                f"(known: {', '.join(self.names()) or 'none'})"
            )
        return writer


def encode(record: Mapping[str, Any], schema_name: str, registry: SchemaRegistry) -> bytes:
    """``record`` as a single-object message written with the current ``schema_name``.

    Fields with a default may be omitted; unknown fields are an error, so a
    misspelt field name cannot silently become its default. Equal records give
    equal bytes (map entries are written in sorted key order).
    """
    writer = registry._writer(schema_name)
    if writer.has_maps:
        record = _sorted_maps(record, writer.declared, writer.definitions)
    buffer = io.BytesIO()
    buffer.write(MAGIC)
    buffer.write(writer.fingerprint)
    try:
        fastavro.schemaless_writer(buffer, writer.wire, record, strict_allow_default=True)
    except Exception as exc:  # any failure here means the record does not fit
        raise EncodeError(f"record does not fit {writer.name}: {exc}") from exc
    return buffer.getvalue()


@dataclass(frozen=True)
class _ArrayField:
    """Where one array-of-records field sits in a record's encoding. Avro writes a record as
    its fields' encodings one after another, an empty array as a zero byte and any other as
    its item count, its items' encodings and a zero."""

    prefix: dict[str, Any] | None  # fastavro-parsed record of the fields before it; None: it is the last
    item: dict[str, Any]  # fastavro-parsed item type


def _array_field(writer: _Writer, name: str) -> _ArrayField:
    found = writer.splices.get(name)
    if found is not None:
        return found
    fields = writer.wire["fields"]
    index = next((i for i, f in enumerate(fields) if f["name"] == name), None)
    kind = fields[index]["type"] if index is not None else None
    if index is None or not isinstance(kind, Mapping) or kind.get("type") != "array":
        raise EncodeError(f"{writer.name} has no array field {name!r}")
    if writer.has_maps:  # the items' map entries would need sorting: no such schema needs it yet
        raise EncodeError(f"{writer.name} contains maps; its {name!r} items cannot be encoded apart")
    named = writer.wire["__named_schemas"]
    items = kind["items"]
    item = named[items] if isinstance(items, str) else items
    found = _ArrayField(
        prefix=None if index == len(fields) - 1 else {**writer.wire, "fields": fields[:index]},
        item={**item, "__fastavro_parsed": True, "__named_schemas": named},
    )
    writer.splices[name] = found
    return found


def encode_item(item: Mapping[str, Any], schema_name: str, array: str, registry: SchemaRegistry) -> bytes:
    """The bytes ``item`` is inside the array field ``array`` of a ``schema_name`` record, for
    encode_with_items(): an item that does not change between records is encoded once."""
    layout = _array_field(registry._writer(schema_name), array)
    buffer = io.BytesIO()
    try:
        fastavro.schemaless_writer(buffer, layout.item, item, strict_allow_default=True)
    except Exception as exc:  # any failure here means the item does not fit
        raise EncodeError(f"item does not fit {schema_name}.{array}: {exc}") from exc
    return buffer.getvalue()


def encode_with_items(record: Mapping[str, Any], schema_name: str, registry: SchemaRegistry, array: str,
                      items: list[bytes]) -> bytes:
    """encode(record) byte for byte, its array field ``array`` written from the items'
    encodings (encode_item(), or a message of the item's own type without its header) in
    place of record[array], which is not read."""
    layout = _array_field(registry._writer(schema_name), array)
    rest = encode({**record, array: []}, schema_name, registry)
    if not items:
        return rest
    if layout.prefix is None:
        at = len(rest) - 1  # the empty array's zero byte ends the record
    else:
        prefix = io.BytesIO()
        before = {f["name"]: record[f["name"]] for f in layout.prefix["fields"] if f["name"] in record}
        fastavro.schemaless_writer(prefix, layout.prefix, before, strict_allow_default=True)
        at = HEADER_BYTES + prefix.tell()
    count = io.BytesIO()
    fastavro.schemaless_writer(count, "long", len(items))
    return b"".join((rest[:at], count.getvalue(), *items, rest[at:]))


class RecordTemplate:
    """Writes records of one type whose ``fixed`` fields recur across many records (a call
    stack's names and hashes, window after window): each run of consecutive fixed fields is
    encoded once by fixed_parts() and reused, the other runs are encoded per record. The
    bytes are encode()'s. Made by template() or item_template()."""

    def __init__(self, name: str, parsed: dict[str, Any], fixed: frozenset[str],
                 header: bytes) -> None:
        fields = parsed["fields"]
        unknown = fixed - {f["name"] for f in fields}
        if unknown:
            raise EncodeError(f"{name} has no field(s) {', '.join(sorted(unknown))}")
        self.name = name
        self._header = header
        # (fixed?, the run as a record of its own, its field names), in field order.
        self._runs: list[tuple[bool, dict[str, Any], tuple[str, ...]]] = []
        for f in fields:
            is_fixed = f["name"] in fixed
            if self._runs and self._runs[-1][0] == is_fixed:
                run = self._runs[-1]
                self._runs[-1] = (is_fixed, {**run[1], "fields": [*run[1]["fields"], f]}, (*run[2], f["name"]))
            else:
                self._runs.append((is_fixed, {**parsed, "fields": [f]}, (f["name"],)))
        # Runs whose types the direct writers take (strings, numbers, booleans, enums, arrays,
        # records, nullable ones) are written without fastavro, whose set-up per call cost more
        # than the few bytes of a call's own fields; the rest, and any value they leave, fastavro.
        named = parsed.get("__named_schemas", {})
        self._direct: list[tuple[_DirectWriter, ...] | None] = [
            _direct_writers(schema["fields"], named) for _, schema, _ in self._runs]
        self._plan = self._one_pass_plan()

    def _one_pass_plan(self) -> tuple[tuple[int, str, _DirectWriter | None], ...] | None:
        """When every per-record run has direct writers, a record is written in one pass over
        this: a fixed run's index in fixed_parts, or a field's name and writer, in field order."""
        plan: list[tuple[int, str, _DirectWriter | None]] = []
        fixed_index = 0
        for (is_fixed, _, names), direct in zip(self._runs, self._direct, strict=True):
            if is_fixed:
                plan.append((fixed_index, "", None))
                fixed_index += 1
            elif direct is None:
                return None
            else:
                plan += [(-1, name, write) for name, write in zip(names, direct, strict=True)]
        return tuple(plan)

    def fixed_parts(self, record: Mapping[str, Any]) -> tuple[bytes, ...]:
        """The fixed runs of ``record``, encoded: what body() and encode() reuse."""
        parts = []
        for (is_fixed, schema, names), direct in zip(self._runs, self._direct, strict=True):
            if is_fixed:
                buffer = io.BytesIO()
                self._write_run(buffer, schema, names, direct, record)
                parts.append(buffer.getvalue())
        return tuple(parts)

    def body(self, record: Mapping[str, Any], fixed_parts: tuple[bytes, ...]) -> bytes:
        """``record``'s encoding without a header (an item, for encode_with_items()), its
        fixed fields taken from ``fixed_parts`` (of a record with the same fixed values)."""
        return self._written(b"", record, fixed_parts)

    def encode(self, record: Mapping[str, Any], fixed_parts: tuple[bytes, ...]) -> bytes:
        """encode(record), its fixed fields taken from ``fixed_parts``."""
        return self._written(self._header, record, fixed_parts)

    def _written(self, prefix: bytes, record: Mapping[str, Any], fixed_parts: tuple[bytes, ...]) -> bytes:
        if self._plan is not None:
            try:
                pieces = [prefix]
                for index, name, write in self._plan:
                    pieces.append(fixed_parts[index] if write is None else write(record[name]))
                return b"".join(pieces)
            except (_NotDirect, KeyError):
                pass  # fastavro decides, below: a default, or an error
        buffer = io.BytesIO()
        buffer.write(prefix)
        parts = iter(fixed_parts)
        for (is_fixed, schema, names), direct in zip(self._runs, self._direct, strict=True):
            if is_fixed:
                buffer.write(next(parts))
            else:
                self._write_run(buffer, schema, names, direct, record)
        return buffer.getvalue()

    def _write_run(self, buffer: io.BytesIO, schema: dict[str, Any], names: tuple[str, ...],
                   direct: tuple[_DirectWriter, ...] | None, record: Mapping[str, Any]) -> None:
        if direct is not None:
            try:
                buffer.write(b"".join([write(record[name]) for name, write in zip(names, direct, strict=True)]))
                return
            except (_NotDirect, KeyError):
                pass  # fastavro decides: a default, or an error
        self._write(buffer, schema, names, record)

    def _write(self, buffer: io.BytesIO, schema: dict[str, Any], names: tuple[str, ...],
               record: Mapping[str, Any]) -> None:
        try:
            fastavro.schemaless_writer(buffer, schema, {n: record[n] for n in names if n in record},
                                       strict_allow_default=True)
        except Exception as exc:  # any failure here means the record does not fit
            raise EncodeError(f"record does not fit {self.name} ({', '.join(names)}): {exc}") from exc


class _NotDirect(Exception):
    """A value the direct writers leave to fastavro (another type, out of range)."""


_DirectWriter = Callable[[Any], bytes]
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_SMALL = [bytes((n,)) for n in range(0x80)]


def _zigzag(value: int) -> bytes:
    """Avro's encoding of an int or long: zig-zag, then base-128 varint."""
    encoded = (value << 1) ^ (value >> 63)
    if encoded < 0x80:
        return _SMALL[encoded]
    if encoded < 0x4000:  # two bytes: the length of most strings (a hash, a path, a purl)
        return bytes(((encoded & 0x7F) | 0x80, encoded >> 7))
    out = bytearray()
    while encoded >= 0x80:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)


def _write_long(value: Any) -> bytes:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise _NotDirect
    return _zigzag(value)


def _write_int(value: Any) -> bytes:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise _NotDirect
    return _zigzag(value)


def _write_string(value: Any) -> bytes:
    if type(value) is not str:
        raise _NotDirect
    try:
        encoded = value.encode()
    except UnicodeEncodeError as exc:
        raise _NotDirect from exc
    return _zigzag(len(encoded)) + encoded


def _write_boolean(value: Any) -> bytes:
    if type(value) is not bool:
        raise _NotDirect
    return b"\x01" if value else b"\x00"


_PRIMITIVE_WRITERS: dict[str, _DirectWriter] = {"long": _write_long, "int": _write_int, "string": _write_string,
                                                "boolean": _write_boolean}


def _nullable(write: _DirectWriter) -> _DirectWriter:
    def write_nullable(value: Any) -> bytes:
        return b"\x00" if value is None else b"\x02" + write(value)  # branch 0 null, branch 1 the value
    return write_nullable


def _enum(symbols: list[str]) -> _DirectWriter:
    indexes = {symbol: _zigzag(i) for i, symbol in enumerate(symbols)}

    def write_enum(value: Any) -> bytes:
        found = indexes.get(value) if type(value) is str else None
        if found is None:
            raise _NotDirect
        return found
    return write_enum


def _array(write_item: _DirectWriter) -> _DirectWriter:
    def write_array(value: Any) -> bytes:
        if type(value) is not list:
            raise _NotDirect
        if not value:
            return b"\x00"
        return b"".join([_zigzag(len(value)), *[write_item(item) for item in value], b"\x00"])  # one block
    return write_array


def _write_optional_strings(value: Any) -> bytes:
    """An array of nullable strings, as _array(_nullable(_write_string)) writes it: a stack's
    symbols, libraries and purls, inlined because naming a new stack writes dozens of them."""
    if type(value) is not list:
        raise _NotDirect
    if not value:
        return b"\x00"
    pieces = [_zigzag(len(value))]
    try:
        for item in value:
            if item is None:
                pieces.append(b"\x00")
            elif type(item) is str:
                encoded = item.encode()
                pieces += (b"\x02", _zigzag(len(encoded)), encoded)
            else:
                raise _NotDirect
    except UnicodeEncodeError as exc:
        raise _NotDirect from exc
    pieces.append(b"\x00")
    return b"".join(pieces)


def _record(names: tuple[str, ...], writers: tuple[_DirectWriter, ...]) -> _DirectWriter:
    fields = tuple(zip(names, writers, strict=True))

    def write_record(value: Any) -> bytes:
        # A field left out (a default) or one the schema does not have (an error): fastavro's.
        if type(value) is not dict or len(value) != len(fields):
            raise _NotDirect
        return b"".join([write(value[name]) for name, write in fields])
    return write_record


def _direct_writer(avro_type: Any, named: Mapping[str, Any], outer: frozenset[str] = frozenset()) -> _DirectWriter | None:
    """A writer for a value of avro_type (as in a fastavro-parsed schema, whose named types are
    ``named``) that gives fastavro's bytes, or raises _NotDirect (or KeyError) where fastavro
    would decide otherwise; None for a type it does not write (a union of other shapes, maps, a
    named type within itself)."""
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVE_WRITERS:
            return _PRIMITIVE_WRITERS[avro_type]
        if avro_type in outer or avro_type not in named:
            return None
        return _direct_writer(named[avro_type], named, outer | {avro_type})  # a type named earlier
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or avro_type[0] != "null":
            return None
        found = _direct_writer(avro_type[1], named, outer)
        return None if found is None else _nullable(found)
    if not isinstance(avro_type, dict):
        return None
    kind = avro_type.get("type")
    if isinstance(kind, str) and kind in _PRIMITIVE_WRITERS:
        return _PRIMITIVE_WRITERS[kind]
    if kind == "enum":
        return _enum(list(avro_type["symbols"]))
    if kind == "array":
        if avro_type["items"] == ["null", "string"]:
            return _write_optional_strings
        item = _direct_writer(avro_type["items"], named, outer)
        return None if item is None else _array(item)
    if kind == "record":
        inner = outer | {avro_type["name"]} if isinstance(avro_type.get("name"), str) else outer
        writers = _direct_writers(avro_type["fields"], named, inner)
        return None if writers is None else _record(tuple(f["name"] for f in avro_type["fields"]), writers)
    return None


def _direct_writers(fields: list[dict[str, Any]], named: Mapping[str, Any],
                    outer: frozenset[str] = frozenset()) -> tuple[_DirectWriter, ...] | None:
    writers = [_direct_writer(f["type"], named, outer) for f in fields]
    return None if any(w is None for w in writers) else tuple(w for w in writers if w is not None)


def template(schema_name: str, fixed: Iterable[str], registry: SchemaRegistry) -> RecordTemplate:
    """A RecordTemplate for messages of ``schema_name``."""
    writer = registry._writer(schema_name)
    if writer.has_maps:
        raise EncodeError(f"{writer.name} contains maps, whose entries a template would not sort")
    return RecordTemplate(writer.name, writer.wire, frozenset(fixed), MAGIC + writer.fingerprint)


def item_template(schema_name: str, array: str, fixed: Iterable[str], registry: SchemaRegistry) -> RecordTemplate:
    """A RecordTemplate for the items of the array field ``array`` of ``schema_name``."""
    layout = _array_field(registry._writer(schema_name), array)
    return RecordTemplate(f"{full_name(schema_name)}.{array}", layout.item, frozenset(fixed), b"")


def decode(
    data: bytes, registry: SchemaRegistry, reader_schema_name: str | None = None
) -> Decoded:
    """Decode one single-object message.

    The record comes back in the shape of ``reader_schema_name``'s current version
    or, when that is None, of the current version of the writer's own schema (the
    writer's shape if the registry has no current version of it). Every failure is
    a ``SchemaError``; nothing from fastavro escapes.
    """
    if data is None:  # a Kafka tombstone reaches here as None despite the annotation
        raise CorruptMessageError("no value (tombstone)", 0)
    data = bytes(data)
    length = len(data)
    if length < HEADER_BYTES:
        raise CorruptMessageError(f"too short: the header alone is {HEADER_BYTES} bytes", length)
    if data[:2] != MAGIC:
        raise CorruptMessageError(
            f"bad magic {data[:2].hex()}, expected c301 (Avro single-object encoding)", length
        )
    writer = registry._by_fingerprint.get(data[2:HEADER_BYTES])
    if writer is None:
        raise UnknownFingerprintError(data[2:HEADER_BYTES].hex(), length)
    if reader_schema_name is None:
        reader = registry._current.get(writer.name, writer)
    else:
        reader = registry._writer(reader_schema_name)
    body = io.BytesIO(data)
    body.seek(HEADER_BYTES)
    try:
        record = fastavro.schemaless_reader(
            body, writer.wire, None if reader is writer else reader.wire
        )
    except SchemaResolutionError as exc:
        raise IncompatibleSchemaError(
            f"cannot read {writer.name} (fingerprint {writer.fingerprint.hex()}) as "
            f"{reader.name}: {exc}"
        ) from exc
    except Exception as exc:  # truncated or garbled bodies fail in many different ways
        raise CorruptMessageError(
            f"body does not decode as {writer.name}: {type(exc).__name__}: {exc}", length
        ) from exc
    leftover = length - body.tell()
    if leftover:
        raise CorruptMessageError(
            f"{leftover} bytes left over after a complete {writer.name} body", length
        )
    return Decoded(writer.name, cast(dict[str, Any], record), writer.fingerprint.hex())


def fingerprint_hex(schema_name: str, registry: SchemaRegistry | None = None) -> str:
    """Fingerprint of the current ``schema_name`` as hex, in the byte order it has on the
    wire (what ``xxd`` shows at bytes 2..9 of a message)."""
    return (registry or _files_registry()).fingerprint_hex(schema_name)


@functools.lru_cache(maxsize=1)
def _files_registry() -> SchemaRegistry:
    return SchemaRegistry.default()


def _named_full_name(schema: Mapping[str, Any], enclosing_namespace: str | None) -> str:
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaLoadError(f"named type without a name: {dict(schema)!r:.80}")
    if "." in name:
        return name
    namespace = schema.get("namespace", enclosing_namespace)
    return f"{namespace}.{name}" if namespace else name


def _inline(
    schema: Any, known: Mapping[str, Any], defined: set[str], namespace: str | None
) -> Any:
    """Copy of ``schema`` where each reference to a type in ``known`` that is not yet
    defined is replaced by its definition: Avro requires a named type to be defined
    at its first use and referenced by full name afterwards, and the Parsing
    Canonical Form (so the fingerprint) depends on exactly that."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        name = schema if "." in schema or namespace is None else f"{namespace}.{schema}"
        if name in defined:
            return name
        if name in known:
            return _inline(known[name], known, defined, None)
        raise SchemaLoadError(f"reference to unknown named type {name!r}")
    if isinstance(schema, list):
        return [_inline(branch, known, defined, namespace) for branch in schema]
    if not isinstance(schema, Mapping):
        raise SchemaLoadError(f"not an Avro schema: {schema!r:.80}")
    kind = schema.get("type")
    out = dict(schema)
    if kind in _NAMED_KINDS:
        name = _named_full_name(schema, namespace)
        if name in defined:
            raise SchemaLoadError(f"named type {name!r} is defined twice")
        defined.add(name)
        namespace = name.rpartition(".")[0] or None
        if kind in ("record", "error"):
            out["fields"] = [
                {**field, "type": _inline(field["type"], known, defined, namespace)}
                for field in schema.get("fields", [])
            ]
    elif kind == "array":
        out["items"] = _inline(schema["items"], known, defined, namespace)
    elif kind == "map":
        out["values"] = _inline(schema["values"], known, defined, namespace)
    elif isinstance(kind, (list, Mapping)):
        out["type"] = _inline(kind, known, defined, namespace)
    return out


def _collect_definitions(schema: Any, namespace: str | None, into: dict[str, Any]) -> Any:
    """Store every named-type definition inside ``schema`` in ``into``, by full name, in
    reference form (nested definitions replaced by their full names), so each can later be
    inlined on its own wherever another schema first refers to it. Returns ``schema`` in
    that same reference form."""
    if isinstance(schema, list):
        return [_collect_definitions(branch, namespace, into) for branch in schema]
    if not isinstance(schema, Mapping):
        return schema
    kind = schema.get("type")
    out = dict(schema)
    if kind in _NAMED_KINDS:
        name = _named_full_name(schema, namespace)
        out["name"] = name  # the full name, so the definition stands alone
        out.pop("namespace", None)
        if kind in ("record", "error"):
            namespace = name.rpartition(".")[0] or None
            out["fields"] = [
                {**field, "type": _collect_definitions(field["type"], namespace, into)}
                for field in schema.get("fields", [])
            ]
        into[name] = out
        return name
    if kind in ("array", "map"):
        key = "items" if kind == "array" else "values"
        out[key] = _collect_definitions(schema[key], namespace, into)
    elif isinstance(kind, (list, Mapping)):
        out["type"] = _collect_definitions(kind, namespace, into)
    return out


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_logical_types(branch) for branch in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: value for key, value in schema.items() if key != "logicalType"}
    kind = schema.get("type")
    if kind in ("record", "error"):
        out["fields"] = [
            {**field, "type": _without_logical_types(field["type"])} for field in schema["fields"]
        ]
    elif kind == "array":
        out["items"] = _without_logical_types(schema["items"])
    elif kind == "map":
        out["values"] = _without_logical_types(schema["values"])
    elif isinstance(kind, (list, Mapping)):
        out["type"] = _without_logical_types(kind)
    return out


def _contains_map(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_contains_map(branch) for branch in schema)
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type")
    if kind == "map":
        return True
    if kind in ("record", "error"):
        return any(_contains_map(field["type"]) for field in schema["fields"])
    if kind == "array":
        return _contains_map(schema["items"])
    return isinstance(kind, (list, Mapping)) and _contains_map(kind)


def _sorted_maps(value: Any, schema: Any, named: Mapping[str, Any]) -> Any:
    """``value`` with every Avro map's entries in sorted key order: Avro writes map
    entries in iteration order, so without this equal records could differ in bytes."""
    if isinstance(schema, str):
        return _sorted_maps(value, named[schema], named) if schema in named else value
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        if value is None or len(branches) != 1:
            return value
        return _sorted_maps(value, branches[0], named)
    kind = schema.get("type")
    if kind in ("record", "error") and isinstance(value, Mapping):
        types = {field["name"]: field["type"] for field in schema["fields"]}
        return {
            key: _sorted_maps(item, types[key], named) if key in types else item
            for key, item in value.items()
        }
    if kind == "array" and isinstance(value, (list, tuple)):
        return [_sorted_maps(item, schema["items"], named) for item in value]
    if kind == "map" and isinstance(value, Mapping):
        return {
            key: _sorted_maps(value[key], schema["values"], named) for key in sorted(value)
        }
    if isinstance(kind, (list, Mapping)):
        return _sorted_maps(value, kind, named)
    return value
