"""A bounded on-disk FIFO of Kafka records, for when the broker cannot take them.

Segment files `<sequence>.seg` in one directory, read from the lowest sequence up.
Records are appended to the newest segment; records that must go before everything
spooled (what librdkafka still held at shutdown) are written to a new segment below the
oldest. A `cursor` file keeps the read position in the oldest segment across restarts.

Record layout (little-endian): u32 body length, u32 CRC-32 of the body, then the body:
i32 partition (-1: let the partitioner choose), u32 calls, u32 topic length, i32 key
length (-1: no key), u32 value length, u32 header count, then topic, key, value and each
header as u32 name length, i32 value length (-1: none), name, value. A torn or corrupt
record (a crash mid-write) ends its segment: what follows is skipped and counted.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from runtime_signals.agent.errors import ConfigError

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_BODY = struct.Struct("<iIIiII")
_HEADER = struct.Struct("<Ii")
_FIRST_SEQUENCE = 1 << 40  # room below for segments written ahead of the oldest
_SUFFIX = ".seg"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    calls: int = 0  # calls the record stands for (0 for watermarks, symbol tables)
    headers: tuple[tuple[str, bytes | None], ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        topic = self.topic.encode()
        key = self.key or b""
        parts = [_BODY.pack(-1 if self.partition is None else self.partition, self.calls, len(topic),
                            -1 if self.key is None else len(key), len(self.value), len(self.headers)),
                 topic, key, self.value]
        for name, value in self.headers:
            encoded = name.encode()
            parts += [_HEADER.pack(len(encoded), -1 if value is None else len(value)), encoded, value or b""]
        body = b"".join(parts)
        return _FRAME.pack(len(body), zlib.crc32(body)) + body

    @classmethod
    def decode(cls, body: bytes) -> SpoolRecord:
        partition, calls, topic_len, key_len, value_len, header_count = _BODY.unpack_from(body, 0)
        at = _BODY.size
        topic = body[at:at + topic_len].decode()
        at += topic_len
        key = None if key_len < 0 else body[at:at + key_len]
        at += max(key_len, 0)
        value = body[at:at + value_len]
        at += value_len
        headers = []
        for _ in range(header_count):
            name_len, header_len = _HEADER.unpack_from(body, at)
            at += _HEADER.size
            name = body[at:at + name_len].decode()
            at += name_len
            headers.append((name, None if header_len < 0 else body[at:at + header_len]))
            at += max(header_len, 0)
        return cls(topic, key, value, None if partition < 0 else partition, calls, tuple(headers))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace path's content with data so that a crash at any point leaves either the old
    content or the new: a temporary file, fsynced, renamed over path, the directory fsynced."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Spool:
    """FIFO of SpoolRecords in `directory`, never more than `max_bytes` on disk. Thread-safe."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 << 20) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ConfigError(f"spool max_bytes={max_bytes}, segment_bytes={segment_bytes}: must be positive")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"spool directory {directory}: cannot be created: {exc.strerror}") from exc
        self.directory = directory
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock = threading.RLock()
        self._segments: list[int] = sorted(int(p.stem) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        head_size = self._path(self._segments[0]).stat().st_size if self._segments else 0
        self._head_offset = min(self._read_cursor(), head_size)
        self._writer: int | None = None  # fd of the newest segment, opened for append
        self._peeked: tuple[int, int, SpoolRecord, int] | None = None  # (segment, offset, record, size)
        self._pops_since_cursor = 0
        self.corrupt_records = 0  # torn tails skipped; their calls are unknown
        self._bytes = sum(self._path(s).stat().st_size for s in self._segments) - self._head_offset
        self._records, self._calls = self._count_records()
        if self._records:
            log.info("spool %s holds %d record(s), %d bytes, from an earlier run", directory, self._records,
                     self._bytes)

    # --- writing ------------------------------------------------------------------

    def append(self, record: SpoolRecord) -> bool:
        """Add record at the end; False (and nothing written) when the bound would be passed."""
        data = record.encode()
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                return False
            if self._writer is None or os.fstat(self._writer).st_size >= self._segment_bytes:
                self._open_new_tail()
            assert self._writer is not None
            os.write(self._writer, data)
            self._bytes += len(data)
            self._records += 1
            self._calls += record.calls
            return True

    def prepend(self, records: list[SpoolRecord]) -> list[SpoolRecord]:
        """Put records, in their order, before everything spooled; returns those that did not fit."""
        with self._lock:
            fitting: list[bytes] = []
            refused: list[SpoolRecord] = []
            room = self.max_bytes - self._bytes
            for record in records:
                data = record.encode()
                if len(data) <= room:
                    fitting.append(data)
                    room -= len(data)
                    self._calls += record.calls
                else:
                    refused.append(record)
            if fitting:
                self._rewrite_head_as_new_segment()
                sequence = (self._segments[0] if self._segments else _FIRST_SEQUENCE) - 1
                fd = os.open(self._path(sequence), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, b"".join(fitting))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._segments.insert(0, sequence)
                self._bytes += sum(len(d) for d in fitting)
                self._records += len(fitting)
            return refused

    def _rewrite_head_as_new_segment(self) -> None:
        # The cursor belongs to the oldest segment; a new oldest one must start at 0, so
        # the consumed prefix of the current head is cut off first.
        if not self._segments or not self._head_offset:
            return
        head = self._segments[0]
        if self._writer is not None and head == self._segments[-1]:
            os.close(self._writer)
            self._writer = None
        path = self._path(head)
        remainder = path.read_bytes()[self._head_offset:]
        # Cursor first: a crash between the two resends the consumed prefix (duplicates an
        # event_id tells apart), where the other order would skip as many unsent bytes.
        self._peeked = None
        self._head_offset = 0
        self._write_cursor()
        write_atomically(path, remainder)

    def _open_new_tail(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
        sequence = (self._segments[-1] + 1) if self._segments else _FIRST_SEQUENCE
        self._writer = os.open(self._path(sequence), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments.append(sequence)

    # --- reading ------------------------------------------------------------------

    def peek(self) -> SpoolRecord | None:
        """The oldest record, without removing it."""
        with self._lock:
            while self._segments:
                head = self._segments[0]
                if self._peeked is not None and self._peeked[:2] == (head, self._head_offset):
                    return self._peeked[2]
                found = self._read_at(head, self._head_offset)
                if found is not None:
                    self._peeked = (head, self._head_offset, found[0], found[1])
                    return found[0]
                if not self._drop_head_segment():
                    return None
            return None

    def pop(self) -> None:
        """Remove the oldest record (the one peek() returned)."""
        with self._lock:
            if self.peek() is None or self._peeked is None:
                return
            size = self._peeked[3]
            self._calls -= self._peeked[2].calls
            self._peeked = None
            self._head_offset += size
            self._bytes -= size
            self._records = max(0, self._records - 1)
            # The cursor is saved every 100 records, when the spool is drained, on segment ends
            # and on close: after a crash at most 100 records are sent twice, which the
            # processor tells apart by their event ids and adds once.
            self._pops_since_cursor += 1
            if self._pops_since_cursor >= 100 or not self._bytes:
                # Also once drained: a crash then must not send the drained records again.
                self._write_cursor()

    def _read_at(self, sequence: int, offset: int) -> tuple[SpoolRecord, int] | None:
        path = self._path(sequence)
        try:
            with open(path, "rb") as file:
                file.seek(offset)
                frame = file.read(_FRAME.size)
                if len(frame) < _FRAME.size:
                    return None
                length, crc = _FRAME.unpack(frame)
                body = file.read(length)
        except FileNotFoundError:
            return None
        if len(body) < length or zlib.crc32(body) != crc:
            self._skip_torn_tail(sequence, offset)
            return None
        return SpoolRecord.decode(body), _FRAME.size + length

    def _skip_torn_tail(self, sequence: int, offset: int) -> None:
        if sequence == self._segments[-1] and self._writer is not None:
            return  # the tail being written: a record is never torn by this process
        size = self._path(sequence).stat().st_size
        self.corrupt_records += 1
        self._bytes -= size - offset
        log.error("spool segment %s is corrupt after byte %d: %d byte(s) skipped", self._path(sequence), offset,
                  size - offset)
        self._head_offset = size
        self._records, self._calls = self._count_records()

    def _drop_head_segment(self) -> bool:
        """Delete the fully read oldest segment; False when it is the one being written."""
        head = self._segments[0]
        if self._writer is not None and head == self._segments[-1]:
            return False
        self._path(head).unlink(missing_ok=True)
        self._segments.pop(0)
        self._peeked = None
        self._head_offset = 0
        self._write_cursor()
        return True

    # --- state --------------------------------------------------------------------

    def __len__(self) -> int:
        """Records held (informational: a corrupt segment makes it approximate)."""
        return self._records

    @property
    def calls(self) -> int:
        """Calls the held records stand for."""
        return self._calls

    def __bool__(self) -> bool:
        return self._bytes > 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        """Make everything written durable; an empty spool leaves no segment behind."""
        with self._lock:
            if self._writer is not None:
                os.fsync(self._writer)
                os.close(self._writer)
                self._writer = None
            if not self._bytes:
                for sequence in self._segments:
                    self._path(sequence).unlink(missing_ok=True)
                self._segments.clear()
                self._peeked = None
                self._head_offset = 0
            self._write_cursor()

    def _path(self, sequence: int) -> Path:
        return self.directory / f"{sequence:020d}{_SUFFIX}"

    def _read_cursor(self) -> int:
        try:
            return int((self.directory / "cursor").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_cursor(self) -> None:
        """Write-then-rename: a crash leaves the old cursor or the new one, never an empty or
        half-written file (which would read as 0 and resend the whole head segment)."""
        self._pops_since_cursor = 0
        write_atomically(self.directory / "cursor", f"{self._head_offset}\n".encode())

    def _count_records(self) -> tuple[int, int]:
        count = calls = 0
        for index, sequence in enumerate(self._segments):
            offset = self._head_offset if index == 0 else 0
            path = self._path(sequence)
            size = path.stat().st_size
            with open(path, "rb") as file:
                file.seek(offset)
                while len(frame := file.read(_FRAME.size)) == _FRAME.size:
                    length, _ = _FRAME.unpack(frame)
                    if file.tell() + length > size or length < _BODY.size:
                        break  # torn
                    calls += _BODY.unpack(file.read(_BODY.size))[1]
                    file.seek(length - _BODY.size, os.SEEK_CUR)
                    count += 1
        return count, calls
