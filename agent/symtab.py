"""Function symbols of an ELF file, with file offsets, for the processor to symbolize with.

Frames travel as (binary digest, file offset); symbols are published once per digest
(agent/symbols_publisher.py), so the offsets here are file offsets too: a symbol's
virtual address is mapped through the PT_LOAD segment that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection


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
        if section.header.sh_type != "SHT_NOTE":
            continue
        for note in section.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    return None


def _segments(elf: ELFFile) -> list[tuple[int, int, int]]:
    return [(s["p_vaddr"], s["p_memsz"], s["p_offset"]) for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]


def _to_file_offset(segments: list[tuple[int, int, int]], vaddr: int) -> int | None:
    for start, size, offset in segments:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    return None


def read_symbol_table(path: str | Path, debug_root: Path | None = None) -> SymbolTable:
    """Defined function symbols of the file: from its .symtab when present (complete);
    else from its separate debug file under debug_root, found by build id (Debian's
    -dbg/-dbgsym packages); else from .dynsym (the exported functions a stripped
    binary keeps). Offsets always come from the binary's own segments: a debug file's
    PT_LOAD offsets describe no real file content."""
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            segments = _segments(elf)
            build_id = _build_id(elf)
            symtab = _symbols(elf, ".symtab", segments)
            if symtab:
                return SymbolTable(build_id, ".symtab", symtab)
            debug = find_debug_file(debug_root, build_id) if debug_root and build_id else None
            if debug is not None:
                with open(debug, "rb") as debug_handle:
                    from_debug = _symbols(ELFFile(debug_handle), ".symtab", segments)
                if from_debug:
                    return SymbolTable(build_id, f"debug:{debug}", from_debug)
            dynsym = _symbols(elf, ".dynsym", segments)
            return SymbolTable(build_id, ".dynsym" if dynsym else None, dynsym)
    except (OSError, ELFError) as exc:
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
        offset = _to_file_offset(segments, symbol["st_value"])
        if offset is None or not symbol.name:
            continue
        yield FunctionSymbol(offset, symbol["st_size"], symbol.name)


def chunk_symbols(symbols: list[FunctionSymbol], max_chunk_bytes: int) -> list[list[FunctionSymbol]]:
    """Split symbols into chunks whose encoded size stays under max_chunk_bytes, so each
    fits the broker's message size limit (estimated: name bytes + 24 for two varints
    and framing, an upper bound for Avro's encoding)."""
    chunks: list[list[FunctionSymbol]] = [[]]
    size = 0
    for symbol in symbols:
        cost = len(symbol.name.encode()) + 24
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
