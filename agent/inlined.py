"""Inlined copies of a function, from DWARF, so a probe watches it wherever its code runs.

In an -O2 build a function can be inlined into its callers: its symbol (if it still has an
out-of-line copy) is never called, and a uprobe on it never fires. The compiler records
every inlined copy in DWARF as a DW_TAG_inlined_subroutine whose DW_AT_abstract_origin
leads to the function's DW_TAG_subprogram (directly, or through a concrete out-of-line
instance that itself points at the abstract one), with the copy's first instruction at
DW_AT_entry_pc, else DW_AT_low_pc, else the lowest address of its DW_AT_ranges. Those
addresses, turned into file offsets, are where the agent attaches more uprobes for the
same function.

DWARF is read from the binary itself, or from its separate debug file found the way gdb
finds it: /usr/lib/debug/.build-id/xx/yyyy.debug (Debian's -dbgsym packages). Without
either, a function with no out-of-line copy cannot be watched, and the agent says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile

from runtime_signals.agent.symtab import read_build_id

log = logging.getLogger(__name__)

# DWARF bigger than this is not parsed: pyelftools reads it in Python at ~2.5 s of CPU per
# MiB of .debug_info (measured on this VM: 0.5 MiB 1.3 s, 8.8 MiB 19 s), and the lookup runs
# while a process may be held for it (agent/loadwatch.py). Such a file's inlined copies are
# not looked for, and the report says so.
MAX_DEBUG_INFO_BYTES = 2 << 20


@dataclass(frozen=True, slots=True)
class InlinedCopy:
    """One place a function's code was inlined."""

    function: str       # the name the probe asked for (as in the symbol table)
    address: int        # virtual address of the copy's first instruction
    file_offset: int    # where a uprobe goes


@dataclass(frozen=True, slots=True)
class InlineReport:
    """What DWARF says about some functions of one binary."""

    copies: tuple[InlinedCopy, ...]
    dwarf_source: str | None  # the file DWARF was read from; None when there is none
    reason: str = ""          # why copies were not looked for, when dwarf_source is None


def debug_file_of(binary: Path, debug_root: Path = Path("/usr/lib/debug")) -> Path | None:
    """The separate debug file of binary by build id, if installed."""
    build_id = read_build_id(binary)
    if not build_id or len(build_id) < 3:
        return None
    candidate = debug_root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    return candidate if candidate.exists() else None


def _die_name(die: DIE) -> str | None:
    for attribute in ("DW_AT_linkage_name", "DW_AT_MIPS_linkage_name", "DW_AT_name"):
        value = die.attributes.get(attribute)
        if value is not None:
            raw = value.value
            return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return None


def _origin(die: DIE) -> DIE | None:
    if "DW_AT_abstract_origin" not in die.attributes:
        return None
    try:
        return die.get_DIE_from_attribute("DW_AT_abstract_origin")
    except (DWARFError, KeyError, ValueError):
        return None


def _named(die: DIE, depth: int = 0) -> str | None:
    """The name of a subprogram, following abstract origins (concrete -> abstract)."""
    name = _die_name(die)
    if name is not None or depth > 4:
        return name
    origin = _origin(die)
    return _named(origin, depth + 1) if origin is not None else None


def _entry_address(die: DIE, dwarf: object, cu: object) -> int | None:
    attributes = die.attributes
    if "DW_AT_entry_pc" in attributes:
        entry = attributes["DW_AT_entry_pc"]
        if entry.form != "DW_FORM_addr" and "DW_AT_low_pc" in attributes:
            # DWARF 5 may give entry_pc as an offset from low_pc.
            return int(attributes["DW_AT_low_pc"].value) + int(entry.value)
        return int(entry.value)
    if "DW_AT_low_pc" in attributes:
        return int(attributes["DW_AT_low_pc"].value)
    if "DW_AT_ranges" in attributes:
        ranges = dwarf.range_lists()  # type: ignore[attr-defined]
        if ranges is None:
            return None
        try:
            entries = ranges.get_range_list_at_offset(attributes["DW_AT_ranges"].value, cu=cu)
        except (DWARFError, KeyError, ValueError, TypeError):
            return None
        base = int(cu.get_top_DIE().attributes.get("DW_AT_low_pc").value  # type: ignore[attr-defined]
                   if "DW_AT_low_pc" in cu.get_top_DIE().attributes else 0)  # type: ignore[attr-defined]
        starts = []
        for entry in entries:
            if hasattr(entry, "begin_offset"):
                absolute = getattr(entry, "is_absolute", False)
                starts.append(int(entry.begin_offset) + (0 if absolute else base))
            elif hasattr(entry, "base_address"):
                base = int(entry.base_address)
        return min(starts) if starts else None
    return None


def _file_offset(elf: ELFFile, address: int) -> int | None:
    for segment in elf.iter_segments("PT_LOAD"):
        start = segment["p_vaddr"]
        if start <= address < start + segment["p_filesz"] and segment["p_flags"] & 1:  # PF_X
            return address - start + segment["p_offset"]
    return None


def inlined_copies(binary: Path, functions: Iterable[str], debug_root: Path = Path("/usr/lib/debug")) -> InlineReport:
    """Every inlined copy of the named functions (symbol-table names, mangled for C++) in binary."""
    wanted = set(functions)
    debug = binary
    try:
        with open(binary, "rb") as handle:
            if not ELFFile(handle).has_dwarf_info() or ELFFile(handle).get_section_by_name(".debug_info") is None:
                separate = debug_file_of(binary, debug_root)
                if separate is None:
                    return InlineReport((), None, f"{binary} has no DWARF and no debug file under {debug_root}")
                debug = separate
    except (OSError, ELFError) as exc:
        return InlineReport((), None, f"reading {binary}: {exc}")
    try:
        with open(debug, "rb") as dwarf_handle, open(binary, "rb") as binary_handle:
            dwarf_elf = ELFFile(dwarf_handle)
            info = dwarf_elf.get_section_by_name(".debug_info")
            if info is None:
                return InlineReport((), None, f"{debug} has no .debug_info")
            if info.data_size > MAX_DEBUG_INFO_BYTES:
                return InlineReport((), None, f"{debug}: DWARF of {info.data_size} bytes is more than the "
                                              f"{MAX_DEBUG_INFO_BYTES} bytes read for inlined copies")
            dwarf = dwarf_elf.get_dwarf_info()
            code_elf = ELFFile(binary_handle)
            copies: set[InlinedCopy] = set()
            for cu in dwarf.iter_CUs():
                for die in cu.iter_DIEs():
                    if die.tag != "DW_TAG_inlined_subroutine":
                        continue
                    origin = _origin(die)
                    name = _named(origin) if origin is not None else None
                    if name not in wanted or name is None:
                        continue
                    address = _entry_address(die, dwarf, cu)
                    offset = _file_offset(code_elf, address) if address else None
                    if address and offset is not None:
                        copies.add(InlinedCopy(name, address, offset))
    except (OSError, ELFError, DWARFError, ValueError, KeyError, AssertionError) as exc:
        return InlineReport((), None, f"reading DWARF of {binary} from {debug}: {exc}")
    return InlineReport(tuple(sorted(copies, key=lambda c: (c.function, c.address))), str(debug))
