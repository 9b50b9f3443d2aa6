"""The capture file format: an Avro Object Container File of Kafka records.

Each record of the file is one Kafka record, every byte kept (CAPTURE_SCHEMA). The file's
header metadata (``signals.*`` keys, JSON values) says where the records came from:
``format``, ``source.topic``, ``source.partition_count``, ``partitions``, ``requested``
(offsets or times asked, and the offset range each partition resolved to), ``offsets``
(first and last offset and count read per partition), ``timestamps_ms`` (first and last),
``fingerprints`` (schema name and count of each single-object fingerprint seen),
``writer_schemas`` (the self-contained writer schema of each known fingerprint, so the
values decode without this repository), ``tool``, ``started_at``, ``finished_at``,
``complete`` (false when interrupted), ``error`` (why it stopped early, if it did) and
``records_sha256``: a digest of every record's fields in file order (record_digest), so a
reader tells a corrupted or cut file from a good one. Avro's deflate blocks carry no
checksum of their own: a flipped bit can decode to other, valid-looking records.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import parse_schema

from runtime_signals.consumer.kafka import KafkaRecord, TimestampType

FORMAT = "runtime-signals-capture/1"
META = "signals."
CAPTURE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CapturedRecord",
    "namespace": "io.runtimesignals.capture",
    "doc": "One Kafka record as it was on its partition. The file header's signals.* metadata names the topic.",
    "fields": [
        {"name": "partition", "type": "int", "doc": "Source partition."},
        {"name": "offset", "type": "long", "doc": "Offset in the source partition."},
        {"name": "timestamp_ms", "type": "long",
         "doc": "Kafka record timestamp, milliseconds since the Unix epoch (0 when not available)."},
        {"name": "timestamp_type", "type": {
            "type": "enum", "name": "TimestampType",
            "symbols": ["NOT_AVAILABLE", "CREATE_TIME", "LOG_APPEND_TIME"]},
         "doc": "Who set timestamp_ms: the producer (CREATE_TIME) or the broker (LOG_APPEND_TIME)."},
        {"name": "key", "type": ["null", "bytes"], "doc": "Record key, as bytes."},
        {"name": "value", "type": ["null", "bytes"],
         "doc": "Record value as bytes (on this project's topics, an Avro single-object message); null is a tombstone."},
        {"name": "headers", "type": {"type": "array", "items": {
            "type": "record", "name": "Header",
            "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": ["null", "bytes"]}]}},
         "doc": "Record headers, in order; a key may repeat."},
    ],
}
PARSED_SCHEMA = parse_schema(CAPTURE_SCHEMA)


class CaptureError(Exception):
    """A capture cannot be made or read as asked (names the setting or the file)."""


_FIXED = struct.Struct("<iqqB")


def record_digest_update(digest: Any, record: KafkaRecord) -> None:
    """Add one record to a running SHA-256 (records_sha256): every field, each byte string
    length-prefixed so no two records hash alike by shifting bytes between fields."""
    digest.update(_FIXED.pack(record.partition, record.offset, record.timestamp_ms, record.timestamp_type.value))
    for part in (record.key, record.value):
        digest.update(b"\xff" if part is None else struct.pack("<q", len(part)) + part)
    digest.update(struct.pack("<q", len(record.headers)))
    for key, value in record.headers:
        encoded = key.encode()
        digest.update(struct.pack("<q", len(encoded)) + encoded)
        digest.update(b"\xff" if value is None else struct.pack("<q", len(value)) + value)


def metadata(values: dict[str, Any]) -> dict[str, str]:
    return {META + key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            for key, value in values.items()}


def to_avro(record: KafkaRecord) -> dict[str, Any]:
    return {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "timestamp_type": record.timestamp_type.name,
        "key": record.key,
        "value": record.value,
        "headers": [{"key": k, "value": v} for k, v in record.headers],
    }


@dataclass(frozen=True)
class CaptureHeader:
    """The ``signals.*`` metadata of a capture file, decoded."""

    path: Path
    avro_codec: str
    values: dict[str, Any]

    @property
    def topic(self) -> str:
        return str(self.values["source.topic"])

    @property
    def partition_count(self) -> int:
        return int(self.values["source.partition_count"])

    @property
    def complete(self) -> bool:
        return bool(self.values.get("complete", False))

    @property
    def records(self) -> int | None:
        return self.values.get("records")


def open_capture(path: Path) -> tuple[CaptureHeader, Iterator[KafkaRecord]]:
    """The header and the records of a capture file (the file stays open while iterating)."""
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 -- owned by the reader returned, closed by its caller
        reader = fastavro.reader(handle)
    except (OSError, ValueError) as exc:
        raise CaptureError(f"{path}: not a readable Avro container file: {exc}") from exc
    values = {}
    for key, raw in reader.metadata.items():
        if key.startswith(META):
            try:
                values[key[len(META):]] = json.loads(raw)
            except ValueError:
                values[key[len(META):]] = raw
    if values.get("format") != FORMAT:
        handle.close()
        raise CaptureError(f"{path}: not a runtime-signals capture (signals.format is "
                           f"{values.get('format')!r}, expected {FORMAT!r})")
    header = CaptureHeader(path, reader.codec, values)
    topic = header.topic

    def records() -> Iterator[KafkaRecord]:
        digest = hashlib.sha256()
        count = 0
        with handle:
            items = iter(reader)
            while True:
                try:
                    item = next(items)
                except StopIteration:
                    break
                except Exception as exc:
                    raise CaptureError(f"{path}: damaged after record {count}: {type(exc).__name__}: {exc}; "
                                       f"the file is cut short or corrupted") from exc
                assert isinstance(item, dict)  # the file's schema is a record
                record = KafkaRecord(topic, item["partition"], item["offset"], item["timestamp_ms"],
                                     TimestampType[item["timestamp_type"]], item["key"], item["value"],
                                     tuple((h["key"], h["value"]) for h in item["headers"]))
                record_digest_update(digest, record)
                count += 1
                yield record
        expected = header.values.get("records_sha256")
        if header.records is not None and count != header.records:
            raise CaptureError(f"{path}: {count} records, its header says {header.records}: the file is "
                               f"cut short or corrupted")
        if expected is not None and digest.hexdigest() != expected:
            raise CaptureError(f"{path}: records_sha256 does not match the records: the file is corrupted")

    return header, records()


def verify_capture(path: Path) -> CaptureHeader:
    """Read the whole file and check it against its header (record count, records_sha256);
    CaptureError naming the file if anything is wrong. Replay calls it before it sends a
    single record, so a damaged file is refused whole rather than replayed in part."""
    header, records = open_capture(path)
    for _ in records:
        pass
    if "records_sha256" not in header.values:
        raise CaptureError(f"{path}: has no records_sha256 (written by an older signals, or not by "
                           f"`signals capture`): its records cannot be checked; capture again")
    return header


def read_capture(path: Path) -> tuple[CaptureHeader, list[KafkaRecord]]:
    """The whole file in memory: for small captures and tests."""
    header, records = open_capture(path)
    return header, list(records)
