"""Offsets of kernel struct members, read from the running kernel's BTF.

bcc compiles BPF programs against the kernel headers installed on the node, and those can
be another kernel's: a distribution's headers package beside a custom or newer kernel (this
project's own CI host runs 6.18 with Debian's 6.1 headers). An offset taken from them reads
another field, silently, and whatever the program decides from it is wrong. A program that
reads kernel structs therefore takes their offsets from /sys/kernel/btf/vmlinux, which the
running kernel describes itself with, and falls back to the headers' offsetof only where the
kernel has no BTF (kernel.org/doc/html/latest/bpf/btf.html gives the format read here).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VMLINUX = Path("/sys/kernel/btf/vmlinux")
_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")   # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_TYPE = struct.Struct("<III")          # name_off, info, size or type
_MEMBER = struct.Struct("<III")        # name_off, type, offset
_STRUCT, _UNION = 4, 5
# Kinds that only qualify or rename another type: typedef, volatile, const, restrict, type tag.
_QUALIFIERS = frozenset((8, 9, 10, 11, 18))
# Bytes that follow a type's common part: a fixed size, or a size per vlen entry.
_FIXED_TAIL = {1: 4, 3: 12, 14: 4, 17: 4}            # int, array, var, decl tag
_ENTRY_TAIL = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # struct, union, enum, func proto, datasec, enum64


class KernelTypesError(Exception):
    """BTF that cannot be read, or a struct or member it does not describe."""


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    type_id: int
    bit_offset: int


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: str
    referenced: int                   # the type a qualifier or typedef names
    members: tuple[_Member, ...]      # of a struct or union


class KernelTypes:
    """The structs and unions of one BTF blob, looked up by name."""

    def __init__(self, blob: bytes, source: str = "BTF") -> None:
        self._source = source
        if len(blob) < _HEADER.size:
            raise KernelTypesError(f"{source}: {len(blob)} bytes, shorter than a BTF header")
        magic, _version, _flags, header_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(blob)
        if magic != _MAGIC:
            raise KernelTypesError(f"{source}: magic 0x{magic:04x}, not BTF's 0x{_MAGIC:04x}")
        types_at, strings_at = header_len + type_off, header_len + str_off
        if types_at + type_len > len(blob) or strings_at + str_len > len(blob):
            raise KernelTypesError(f"{source}: sections run past its {len(blob)} bytes")
        strings = blob[strings_at:strings_at + str_len]
        self._types: list[_Type | None] = [None]   # type id 0 is void
        self._by_name: dict[str, int] = {}
        at, end = types_at, types_at + type_len
        while at < end:
            name_off, info, size_or_type = _TYPE.unpack_from(blob, at)
            at += _TYPE.size
            kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[_Member, ...] = ()
            if kind in (_STRUCT, _UNION):
                listed = []
                for index in range(vlen):
                    m_name, m_type, m_offset = _MEMBER.unpack_from(blob, at + index * _MEMBER.size)
                    # With kind_flag the low 24 bits are the offset, the high 8 a bitfield's size.
                    listed.append(_Member(_string(strings, m_name), m_type, m_offset & 0xFFFFFF if kind_flag
                                          else m_offset))
                members = tuple(listed)
            elif kind not in _FIXED_TAIL and kind not in _ENTRY_TAIL and kind not in _QUALIFIERS \
                    and kind not in (2, 7, 12, 16):  # pointer, forward declaration, func, float
                raise KernelTypesError(f"{source}: type {len(self._types)} has kind {kind}, unknown to this reader")
            at += _FIXED_TAIL.get(kind, 0) + _ENTRY_TAIL.get(kind, 0) * vlen
            name = _string(strings, name_off)
            self._types.append(_Type(kind, name, size_or_type, members))
            if kind in (_STRUCT, _UNION) and name and name not in self._by_name:
                self._by_name[name] = len(self._types) - 1

    @classmethod
    def running_kernel(cls, path: Path = VMLINUX) -> KernelTypes | None:
        """The running kernel's types; None (logged) when it publishes no BTF."""
        try:
            blob = path.read_bytes()
        except OSError as exc:
            log.warning("no kernel BTF at %s (%s): kernel struct offsets come from the installed headers, "
                        "which must then be the running kernel's", path, exc.strerror or exc)
            return None
        return cls(blob, str(path))

    def offset(self, dotted: str) -> int:
        """The byte offset of a member path from the start of its struct:
        "fs_struct.root.dentry" is offsetof(struct fs_struct, root) + offsetof(struct path, dentry).
        Members of anonymous structs and unions are found as C finds them."""
        struct_name, *names = dotted.split(".")
        type_id = self._by_name.get(struct_name)
        if type_id is None or not names:
            raise KernelTypesError(f"{self._source}: no struct {struct_name!r}" if type_id is None
                                   else f"{dotted!r}: name a member")
        bits = 0
        for name in names:
            found = self._find(type_id, name)
            if found is None:
                raise KernelTypesError(f"{self._source}: {dotted!r}: {self._describe(type_id)} has no member {name!r}")
            member_bits, type_id = found
            bits += member_bits
        if bits % 8:
            raise KernelTypesError(f"{self._source}: {dotted!r} is a bitfield")
        return bits // 8

    def _find(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of a member of the struct or union type_id, by name."""
        container = self._resolved(type_id)
        if container is None or container.kind not in (_STRUCT, _UNION):
            return None
        for member in container.members:
            if member.name == name:
                return member.bit_offset, member.type_id
            if not member.name:  # an anonymous struct or union: its members are the parent's
                inner = self._find(member.type_id, name)
                if inner is not None:
                    return member.bit_offset + inner[0], inner[1]
        return None

    def _resolved(self, type_id: int) -> _Type | None:
        for _ in range(32):  # qualifier chains are short; a loop would be corrupt BTF
            if not 0 < type_id < len(self._types):
                return None
            found = self._types[type_id]
            if found is None or found.kind not in _QUALIFIERS:
                return found
            type_id = found.referenced
        return None

    def _describe(self, type_id: int) -> str:
        found = self._resolved(type_id)
        return f"{'union' if found and found.kind == _UNION else 'struct'} {found.name if found else type_id}"


def _string(strings: bytes, offset: int) -> str:
    end = strings.find(b"\0", offset)
    return strings[offset:end if end >= 0 else len(strings)].decode("ascii", "replace")


def offset_cflags(members: dict[str, str], types: KernelTypes | None) -> list[str]:
    """-D flags defining each macro of members (macro -> dotted member path) as its offset in
    the running kernel; none without BTF, and the program's headers' offsetof applies."""
    if types is None:
        return []
    return [f"-D{macro}={types.offset(dotted)}" for macro, dotted in members.items()]
