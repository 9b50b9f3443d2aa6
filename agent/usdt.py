"""USDT (SystemTap SDT) markers of an ELF file: where each marker is, its semaphore, and
where its arguments live, read from the .note.stapsdt notes (the format of
<sys/sdt.h>; https://sourceware.org/systemtap/wiki/UserSpaceProbeImplementation).

Only what the agent needs: file offsets for a tracefs uprobe with a reference counter
("path:offset(semaphore_offset)"), and argument specs turned into pt_regs offsets for
bpf/pyfunc.bpf.c. x86-64 only, like the rest of the agent.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from runtime_signals.agent.errors import ProbeError

# Offsets of the registers in the kernel's x86-64 struct pt_regs (arch/x86/include/asm/ptrace.h).
_PT_REGS = {"r15": 0, "r14": 8, "r13": 16, "r12": 24, "bp": 32, "bx": 40, "r11": 48, "r10": 56, "r9": 64,
            "r8": 72, "ax": 80, "cx": 88, "dx": 96, "si": 104, "di": 112, "ip": 128, "sp": 152}
_LEGACY = {"a": "ax", "b": "bx", "c": "cx", "d": "dx"}
_ARG = re.compile(r"^(?P<size>-?\d+)@(?:\$(?P<const>-?\d+)|(?P<disp>-?\d+)?\(%(?P<base>\w+)\)|%(?P<reg>\w+))$")

ARG_REG, ARG_MEM, ARG_CONST = 1, 2, 3


def pt_regs_offset(register: str) -> int:
    """Offset in pt_regs of the 64-bit register holding `register` (rax, eax, ax, al, r12d ...)."""
    name = register.lower()
    if name.startswith("r") and name[1:].rstrip("dwb").isdigit():
        key = "r" + name[1:].rstrip("dwb")
    elif name in ("rip", "eip"):
        key = "ip"
    else:
        stem = name[1:] if name[0] in "re" and len(name) == 3 else name
        stem = stem.removesuffix("l") if stem.endswith(("il", "pl")) else stem
        if len(stem) == 2 and stem[1] in "lhx" and stem[0] in _LEGACY:
            key = _LEGACY[stem[0]]
        else:
            key = stem
    if key not in _PT_REGS:
        raise ProbeError(f"USDT argument register %{register} is not an x86-64 general register")
    return _PT_REGS[key]


@dataclass(frozen=True, slots=True)
class UsdtArg:
    kind: int          # ARG_REG, ARG_MEM, ARG_CONST
    size_bytes: int
    is_signed: bool
    reg_offset: int = 0
    value: int = 0     # the constant, or the displacement from the base register

    @classmethod
    def parse(cls, text: str) -> UsdtArg:
        match = _ARG.match(text)
        if match is None:
            raise ProbeError(f"USDT argument {text!r}: not a form this agent reads (N@%reg, N@disp(%reg), N@$const)")
        size = int(match["size"])
        size_bytes, is_signed = abs(size), size < 0
        if match["const"] is not None:
            return cls(ARG_CONST, size_bytes, is_signed, value=int(match["const"]))
        if match["base"] is not None:
            return cls(ARG_MEM, size_bytes, is_signed, reg_offset=pt_regs_offset(match["base"]),
                       value=int(match["disp"] or 0))
        return cls(ARG_REG, size_bytes, is_signed, reg_offset=pt_regs_offset(match["reg"]))


@dataclass(frozen=True, slots=True)
class UsdtMarker:
    provider: str
    name: str
    file_offset: int            # of the marker's nop, for the uprobe
    semaphore_file_offset: int  # 0 when the marker has no semaphore
    args: tuple[UsdtArg, ...]


def _file_offset(elf: ELFFile, address: int) -> int | None:
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_LOAD" and segment["p_vaddr"] <= address < segment["p_vaddr"] + segment["p_memsz"]:
            return int(address - segment["p_vaddr"] + segment["p_offset"])
    return None


def read_markers(path: Path, provider: str | None = None) -> list[UsdtMarker]:
    """The USDT markers of an ELF file ([] when it has none or is not ELF)."""
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            notes = elf.get_section_by_name(".note.stapsdt")
            if not isinstance(notes, NoteSection):
                return []
            base_section = elf.get_section_by_name(".stapsdt.base")
            actual_base = base_section["sh_addr"] if base_section is not None else None
            markers = []
            for note in notes.iter_notes():
                # pyelftools names type 3 after the GNU notes (NT_GNU_BUILD_ID): the owner
                # "stapsdt" is what tells, and the raw descriptor is n_descdata.
                if note["n_name"] != "stapsdt" or note["n_descsz"] < 24:
                    continue
                desc = bytes(note["n_descdata"])
                pc, note_base, semaphore = struct.unpack_from("<QQQ", desc, 0)
                texts = desc[24:].split(b"\0")
                owner, name, arg_text = (t.decode(errors="replace") for t in ([*texts, b"", b"", b""])[:3])
                if provider is not None and owner != provider:
                    continue
                # Prelinking moves .stapsdt.base; the note records where it was at link time.
                shift = actual_base - note_base if actual_base is not None and note_base else 0
                offset = _file_offset(elf, pc + shift)
                if offset is None:
                    continue
                sem_offset = _file_offset(elf, semaphore + shift) if semaphore else 0
                args = tuple(UsdtArg.parse(a) for a in arg_text.split()) if arg_text else ()
                markers.append(UsdtMarker(owner, name, offset, sem_offset or 0, args))
            return markers
    except (OSError, ELFError) as exc:
        raise ProbeError(f"{path}: reading its USDT notes failed: {exc}") from exc
