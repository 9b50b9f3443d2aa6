"""Demangled names of C++ and Rust symbols, so targets can name functions as people write them.

Three manglings are met in ELF symbol tables:
  C++ (Itanium ABI)  _ZN7imgproc6Parser5parseEPKc   -> imgproc::Parser::parse(char const*)
  Rust legacy        _ZN4main6parser5parse17h…E      -> main::parser::parse  (Itanium-shaped, with
                     a hash component and $LT$-style escapes that C++ demanglers reject)
  Rust v0            _RNvCs…_7mycrate5parse          -> mycrate::parse
C++ goes through libstdc++'s own __cxa_demangle (present wherever C++ programs run, bcc
included); Rust legacy is decoded here; Rust v0 goes through binutils' c++filt when the
agent's image has it (otherwise those names can still be targeted by their mangled form).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import shutil
import subprocess
from typing import Iterable

_RUST_HASH = re.compile(r"^h[0-9a-f]{16}$")
_RUST_ESCAPES = {"SP": "@", "BP": "*", "RF": "&", "LT": "<", "GT": ">", "LP": "(", "RP": ")", "C": ","}
_V0_DISAMBIGUATOR = re.compile(r"\[[0-9a-f]+\]")


@functools.cache
def _cxa_demangle():  # type: ignore[no-untyped-def]
    path = ctypes.util.find_library("stdc++")
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        function = lib.__cxa_demangle
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_void_p
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t),
                         ctypes.POINTER(ctypes.c_int)]
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    return function, libc.free


def demangle_cxx(name: str) -> str | None:
    """The Itanium-ABI demangling of name, or None when it is not a C++ mangled name."""
    found = _cxa_demangle()
    if found is None or not name.startswith("_Z"):
        return None
    function, free = found
    status = ctypes.c_int()
    pointer = function(name.encode(), None, None, ctypes.byref(status))
    if not pointer:
        return None
    try:
        return ctypes.string_at(pointer).decode(errors="replace")
    finally:
        free(pointer)


def demangle_rust_legacy(name: str) -> str | None:
    """'_ZN4core3fmt5write17h0123456789abcdefE' -> 'core::fmt::write'; None unless the name
    has Rust's trailing hash component."""
    if not name.startswith("_ZN") or not name.endswith("E"):
        return None
    parts, position, body = [], 3, name[:-1]
    while position < len(body):
        match = re.match(r"\d+", body[position:])
        if not match:
            return None
        length = int(match.group())
        position += len(match.group())
        parts.append(body[position:position + length])
        position += length
    if len(parts) < 2 or not _RUST_HASH.match(parts[-1]):
        return None
    return "::".join(_unescape_rust(part) for part in parts[:-1])


def _unescape_rust(part: str) -> str:
    if part.startswith("_$"):
        part = part[1:]
    part = part.replace("..", "::")

    def escape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _RUST_ESCAPES:
            return _RUST_ESCAPES[code]
        if code.startswith("u"):
            try:
                return chr(int(code[1:], 16))
            except ValueError:
                return match.group(0)
        return match.group(0)

    return re.sub(r"\$([A-Za-z0-9]+)\$", escape, part)


def _demangle_v0(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not names or cxxfilt is None:
        return {}
    try:
        done = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    out = done.stdout.splitlines()
    return {name: _V0_DISAMBIGUATOR.sub("", text) for name, text in zip(names, out) if text != name}


def demangle_all(names: Iterable[str]) -> dict[str, str]:
    """Demangled form of each mangled name in names (plain C names are left out)."""
    result: dict[str, str] = {}
    v0 = []
    for name in names:
        if name.startswith("_R"):
            v0.append(name)
            continue
        text = demangle_rust_legacy(name) or demangle_cxx(name)
        if text is not None:
            result[name] = text
    result.update(_demangle_v0(v0))
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
