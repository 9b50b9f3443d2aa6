"""Demangled names of C++ and Rust symbols, so targets can name functions as people write them.

Three manglings are met in ELF symbol tables:
  C++ (Itanium ABI)  _ZN7imgproc6Parser5parseEPKc   -> imgproc::Parser::parse(char const*)
  Rust legacy        _ZN4main6parser5parse17h…E      -> main::parser::parse
  Rust v0            _RNvCs…_7mycrate5parse          -> mycrate::parse
All three go through LLVM's demanglers (the pydemumble package). The agent matches targets
against these names and the processor writes them as signatures, which enter node hashes
(HASHING.md): one module, so a name a target matches is the name a summary shows and
hashes. Rust's per-build hash and crate disambiguator are left out by the demangler, so a
node hash survives rebuilds of the same code; the demangler's version is pinned.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import pydemumble

# Itanium C++ (and Rust legacy, which borrows it), macOS-style extra underscore, Rust v0.
_MANGLED_PREFIXES = ("_Z", "__Z", "_R")
# LLVM's Itanium demangler recurses once per nesting level with no limit of its own: an
# 80 KB name of nested templates overflows the C stack and kills the process (SIGSEGV, no
# Python exception to catch). The deepest shapes tried (tests/hostile/test_worker_deaths.py:
# nested templates, pointers to functions, pack expansions) survive 16 KiB, also in a
# thread; names are demangled only up to a quarter of that. Longer names stay as they are
# (still correct, only mangled): real C++ names beyond 4 KiB are rare.
DEMANGLE_MAX_CHARS = 4096


@lru_cache(maxsize=65_536)
def demangle(name: str) -> str | None:
    """The demangled form of a C++ or Rust mangled name, or None for anything else
    (plain C names, and manglings the demangler cannot read)."""
    if not name.startswith(_MANGLED_PREFIXES) or len(name) > DEMANGLE_MAX_CHARS:
        return None
    try:
        text = pydemumble.demangle(name)
    except Exception:  # a native demangler failing on odd input must not stop a scan or a window
        return None
    return text if text and text != name else None


def readable(name: str) -> str:
    """The readable signature of a symbol: demangled when it is a C++ or Rust mangled name
    the demangler reads, else the name itself (C names, unreadable manglings)."""
    return demangle(name) or name


def demangle_all(names: Iterable[str]) -> dict[str, str]:
    """Demangled form of each mangled name in names (plain C names are left out)."""
    result: dict[str, str] = {}
    for name in names:
        text = demangle(name)
        if text is not None:
            result[name] = text
    return result


def without_generics(demangled: str) -> str:
    """A Rust (or C++) path as advisories write it, generic arguments and qualified-self
    forms dropped: 'smallvec::SmallVec<A>::insert_many' -> 'smallvec::SmallVec::insert_many',
    '<smallvec::SmallVec<[u8; 8]> as core::ops::Drop>::drop' -> 'smallvec::SmallVec::drop',
    'ns::f<int>' -> 'ns::f'. RustSec's `affects.functions` name functions so."""
    text = demangled.strip()
    if "operator" in text:  # C++ operator<, operator<<, operator->: angle brackets that are names
        return text
    if text.startswith("<"):
        depth = 0
        for index, char in enumerate(text):
            depth += (char == "<") - (char == ">")
            if depth == 0:
                inner, rest = text[1:index], text[index + 1:]
                self_type = _outside_generics(inner).partition(" as ")[0]
                text = self_type + rest
                break
    stripped = _outside_generics(text)
    return stripped.replace("::::", "::").removesuffix("::")


def _outside_generics(text: str) -> str:
    """text without its <...> groups (balanced), and without the '::' of a turbofish '::<...>'."""
    kept, depth = [], 0
    for char in text:
        if char == "<":
            depth += 1
        elif char == ">" and depth:
            depth -= 1
        elif depth == 0:
            kept.append(char)
    return "".join(kept)


def without_parameters(demangled: str) -> str:
    """'ns::f(int, char const*) const' -> 'ns::f'; 'ns::g<int>(int)' -> 'ns::g<int>'."""
    text = demangled.strip()
    for qualifier in (" const", " volatile", " &&", " &"):
        if text.endswith(qualifier):
            text = text[: -len(qualifier)]
    if not text.endswith(")"):
        return text
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        char = text[index]
        if char == ")":
            depth += 1
        elif char == "(":
            depth -= 1
            if depth == 0:
                # "(anonymous namespace)::f()" keeps its head: only strip a trailing list.
                return text[:index] if index > 0 else text
    return text
