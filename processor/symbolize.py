"""Turning a frame (binary digest + offset) into a function name.

The processor never sees the nodes' files: it symbolizes from what the agents publish.
A frame nobody can name keeps a stable stand-in, "<digest>+0x<offset>", so it still
hashes and groups the same way on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas import hashing


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a call, as the agent resolved it on the node."""

    address: int
    binary_digest: str | None
    binary_offset: int | None
    library: str | None

    @property
    def identity(self) -> str:
        return hashing.frame_identity(self.binary_digest, self.binary_offset, self.address)


@dataclass(frozen=True, slots=True)
class ResolvedFrame:
    frame: Frame
    symbol: str            # function name, or the frame's identity when unknown
    signature: str         # demangled signature, or the symbol
    purl: str | None
    resolved: bool


class SymbolSource(Protocol):
    """Where function names come from (symbol tables published by the agents)."""

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None: ...


class NoSymbols:
    """A source that knows nothing: every frame stays in its stable unresolved form."""

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None:
        return None


def resolve_frames(frames: list[Frame], top_symbol: str | None, source: SymbolSource) -> list[ResolvedFrame]:
    """Name each frame (bottom -> top). The top frame is the probed function, whose name
    the agent already knows. Caller frames hold return addresses, which point just past
    the call instruction, so they are looked up at offset - 1 (still inside the caller
    even when the call is its last instruction)."""
    resolved = []
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        name: str | None = None
        if index == last and top_symbol:
            name = top_symbol
        elif frame.binary_digest is not None and frame.binary_offset is not None:
            lookup_offset = frame.binary_offset - 1 if index != last else frame.binary_offset
            name = source.lookup(frame.binary_digest, lookup_offset)
        symbol = name or frame.identity
        resolved.append(ResolvedFrame(frame, symbol, symbol, None, name is not None))
    return resolved
