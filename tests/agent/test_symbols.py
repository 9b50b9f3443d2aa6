"""Symbol tables: a big real one split under a real broker's message size limit and put back
together by the processor's store; separate debug files by build id and by debuglink;
demangled C++ and Rust names resolved to the mangled symbols a uprobe needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_signals.agent.publisher import ProducerSettings, Publisher
from runtime_signals.agent.selectors import SymbolIndex
from runtime_signals.agent.symbols_publisher import SymbolTablePublisher
from runtime_signals.agent.symtab import read_build_id, read_symbol_table
from runtime_signals.consumer.summaries import read_topic
from runtime_signals.processor.symbol_store import SymbolStore
from runtime_signals.schemas import codec
from tests.agent.programs import container_rootfs

# The broker's default max.message.bytes; librdkafka's own message.max.bytes is 1,000,000.
TOPIC_MAX_MESSAGE_BYTES = 1_048_588


def _libjvm() -> Path:
    java = Path(os.path.realpath(shutil.which("java") or "/usr/bin/java"))
    found = next(java.parent.parent.glob("lib/server/libjvm.so"), None)
    assert found is not None, f"no libjvm.so next to {java}: the broker's Java is required"
    return found


@pytest.mark.broker
def test_a_big_real_symbol_table_is_split_under_the_topics_limit_and_reassembled(
        kafka_bootstrap: str, unique_topic) -> None:  # type: ignore[no-untyped-def]
    libjvm = _libjvm()
    table = read_symbol_table(libjvm)
    assert table.source == ".symtab" and len(table.symbols) > 20_000  # ~3 MB of names
    topic = unique_topic(config={"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)})
    # No compression: the limits then apply to the records' real size. (The broker checks a
    # whole producer batch against max.message.bytes, so batch.size must stay under it too.)
    publisher = Publisher(ProducerSettings(bootstrap_servers=kafka_bootstrap, compression_type="none",
                                           batch_size_bytes=1_000_000))
    registry = codec.SchemaRegistry.default()
    digest = "sha256:" + "ab" * 32
    tables = SymbolTablePublisher(publisher, topic, registry)  # the agent's default chunk size
    tables.offer(digest, libjvm)
    tables.close(timeout_s=120)
    assert publisher.flush(60) == 0
    assert not publisher.failed_by_reason, publisher.failed_by_reason
    records = read_topic(kafka_bootstrap, topic, timeout_s=20)
    assert len(records) > 5, "a 3 MB table must take several records"
    store = SymbolStore()
    for key, value in records:
        assert value is not None and len(value) < TOPIC_MAX_MESSAGE_BYTES
        record = codec.decode(value, registry).record
        assert key == f"{digest}/{record['chunk_index']}".encode()
        assert record["chunk_count"] == len(records) and record["symbol_count"] == len(table.symbols)
        store.add(record)
    assert store.has(digest)
    for symbol in table.symbols[:: len(table.symbols) // 50]:
        assert store.lookup(digest, symbol.file_offset) is not None


DEBUG_PROGRAM = r"""
static __attribute__((noinline)) int helper_static(int x) { return x * 7; }
int main(int argc, char **argv) { return helper_static(argc); }
"""


def _split_debug(workdir: Path, build_id: bool) -> tuple[Path, Path]:
    """A program stripped of its .symtab, and its separate debug file (objcopy, as
    Debian's dh_strip does)."""
    source = workdir / "prog.c"
    source.write_text(DEBUG_PROGRAM)
    program = workdir / "app" / "prog"
    program.parent.mkdir(parents=True)
    flags = [] if build_id else ["-Wl,--build-id=none"]
    subprocess.run(["gcc", "-g", "-O1", "-o", str(program), str(source), *flags], check=True)
    debug = workdir / "prog.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(program), str(debug)], check=True)
    subprocess.run(["strip", "--strip-all", str(program)], check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={debug}", str(program)], check=True)
    return program, debug


def test_a_stripped_binary_gets_its_symbols_from_the_debug_file_named_by_its_build_id(tmp_path: Path) -> None:
    program, debug = _split_debug(tmp_path, build_id=True)
    assert "helper_static" not in {s.name for s in read_symbol_table(program).symbols}  # stripped
    build_id = read_build_id(program)
    assert build_id
    installed = tmp_path / "usr/lib/debug/.build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    installed.parent.mkdir(parents=True)
    shutil.move(debug, installed)
    table = read_symbol_table(program, debug_root=tmp_path)
    assert table.source == f"debug:{installed}"
    assert "helper_static" in {s.name for s in table.symbols}


def test_a_binary_without_build_id_finds_its_debug_file_by_debuglink_and_crc(tmp_path: Path) -> None:
    program, debug = _split_debug(tmp_path, build_id=False)
    assert read_build_id(program) is None
    (program.parent / ".debug").mkdir()
    shutil.move(debug, program.parent / ".debug" / "prog.debug")
    table = read_symbol_table(program, debug_root=tmp_path)
    assert table.source == f"debug:{program.parent / '.debug' / 'prog.debug'}"
    assert "helper_static" in {s.name for s in table.symbols}
    # A debug file of another build (CRC differs) is never used.
    (program.parent / ".debug" / "prog.debug").write_bytes(b"not the debug file")
    assert read_symbol_table(program, debug_root=tmp_path).source in (".dynsym", None)


def test_demangled_cxx_names_and_globs_resolve_to_mangled_symbols(tmp_path: Path) -> None:
    _, program = container_rootfs(tmp_path)
    index = SymbolIndex.of_file(program)
    assert index.resolve("imgproc::Parser::parse") == ["_ZN7imgproc6Parser5parseEPKc"]
    assert index.resolve("imgproc::Parser::parse(char const*)") == ["_ZN7imgproc6Parser5parseEPKc"]
    assert index.resolve("imgproc::*") == ["_ZN7imgproc6Parser5parseEPKc"]
    assert index.resolve("_ZN7imgproc6Parser5parseEPKc") == ["_ZN7imgproc6Parser5parseEPKc"]
    assert "_Z14handle_requestRN7imgproc6ParserEi" in index.resolve("handle_*")
    assert index.resolve("imgproc::Parser::render") == []


RUST_PROGRAM = """
pub mod parser {
    #[inline(never)]
    pub fn parse_header(x: &[u8]) -> usize { x.len() * 3 }
}
fn main() { println!("{}", parser::parse_header(&vec![0u8; std::env::args().count()])); }
"""


# rustc's default is still the legacy mangling; v0 is chosen with a stable flag.
@pytest.mark.parametrize("flags, prefix", [([], "_ZN4demo6parser12parse_header17h"),
                                           (["-C", "symbol-mangling-version=v0"], "_R")], ids=["legacy", "v0"])
def test_demangled_rust_names_resolve_to_mangled_symbols(tmp_path: Path, flags: list[str], prefix: str) -> None:
    rustc = shutil.which("rustc") or str(Path.home() / ".cargo/bin/rustc")
    if not Path(rustc).exists():
        pytest.skip("no Rust toolchain on this machine")
    (tmp_path / "demo.rs").write_text(RUST_PROGRAM)
    subprocess.run([rustc, "-C", "opt-level=0", *flags,
                    "-o", str(tmp_path / "demo"), str(tmp_path / "demo.rs")], check=True, capture_output=True)
    mangled = SymbolIndex.of_file(tmp_path / "demo").resolve("demo::parser::parse_header")
    assert len(mangled) == 1 and mangled[0].startswith(prefix), mangled


RUST_GENERIC = """
pub struct Stack<T> { items: Vec<T> }
impl<T: Clone> Stack<T> {
    #[inline(never)]
    pub fn push_many<I: Iterator<Item = T>>(&mut self, items: I) { for i in items { self.items.push(i); } }
}
fn main() {
    let mut s = Stack { items: Vec::new() };
    s.push_many(std::env::args().map(|a| a.len()));
    let mut t = Stack { items: Vec::new() };
    t.push_many(std::env::args());
    println!("{} {}", s.items.len(), t.items.len());
}
"""


@pytest.mark.parametrize("flags", [[], ["-C", "symbol-mangling-version=v0"]], ids=["legacy", "v0"])
def test_a_rust_path_without_generics_names_every_instance_of_a_generic_method(
        tmp_path: Path, flags: list[str]) -> None:
    """RustSec names `crate::Type::method`; the binary has `crate::Type<T>::method` (legacy) or
    `<crate::Type<usize>>::method::<I>` (v0), once per instantiation."""
    rustc = shutil.which("rustc") or str(Path.home() / ".cargo/bin/rustc")
    if not Path(rustc).exists():
        pytest.skip("no Rust toolchain on this machine")
    (tmp_path / "demo.rs").write_text(RUST_GENERIC)
    subprocess.run([rustc, "-C", "opt-level=0", *flags, "-o", str(tmp_path / "demo"), str(tmp_path / "demo.rs")],
                   check=True, capture_output=True)
    index = SymbolIndex.of_file(tmp_path / "demo")
    assert len(index.resolve("demo::Stack::push_many")) == 2  # Stack<usize> and Stack<String>
    assert index.resolve("demo::Stack::pop") == []
