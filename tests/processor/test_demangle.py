"""Demangling real symbols: a C++ binary built with g++, a Rust one built with rustc in
both of its manglings; the names come from the binaries' own .symtab."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.processor.symbolize import Frame, resolve_frames
from runtime_signals.schemas import hashing
from runtime_signals.schemas.demangle import readable as demangle

CPP = r"""
#include <string>
#include <vector>
namespace image {
struct Parser {
    int decode(const std::vector<unsigned char>& bytes, std::string& error);
};
__attribute__((noinline)) int Parser::decode(const std::vector<unsigned char>& bytes, std::string& error) {
    if (bytes.empty()) { error = "empty"; return -1; }
    return bytes[0];
}
template <typename T> __attribute__((noinline)) T header_size(T value) { return value * 2; }
}
int main(int argc, char**) {
    std::vector<unsigned char> bytes(argc, 7);
    std::string error;
    image::Parser parser;
    return parser.decode(bytes, error) + image::header_size<long>(argc) > 100;
}
"""

RUST = """
pub mod shapes {
    pub struct Img;
    impl Img {
        #[inline(never)]
        pub fn parse_header(&self, x: u32) -> u32 { x.wrapping_mul(3) }
    }
}
fn main() {
    let img = shapes::Img;
    std::process::exit(img.parse_header(std::env::args().count() as u32) as i32 & 1);
}
"""


def _functions(binary: Path) -> dict[str, tuple[int, int]]:
    """Function symbols of the binary's .symtab: name -> (value, size)."""
    with open(binary, "rb") as handle:
        symtab = ELFFile(handle).get_section_by_name(".symtab")
        return {s.name: (s["st_value"], s["st_size"]) for s in symtab.iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_size"]}


def _only(functions: dict[str, tuple[int, int]], fragment: str) -> str:
    [name] = [n for n in functions if fragment in n]
    return name


@pytest.fixture(scope="module")
def cpp_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: cannot build the C++ test binary")
    work = tmp_path_factory.mktemp("cpp")
    (work / "parser.cpp").write_text(CPP)
    subprocess.run(["g++", "-O1", "-g0", "-o", str(work / "parser"), str(work / "parser.cpp")], check=True)
    return work / "parser"


def test_itanium_cpp_names_from_a_real_binary_demangle_to_signatures(cpp_binary: Path) -> None:
    functions = _functions(cpp_binary)
    decode = _only(functions, "Parser6decode")
    template = _only(functions, "header_size")
    assert decode.startswith("_ZN5image6Parser6decode")
    assert demangle(decode) == ("image::Parser::decode(std::vector<unsigned char, std::allocator<unsigned char>> "
                                "const&, std::__cxx11::basic_string<char, std::char_traits<char>, "
                                "std::allocator<char>>&)")
    assert demangle(template) == "long image::header_size<long>(long)"
    assert demangle("main") == "main"


def test_a_caller_frame_in_a_real_binary_is_named_by_its_demangled_signature(cpp_binary: Path) -> None:
    functions = _functions(cpp_binary)
    decode = _only(functions, "Parser6decode")
    start, size = functions[decode]
    digest = "sha256:" + "12" * 32
    store = SymbolStore()
    store.add({"binary_digest": digest, "chunk_index": 0, "chunk_count": 1, "symbol_count": len(functions),
               "symbols": [{"file_offset": v, "size_bytes": s, "name": n} for n, (v, s) in functions.items()]})
    # A return address just past a call at the very end of decode still names decode.
    caller = Frame(0x5500_0000 + start + size, digest, start + size, "/app/parser")
    top = Frame(0x5500_0000, digest, functions["main"][0], "/app/parser")
    frames = [caller, top]
    named = resolve_frames(frames, [f.identity for f in frames], "main", None, None, store)
    assert [(f.symbol, f.resolved) for f in named] == [(decode, True), ("main", True)]
    assert named[0].signature.startswith("image::Parser::decode(")
    assert hashing.node_hash(None, named[0].signature) == hashing.node_hash(None, demangle(decode))


@pytest.mark.parametrize("mangling, expected", [
    ("legacy", "m::shapes::Img::parse_header"),
    ("v0", "<m::shapes::Img>::parse_header"),
])
def test_rust_names_from_a_real_binary_demangle_without_build_hashes(tmp_path: Path, mangling: str,
                                                                     expected: str) -> None:
    if shutil.which("rustc") is None:
        pytest.skip("rustc is not installed: cannot build the Rust test binary")
    (tmp_path / "m.rs").write_text(RUST)
    # Legacy is rustc's default (asking for it by name needs a nightly flag).
    flags = ["-C", "symbol-mangling-version=v0"] if mangling == "v0" else []
    subprocess.run(["rustc", "-C", "opt-level=1", *flags, "-o", str(tmp_path / "m"), str(tmp_path / "m.rs")],
                   check=True, cwd=tmp_path)
    name = _only(_functions(tmp_path / "m"), "parse_header")
    assert name.startswith("_ZN" if mangling == "legacy" else "_R")
    # The legacy hash (17h…E) and the v0 crate disambiguator change with every build:
    # neither may reach the signature, which feeds node hashes.
    assert demangle(name) == expected
