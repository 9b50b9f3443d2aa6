"""Call paths as people read them: demangled names, and no two different paths printed alike.

A summary keeps each frame's symbol (as the binary names it, mangled for C++ and Rust) and,
when the processor computed it, its demangled signature. Text output shows the signature,
or demangles the symbol itself when the signature is missing, and shortens unresolved
frames ("sha256:…+0x1a2b").

Two distinct paths can have the same names frame for frame: the same functions, called
from different places in a caller (two call sites of `parse` in `handle_request`). A
table that printed both alike would look like one path counted twice. `path_labels`
therefore adds, only where names collide, each differing frame's location: "@0x<offset>"
in its binary (the return address's file offset, what the processor symbolizes from),
and the binary's short digest if even the offsets agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from runtime_signals.schemas import demangle


@lru_cache(maxsize=65_536)
def readable(symbol: str) -> str:
    """A frame's name for people: C++/Rust manglings demangled, unresolved frames
    ("sha256:<hex>+0x<offset>") shortened; anything else as it is."""
    if symbol.startswith("sha256:") and "+" in symbol:
        digest, offset = symbol.split("+", 1)
        return f"{digest[:15]}…+{offset}"
    return demangle.readable(symbol)


@dataclass(frozen=True, slots=True)
class PathFrames:
    """What a listing knows of one path's frames (parallel tuples, entry point first)."""

    symbols: Sequence[str]
    signatures: Sequence[str] = ()
    binary_offsets: Sequence[int | None] = ()
    binary_digests: Sequence[str | None] = ()

    def names(self) -> list[str]:
        names = []
        for index, symbol in enumerate(self.symbols):
            signature = self.signatures[index] if index < len(self.signatures) else None
            # The processor's signature is the demangled name, or the frame identity for an
            # unresolved frame; either way readable() keeps it short.
            names.append(readable(signature or symbol))
        return names

    def location(self, index: int) -> tuple[str | None, int | None]:
        digest = self.binary_digests[index] if index < len(self.binary_digests) else None
        offset = self.binary_offsets[index] if index < len(self.binary_offsets) else None
        return digest, offset


def path_labels(paths: Sequence[PathFrames]) -> list[list[str]]:
    """Each path's frame labels: demangled names, plus the call site ("@0x<offset>", then
    "[sha256:<12 hex>]") of the frames where paths that print alike differ."""
    labels = [p.names() for p in paths]
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, names in enumerate(labels):
        groups[tuple(names)].append(index)
    for members in groups.values():
        if len(members) < 2:
            continue
        for frame in range(len(labels[members[0]])):
            locations = {paths[m].location(frame) for m in members}
            if len(locations) < 2:
                continue
            offsets = {offset for _, offset in locations}
            for m in members:
                digest, offset = paths[m].location(frame)
                if offset is not None:
                    labels[m][frame] += f"@0x{offset:x}"
                if len(offsets) < len(locations) and digest:
                    labels[m][frame] += f"[{digest[:19]}]"
    return labels
