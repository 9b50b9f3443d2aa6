"""Demangled names of C++ and Rust symbols, so targets can name functions as people write them.

Three manglings are met in ELF symbol tables:
  C++ (Itanium ABI)  _ZN7imgproc6Parser5parseEPKc   -> imgproc::Parser::parse(char const*)
  Rust legacy        _ZN4main6parser5parse17h…E      -> main::parser::parse
  Rust v0            _RNvCs…_7mycrate5parse          -> mycrate::parse
All three go through LLVM's demanglers (the pydemumble package), the same ones the
processor uses for signatures, so a name a target matches is the name a summary shows.
Rust's per-build hash and crate disambiguator are left out by the demangler.
"""

from __future__ import annotations

from typing import Iterable

import pydemumble  # type: ignore[import-untyped]  # ships no type information

_MANGLED_PREFIXES = ("_Z", "_R")


def demangle(name: str) -> str | None:
    """The demangled form of a C++ or Rust mangled name, or None for anything else
    (plain C names, and manglings the demangler cannot read)."""
    if not name.startswith(_MANGLED_PREFIXES):
        return None
    try:
        text = pydemumble.demangle(name)
    except Exception:  # a native demangler failing on odd input must not stop a scan
        return None
    return text if text and text != name else None


def demangle_all(names: Iterable[str]) -> dict[str, str]:
    """Demangled form of each mangled name in names (plain C names are left out)."""
    result: dict[str, str] = {}
    for name in names:
        text = demangle(name)
        if text is not None:
            result[name] = text
    return result


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
