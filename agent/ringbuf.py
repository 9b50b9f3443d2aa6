"""Reading a BPF ring buffer map straight from its memory, as libbpf's ring_buffer__consume
does, without a ctypes callback per record.

Why: bcc hands each record to Python through a ctypes callback and the reader then casts
it to a ctypes Structure and reads its fields one attribute at a time: at tens of thousands
of calls a second those were about 15 % of the agent's CPU (docs/benchmarks.md, section 2).
Here the agent maps the ring (the kernel's layout: a consumer page it may write, a producer
page, then the data pages mapped twice so that a record that wraps reads as one run) and
reads each record with struct in one pass.

The protocol (kernel/bpf/ringbuf.c): every record starts with an 8-byte header whose first
u32 is its length, with BUSY (1 << 31) while the producer is still writing it and DISCARD
(1 << 30) when it was reserved and thrown away; records are 8-byte aligned. The reader
stops at the first busy record and publishes how far it has read in the consumer page,
which frees that space for the producer. The kernel pairs its writes with acquire and release
barriers that Python cannot place: only on x86-64, whose loads are not reordered with loads
nor stores with stores, does plain access keep the protocol (agent/probes.py reads the ring
this way there only). An aligned u64 is one access: the consumer position is one store.
"""

from __future__ import annotations

import ctypes
import mmap
import select
import struct
from collections.abc import Callable

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER_BYTES = 8
_POSITION = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")

# handle(buffer, offset, length): one record's bytes are buffer[offset:offset + length],
# valid only during the call (the producer reuses the space once the reader moves on).
RecordHandler = Callable[[mmap.mmap, int, int], None]


class RingReader:
    """One BPF_MAP_TYPE_RINGBUF map, read by this process alone."""

    def __init__(self, map_fd: int, data_bytes: int) -> None:
        if data_bytes <= 0 or data_bytes & (data_bytes - 1):
            raise ValueError(f"ring buffer of {data_bytes} bytes: its size must be a power of two")
        page = mmap.PAGESIZE
        self._consumer_page = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._consumer = ctypes.c_uint64.from_buffer(self._consumer_page)
        self._ring = mmap.mmap(map_fd, page + 2 * data_bytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data_at = page
        self._mask = data_bytes - 1
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def poll(self, handle: RecordHandler, timeout_ms: int) -> int:
        """Wait up to timeout_ms for records, then hand every committed one over; returns how many."""
        if self._ring.closed:
            return 0
        self._epoll.poll(timeout_ms / 1000)
        return self.consume(handle)

    def consume(self, handle: RecordHandler) -> int:
        """Hand every committed record over, without waiting; returns how many."""
        ring = self._ring
        if ring.closed:
            return 0
        handled = 0
        position = self._consumer.value
        while True:
            produced = _POSITION.unpack_from(ring, 0)[0]
            if position >= produced:
                return handled
            while position < produced:
                at = self._data_at + (position & self._mask)
                header = _LENGTH.unpack_from(ring, at)[0]
                if header & _BUSY:
                    return handled  # being written: the next poll takes it
                length = header & ~(_BUSY | _DISCARD)
                position += (length + _HEADER_BYTES + 7) & ~7
                if header & _DISCARD:  # reserved, then thrown away by the producer
                    self._consumer.value = position
                    continue
                try:
                    handle(ring, at + _HEADER_BYTES, length)
                finally:
                    # Past the record even when handling it failed, as libbpf does: a record
                    # that cannot be handled must not be handed over again and again.
                    self._consumer.value = position
                handled += 1

    def close(self) -> None:
        if self._ring.closed:
            return
        self._epoll.close()
        del self._consumer  # the ctypes view holds an export of the page's buffer
        self._consumer_page.close()
        self._ring.close()
