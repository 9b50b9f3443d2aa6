"""`signals capture`: a slice of a topic into an Avro Object Container File.

The records keep every byte (the values as they were on the topic, so a replay is
byte-exact); the file's header says where they came from and whether the capture
completed (runtime_signals.capturefile describes the format).

What was read is only known at the end, and an Avro header is written first: so records go
to ``<file>.partial`` and, at the end (or on SIGINT/SIGTERM), into the final file behind
the complete header, block by block, without decoding them. A capture killed outright
leaves ``<file>.partial``, a valid container file up to its last flushed block.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import IO, Any

import fastavro
from tqdm import tqdm

from runtime_signals.capture.file import (
    CAPTURE_SCHEMA,
    FORMAT,
    PARSED_SCHEMA,
    CaptureError,
    CaptureHeader,
    metadata,
    open_capture,
    read_capture,
    record_digest_update,
    to_avro,
)
from runtime_signals.consumer.errors import ConsumerError
from runtime_signals.consumer.kafka import KafkaRecord, OffsetRange, TopicReader
from runtime_signals.schemas import codec

log = logging.getLogger(__name__)

# Large enough for compression to pay, small enough that an idle flush loses little.
_SYNC_INTERVAL_BYTES = 256 * 1024

def tool_version() -> str:
    try:
        return f"runtime-signals {importlib_metadata.version('runtime-signals')}"
    except importlib_metadata.PackageNotFoundError:
        return "runtime-signals (not installed)"


def default_codec() -> str:
    """deflate: every Avro implementation reads it with nothing extra installed (Apache
    ``avro`` reads zstandard only with its ``zstandard`` extra, and says "Unsupported codec"
    without it). zstandard stays available with --codec for readers that have it."""
    return "deflate"


def progress_bar(total: int | None, unit: str, description: str, stream: IO[str] | None = None) -> tqdm:
    """A bar with rate and ETA on a terminal; silent when ``stream`` is not a tty (piped, CI)."""
    stream = stream or sys.stderr
    try:
        size = os.get_terminal_size(stream.fileno())
        columns, rows = size.columns, size.lines
    except (OSError, ValueError):
        columns = rows = 0
    # A terminal that reports no size (a fresh pty) would otherwise get no bar at all.
    return tqdm(total=total, unit=unit, unit_scale=True, desc=description, file=stream,
                disable=not stream.isatty(), ncols=columns if columns > 0 else 100,
                nrows=rows if rows > 0 else 24, smoothing=0.1)


@dataclass(frozen=True)
class CaptureRequest:
    """What to capture. Start: ``from_offset`` or ``since_ms`` (default: the oldest record);
    end, exclusive: ``to_offset`` or ``until_ms`` (default: the end at start time, or no end
    with ``follow``). Times are Kafka record timestamps, resolved to offsets by the broker
    (ListOffsets by time: the first offset stamped at or after the time)."""

    topic: str
    partitions: tuple[int, ...] | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    follow: bool = False

    def check(self) -> None:
        if self.from_offset is not None and self.since_ms is not None:
            raise CaptureError("give either --from-offset or --since, not both")
        if self.to_offset is not None and self.until_ms is not None:
            raise CaptureError("give either --to-offset or --until, not both")
        if self.follow and (self.to_offset is not None or self.until_ms is not None):
            raise CaptureError("--follow has no end; drop --to-offset/--until, or drop --follow")
        if self.since_ms is not None and self.until_ms is not None and self.until_ms <= self.since_ms:
            raise CaptureError(f"--until ({self.until_ms} ms) must be after --since ({self.since_ms} ms)")


def plan(reader: TopicReader, request: CaptureRequest) -> list[OffsetRange]:
    """The offset range of each partition the request covers, resolved now."""
    request.check()
    available = reader.partitions(request.topic)
    partitions = list(request.partitions) if request.partitions else available
    unknown = sorted(set(partitions) - set(available))
    if unknown:
        raise CaptureError(f"topic {request.topic!r} has partitions {available}, not {unknown}")
    marks = reader.watermarks(request.topic, partitions)
    starts = (reader.offsets_for_time(request.topic, partitions, request.since_ms)
              if request.since_ms is not None else {})
    ends = (reader.offsets_for_time(request.topic, partitions, request.until_ms)
            if request.until_ms is not None else {})
    now_ms = datetime.now(UTC).timestamp() * 1000
    ranges = []
    for partition in partitions:
        low, high = marks[partition]
        start: int
        if request.since_ms is not None:
            found = starts[partition]
            start = found if found is not None else high
        else:
            start = low if request.from_offset is None else max(low, request.from_offset)
            if request.from_offset is not None and request.from_offset < low:
                log.warning("%s[%d]: offsets below %d are gone (retention); starting there",
                            request.topic, partition, low)
        end: int | None
        if request.until_ms is not None:
            end = ends[partition]
            if end is None:  # nothing stamped that late yet: wait for it unless it is past
                end = high if request.until_ms <= now_ms else None
        elif request.to_offset is not None:
            end = request.to_offset
        else:
            end = None if request.follow else high
        ranges.append(OffsetRange(partition, start, end))
    return ranges


@dataclass
class _Tally:
    """What was written, for the final header."""

    records: int = 0
    first_offset: dict[int, int] = field(default_factory=dict)
    last_offset: dict[int, int] = field(default_factory=dict)
    per_partition: Counter[int] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None
    fingerprints: Counter[str] = field(default_factory=Counter)
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, record: KafkaRecord) -> None:
        self.records += 1
        record_digest_update(self.digest, record)
        self.first_offset.setdefault(record.partition, record.offset)
        self.last_offset[record.partition] = record.offset
        self.per_partition[record.partition] += 1
        self.first_ms = record.timestamp_ms if self.first_ms is None else min(self.first_ms, record.timestamp_ms)
        self.last_ms = record.timestamp_ms if self.last_ms is None else max(self.last_ms, record.timestamp_ms)
        value = record.value
        if value is not None and len(value) >= codec.HEADER_BYTES and value[:2] == codec.MAGIC:
            self.fingerprints[value[2:codec.HEADER_BYTES].hex()] += 1
        else:
            self.fingerprints["none"] += 1


@dataclass(frozen=True)
class CaptureResult:
    path: Path
    records: int
    complete: bool
    metadata: dict[str, Any]


def capture(reader: TopicReader, request: CaptureRequest, path: Path, *, avro_codec: str | None = None,
            stop: threading.Event | None = None, registry: codec.SchemaRegistry | None = None,
            progress_stream: IO[str] | None = None) -> CaptureResult:
    """Capture ``request`` into ``path``. Setting ``stop`` ends the capture early, with a
    valid file whose header says it is incomplete and where it stopped."""
    avro_codec = avro_codec or default_codec()
    registry = registry or codec.SchemaRegistry.default()
    stop = stop or threading.Event()
    ranges = plan(reader, request)
    partition_count = len(reader.partitions(request.topic))
    sizes = [r.size for r in ranges]
    total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
    started = {
        "format": FORMAT,
        "source.topic": request.topic,
        "source.partition_count": partition_count,
        "partitions": [r.partition for r in ranges],
        "requested": {
            "from_offset": request.from_offset, "to_offset": request.to_offset,
            "since_ms": request.since_ms, "until_ms": request.until_ms, "follow": request.follow,
            "ranges": {str(r.partition): [r.start_offset, r.end_offset] for r in ranges},
        },
        "tool": tool_version(),
        "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    path = Path(path)
    if path.is_dir() or not path.name:
        raise CaptureError(f"--output {path}: is a directory; name the file to write")
    partial = path.with_name(path.name + ".partial")
    tally = _Tally()
    log.info("capture started: %s partitions %s into %s", request.topic, started["partitions"], path)
    try:
        out = open(partial, "wb")  # noqa: SIM115 -- kept open across the capture, closed in finish()
    except OSError as exc:
        raise CaptureError(f"--output {path}: cannot write {partial.name} next to it: "
                           f"{exc.strerror or exc}") from exc
    with out:
        writer = fastavro.write.Writer(out, PARSED_SCHEMA, codec=avro_codec,
                                       sync_interval=_SYNC_INTERVAL_BYTES, metadata=metadata(started))
        unflushed = 0

        def flush_when_idle() -> None:
            nonlocal unflushed
            if unflushed:
                writer.flush()
                out.flush()
                unflushed = 0

        failure: ConsumerError | None = None
        with progress_bar(total, "rec", "capture", progress_stream) as bar:
            try:
                for record in reader.read(request.topic, ranges, until_ms=request.until_ms, stop=stop,
                                          on_idle=flush_when_idle):
                    writer.write(to_avro(record))
                    tally.add(record)
                    unflushed += 1
                    bar.update(1)
            except ConsumerError as exc:  # keep what was read, say why it ended, then raise
                failure = exc
        writer.flush()
    complete = not stop.is_set() and failure is None
    final = dict(started, **_finished(tally, registry, complete))
    if failure is not None:
        final["error"] = str(failure)
    try:
        _rewrite_with_header(partial, path, final, avro_codec)
    except OSError as exc:
        # Nothing half-written is left behind; the partial file goes too (its records are
        # on the topic still).
        for leftover in (partial, path.with_name(path.name + ".finishing")):
            leftover.unlink(missing_ok=True)
        raise CaptureError(f"--output {path}: cannot be written: {exc.strerror or exc}") from exc
    if failure is not None:
        raise CaptureError(f"capture of {request.topic} stopped after {tally.records} records, "
                           f"kept in {path}: {failure}") from failure
    log.info("capture %s: %d records into %s", "complete" if complete else "interrupted", tally.records, path)
    return CaptureResult(path, tally.records, complete, final)


def _finished(tally: _Tally, registry: codec.SchemaRegistry, complete: bool) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    names: dict[str, str | None] = {}
    for fingerprint in sorted(tally.fingerprints):
        writer = registry._by_fingerprint.get(bytes.fromhex(fingerprint)) if fingerprint != "none" else None
        names[fingerprint] = writer.name if writer is not None else None
        if writer is not None:
            schemas[fingerprint] = writer.declared
    return {
        "complete": complete,
        "finished_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "records": tally.records,
        "records_sha256": tally.digest.hexdigest(),
        "offsets": {str(p): {"first": tally.first_offset[p], "last": tally.last_offset[p],
                             "records": tally.per_partition[p]} for p in sorted(tally.first_offset)},
        "timestamps_ms": {"first": tally.first_ms, "last": tally.last_ms},
        "fingerprints": {fp: {"schema": names[fp], "records": tally.fingerprints[fp]} for fp in names},
        "writer_schemas": schemas,
    }


def _rewrite_with_header(partial: Path, path: Path, final: dict[str, Any], avro_codec: str) -> None:
    staging = path.with_name(path.name + ".finishing")
    with open(partial, "rb") as source, open(staging, "wb") as out:
        writer = fastavro.write.Writer(out, PARSED_SCHEMA, codec=avro_codec,
                                       sync_interval=_SYNC_INTERVAL_BYTES, metadata=metadata(final))
        for block in fastavro.block_reader(source):
            writer.write_block(block)
        writer.flush()
        out.flush()
        os.fsync(out.fileno())
    os.replace(staging, path)
    partial.unlink()


def parse_partitions(text: str | None) -> tuple[int, ...] | None:
    """``"0,2"`` -> (0, 2); None or empty -> None (every partition)."""
    if not text:
        return None
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise CaptureError(f"--partitions {text!r}: expected comma-separated partition numbers") from exc


def read_ranges(reader: TopicReader, request: CaptureRequest,
                stop: threading.Event | None = None) -> tuple[list[OffsetRange], Iterator[KafkaRecord]]:
    """The planned ranges and their records, for topic-to-topic replay."""
    ranges = plan(reader, request)
    return ranges, reader.read(request.topic, ranges, until_ms=request.until_ms, stop=stop)


__all__: Sequence[str] = [
    "CAPTURE_SCHEMA", "CaptureError", "CaptureHeader", "CaptureRequest", "CaptureResult", "capture",
    "default_codec", "open_capture", "parse_partitions", "plan", "progress_bar", "read_capture",
    "read_ranges", "tool_version",
]
