"""Turning a frame (binary digest + offset) into a function name and signature.

The processor never sees the nodes' files: it symbolizes from the symbol tables the
agents publish. A frame nobody can name keeps a stable stand-in: its symbol is its frame
identity "<digest>+0x<offset>", its signature the v2 stand-in (schemas/HASHING.md §13),
so it still hashes and groups the same way on every run.

Signatures are demangled by runtime_signals.schemas.demangle (LLVM's demanglers, the same
the agent matches targets with); its output enters node hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runtime_signals.schemas import hashing
from runtime_signals.schemas.demangle import readable


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a call, as the agent located it on the node."""

    address: int
    binary_digest: str | None
    binary_offset: int | None
    library: str | None
    purl: str | None = None  # the package the agent found for the file (StackFrame.purl)

    @property
    def identity(self) -> str:
        return hashing.frame_identity(self.binary_digest, self.binary_offset, self.address)


@dataclass(slots=True)  # not changed once made; not frozen: that costs 0.6 us per frame named
class ResolvedFrame:
    frame: Frame
    identity: str
    symbol: str            # the name as in the symbol table, or the frame identity when unknown
    signature: str         # demangled signature; for an unresolved frame its v2 stand-in
    purl: str | None       # the package's PURL as found, None for an unpackaged binary
    module: str            # module identity, the node hash's purl (HASHING.md v2 §12)
    resolved: bool

    @property
    def unlocated_address(self) -> int | None:
        """The address, for a frame in no digested file (its identity is made of it); else None."""
        return self.frame.address if self.identity.startswith(hashing.UNKNOWN_BINARY + "+") else None

    @property
    def node_hash(self) -> str:
        return hashing.node_hash_v2(self.module, self.signature)

    def evidence(self) -> dict[str, Any]:
        """Everything the frame's hashes are computed from (HASHING.md v2), as JSON."""
        return {"symbol": self.symbol, "signature": self.signature, "module": self.module, "purl": self.purl,
                "binary_digest": self.frame.binary_digest, "binary_offset": self.frame.binary_offset,
                "library": self.frame.library, "address": self.unlocated_address, "node_hash": self.node_hash,
                "resolved": self.resolved}


class SymbolSource(Protocol):
    """Where function names and packages come from (what the agents publish)."""

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None: ...

    def purl(self, binary_digest: str) -> str | None: ...


class NoSymbols:
    """A source that knows nothing: every frame stays in its stable unresolved form."""

    def lookup(self, binary_digest: str, binary_offset: int) -> str | None:
        return None

    def purl(self, binary_digest: str) -> str | None:
        return None

    def has_all(self, binary_digests: Iterable[str]) -> bool:
        return True  # nothing will ever arrive: no window waits

    def has_modules(self, binary_digests: Iterable[str]) -> bool:
        return True


def lookup_offset(frame: Frame, is_top: bool) -> int | None:
    """Where to look a frame up. Caller frames hold return addresses, which point just
    past the call instruction, so they are looked up at offset - 1 (still inside the
    caller even when the call is its last instruction)."""
    if frame.binary_digest is None or frame.binary_offset is None:
        return None
    return frame.binary_offset if is_top else frame.binary_offset - 1


def resolve_frames(frames: Sequence[Frame], identities: Sequence[str], top_symbol: str | None,
                   top_signature: str | None, top_purl: str | None,
                   source: SymbolSource) -> list[ResolvedFrame]:
    """Name each frame (bottom -> top). The top frame is the probed function, whose name
    (and maybe signature and purl) the agent already knows. A frame's PURL is its
    binary's, from the module maps; the agent's for the top frame when no map names it."""
    resolved = []
    last = len(frames) - 1
    for index, (frame, identity) in enumerate(zip(frames, identities, strict=False)):
        is_top = index == last
        name: str | None = None
        if is_top and top_symbol:
            name = top_symbol
        else:
            offset = lookup_offset(frame, is_top)
            if offset is not None and frame.binary_digest is not None:
                name = source.lookup(frame.binary_digest, offset)
        purl = source.purl(frame.binary_digest) if frame.binary_digest is not None else None
        purl = purl or frame.purl
        if purl is None and is_top:
            purl = top_purl
        module = hashing.module_identity(purl, frame.binary_digest, frame.library)
        if name is None:
            stand_in = hashing.unresolved_signature(frame.binary_digest, frame.binary_offset)
            resolved.append(ResolvedFrame(frame, identity, identity, stand_in, purl, module, False))
            continue
        signature = top_signature if is_top and top_signature else readable(name)
        resolved.append(ResolvedFrame(frame, identity, name, signature, purl, module, True))
    return resolved


def digests_to_resolve(frames: Sequence[Frame], top_symbol: str | None) -> set[str]:
    """The binaries whose symbol tables naming these frames needs."""
    last = len(frames) - 1
    return {f.binary_digest for i, f in enumerate(frames)
            if f.binary_digest is not None and f.binary_offset is not None
            and not (i == last and top_symbol)}
