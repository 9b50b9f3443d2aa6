"""Function symbols of an ELF file, with file offsets, for the processor to symbolize with.

Frames travel as (binary digest, file offset); symbols are published once per digest
(agent/symbols_publisher.py), so the offsets here are file offsets too: a symbol's
virtual address is mapped through the PT_LOAD segment that holds it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection


@dataclass(frozen=True, slots=True, order=True)
class FunctionSymbol:
    file_offset: int
    size_bytes: int
    name: str


@dataclass(frozen=True)
class SymbolTable:
    build_id: str | None
    source: str | None  # ".symtab", ".dynsym", "debug:<path>", or None when there are none
    symbols: list[FunctionSymbol]


class SymbolTableError(Exception):
    """The file is not an ELF file that symbols can be read from."""


def _build_id(elf: ELFFile) -> str | None:
    for section in elf.iter_sections():
        if not isinstance(section, NoteSection):
            continue
        for note in section.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    return None


def read_build_id(path: str | Path) -> str | None:
    """The GNU build id of an ELF file (from its notes), or None."""
    try:
        with open(path, "rb") as handle:
            return _build_id(ELFFile(handle))
    except (OSError, ELFError, ValueError):
        return None


def _debuglink(elf: ELFFile) -> tuple[str, int] | None:
    """(file name, CRC-32) from .gnu_debuglink: a NUL-terminated name, padding to 4 bytes,
    then the CRC of the whole debug file."""
    section = elf.get_section_by_name(".gnu_debuglink")
    if section is None:
        return None
    data = section.data()
    name, _, _ = data.partition(b"\0")
    if not name or len(data) < 4:
        return None
    return name.decode(errors="replace"), int.from_bytes(data[-4:], "little" if elf.little_endian else "big")


def _file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def find_debuglink_file(root: Path, binary_path: str, name: str, crc: int) -> Path | None:
    """The separate debug file named by .gnu_debuglink, in gdb's search order: next to the
    binary, in its .debug/ directory, then under <root>/usr/lib/debug/<binary's dir>. The
    CRC must match, so a debug file of another build is never used."""
    binary_dir = str(Path(binary_path).parent).lstrip("/")
    for candidate in (root / binary_dir / name, root / binary_dir / ".debug" / name,
                      root / "usr/lib/debug" / binary_dir / name):
        try:
            if candidate.is_file() and _file_crc32(candidate) == crc:
                return candidate
        except OSError:
            continue
    return None


def load_segments(elf: ELFFile) -> list[tuple[int, int, int]]:
    """(virtual address, memory size, file offset) of each PT_LOAD segment."""
    return [(s["p_vaddr"], s["p_memsz"], s["p_offset"]) for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]


def to_file_offset(segments: list[tuple[int, int, int]], vaddr: int) -> int | None:
    """The file offset of a virtual address (load_segments), None outside every segment."""
    for start, size, offset in segments:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    return None


def read_symbol_table(path: str | Path, debug_root: Path | None = None,
                      path_in_root: str | None = None) -> SymbolTable:
    """Defined function symbols of the file: from its .symtab when present (complete);
    else from its separate debug file under debug_root, found by build id (Debian's
    -dbg/-dbgsym packages) or by .gnu_debuglink (path_in_root: where the binary sits
    inside debug_root, for the directories gdb searches); else from .dynsym (the exported
    functions a stripped binary keeps). Offsets always come from the binary's own
    segments: a debug file's PT_LOAD offsets describe no real file content."""
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            segments = load_segments(elf)
            build_id = _build_id(elf)
            symtab = _symbols(elf, ".symtab", segments)
            if symtab:
                return SymbolTable(build_id, ".symtab", symtab)
            debug = find_debug_file(debug_root, build_id) if debug_root and build_id else None
            link = _debuglink(elf) if debug is None and debug_root is not None else None
            if link is not None and debug_root is not None:
                if path_in_root is None:
                    inside = Path(path).is_relative_to(debug_root)
                    path_in_root = "/" + str(Path(path).relative_to(debug_root)) if inside else str(path)
                debug = find_debuglink_file(debug_root, path_in_root, *link)
            if debug is not None:
                with open(debug, "rb") as debug_handle:
                    from_debug = _symbols(ELFFile(debug_handle), ".symtab", segments)
                if from_debug:
                    return SymbolTable(build_id, f"debug:{debug}", from_debug)
            dynsym = _symbols(elf, ".dynsym", segments)
            return SymbolTable(build_id, ".dynsym" if dynsym else None, dynsym)
    except (OSError, ELFError, ValueError) as exc:
        raise SymbolTableError(f"{path}: cannot read ELF symbols: {exc}") from exc


def _symbols(elf: ELFFile, section_name: str, segments: list[tuple[int, int, int]]) -> list[FunctionSymbol]:
    section = elf.get_section_by_name(section_name)
    if not isinstance(section, SymbolTableSection):
        return []
    return sorted(set(_functions(section, segments)))


def _functions(section: SymbolTableSection, segments: list[tuple[int, int, int]]) -> Iterator[FunctionSymbol]:
    for symbol in section.iter_symbols():
        if symbol["st_info"]["type"] not in ("STT_FUNC", "STT_GNU_IFUNC") or symbol["st_shndx"] == "SHN_UNDEF":
            continue
        offset = to_file_offset(segments, symbol["st_value"])
        if offset is None or not symbol.name:
            continue
        yield FunctionSymbol(offset, symbol["st_size"], symbol.name)


def chunk_symbols(symbols: list[FunctionSymbol], max_chunk_bytes: int) -> list[list[FunctionSymbol]]:
    """Split symbols into chunks whose encoded size stays under max_chunk_bytes, so each
    fits the broker's message size limit (estimated: name bytes + 25 for two 10-byte
    varints and a 5-byte length, an upper bound for Avro's encoding of one symbol)."""
    chunks: list[list[FunctionSymbol]] = [[]]
    size = 0
    for symbol in symbols:
        cost = len(symbol.name.encode()) + 25
        if chunks[-1] and size + cost > max_chunk_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(symbol)
        size += cost
    return chunks


def find_debug_file(root: Path, build_id: str) -> Path | None:
    """The separate debug file of a build id (Debian's *-dbg / *-dbgsym packages install
    them as /usr/lib/debug/.build-id/ab/cdef….debug), looked up under root."""
    if len(build_id) < 3:
        return None
    candidate = root / "usr/lib/debug/.build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    return candidate if candidate.is_file() else None
