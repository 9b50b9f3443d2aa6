"""Unwind rules from real binaries' CFI (agent/unwind.py build_rules), the bias that maps a
process's addresses onto them, and the agent's cut of walks made without a mapping table.

The assembly below states its CFI with directives, so each expected row is known exactly;
the assembler and linker (not this code) turn them into .eh_frame."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from runtime_signals.agent.procmaps import Mapping, ResolvedAddress
from runtime_signals.agent.unwind import (
    RulesCache,
    Segment,
    UnwindRules,
    build_rules,
    checked_frames,
    mapping_bias,
)
from runtime_signals.agent.wire import (
    FLAG_UNCHECKED,
    STACK_END_COMPLETE,
    STACK_END_DEPTH_LIMIT,
    STACK_END_NOT_EXECUTABLE,
    UNWIND_CFA_END,
    UNWIND_CFA_NONE,
    UNWIND_CFA_RBP,
    UNWIND_CFA_RSP,
    UNWIND_CFA_UNSUPPORTED,
    UNWIND_RBP_AT_CFA,
    UNWIND_RBP_SAME,
    UnwindRow,
)

ASSEMBLY = r"""
    .text
    .globl framed
framed:                         /* 0x1000: a frame-pointer prologue and epilogue */
    .cfi_startproc
    push %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    mov %rsp, %rbp
    .cfi_def_cfa_register %rbp
    nop
    pop %rbp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_endproc
    .globl no_cfi
no_cfi:                         /* 0x1007: no FDE */
    nop
    ret
    .globl outermost
outermost:                      /* 0x1009: return address undefined, like _start */
    .cfi_startproc
    .cfi_undefined %rip
    nop
    ret
    .cfi_endproc
    .globl by_expression
by_expression:                  /* 0x100b: a CFA the walker cannot express */
    .cfi_startproc
    sub $8, %rsp
    .cfi_escape 0x0f, 0x02, 0x77, 0x10   /* DW_CFA_def_cfa_expression: DW_OP_breg7 16 */
    nop
    add $8, %rsp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_endproc
"""


def _rows(rules: UnwindRules) -> list[tuple[int, int, int, int, int]]:
    rows = (UnwindRow * rules.row_count).from_buffer_copy(rules.rows)
    return [(r.address, r.cfa_register, r.cfa_offset, r.rbp_rule, r.rbp_offset) for r in rows]


def _gcc(tmp_path: Path) -> str:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (scripts/bootstrap.sh installs gcc)")
    return compiler


def test_each_cfi_row_becomes_the_rule_the_walker_needs(tmp_path: Path) -> None:
    source = tmp_path / "rules.s"
    source.write_text(ASSEMBLY)
    library = tmp_path / "rules.so"
    subprocess.run([_gcc(tmp_path), "-shared", "-nostdlib", "-Wl,-z,noseparate-code", "-o", str(library),
                    str(source)], check=True)
    symbols = subprocess.run(["nm", str(library)], check=True, capture_output=True, text=True).stdout
    framed = int(next(line.split()[0] for line in symbols.splitlines() if line.endswith(" framed")), 16)

    rules = build_rules(str(library))

    assert rules.sources == (".eh_frame",) and not rules.error
    assert _rows(rules) == [
        (framed + 0x0, UNWIND_CFA_RSP, 8, UNWIND_RBP_SAME, 0),        # entry: return address at rsp
        (framed + 0x1, UNWIND_CFA_RSP, 16, UNWIND_RBP_AT_CFA, -16),   # after push %rbp
        (framed + 0x4, UNWIND_CFA_RBP, 16, UNWIND_RBP_AT_CFA, -16),   # after mov %rsp, %rbp
        (framed + 0x6, UNWIND_CFA_RSP, 8, UNWIND_RBP_AT_CFA, -16),    # after pop %rbp
        (framed + 0x7, UNWIND_CFA_NONE, 0, UNWIND_RBP_SAME, 0),       # no_cfi: frame pointers
        (framed + 0x9, UNWIND_CFA_END, 0, UNWIND_RBP_SAME, 0),        # outermost: the walk ends
        (framed + 0xB, UNWIND_CFA_RSP, 8, UNWIND_RBP_SAME, 0),
        (framed + 0xF, UNWIND_CFA_UNSUPPORTED, 0, UNWIND_RBP_SAME, 0),
        (framed + 0x14, UNWIND_CFA_RSP, 8, UNWIND_RBP_SAME, 0),
        (framed + 0x15, UNWIND_CFA_NONE, 0, UNWIND_RBP_SAME, 0),      # past the last FDE
    ]
    assert rules.unsupported_rows == 1
    assert rules.row_bytes == 10 * 12


def test_debug_frame_serves_a_binary_without_eh_frame(tmp_path: Path) -> None:
    source = tmp_path / "plain.c"
    source.write_text("__attribute__((noinline)) int twice(int x) { return 2 * x; }\n"
                      "int main(int argc, char **argv) { return twice(argc); }\n")
    binary = tmp_path / "plain"
    subprocess.run([_gcc(tmp_path), "-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
                    "-o", str(binary), str(source)], check=True)
    sections = subprocess.run(["readelf", "-S", str(binary)], check=True, capture_output=True, text=True).stdout
    assert ".debug_frame" in sections

    rules = build_rules(str(binary))

    assert ".debug_frame" in rules.sources
    assert any(row[1] == UNWIND_CFA_RSP for row in _rows(rules))


def test_a_file_without_cfi_has_no_rules_and_says_why(tmp_path: Path) -> None:
    text = tmp_path / "not-elf"
    text.write_text("#!/bin/sh\n")
    rules = build_rules(str(text))
    assert rules.row_count == 0 and str(text) in rules.error


def test_the_bias_maps_a_mapping_onto_the_elf_addresses() -> None:
    # A text segment at file offset 0x1000, linked at 0x401000 (a non-PIE executable), mapped
    # at 0x401000; and a PIE library whose segment sits at 0x2000 in the file and 0x3000 in
    # its address space, mapped at 0x7f0000001000.
    assert mapping_bias(Mapping(0x401000, 0x402000, 0x1000, "/app"), [Segment(0x1000, 0x401000, 0x800)]) == 0
    bias = mapping_bias(Mapping(0x7F0000001000, 0x7F0000002000, 0x2000, "/lib.so"), [Segment(0x2000, 0x3000, 0x900)])
    assert bias is not None and 0x7F0000001010 - bias == 0x3010
    assert mapping_bias(Mapping(0x1000, 0x2000, 0x9000, "/x"), [Segment(0x1000, 0x1000, 0x800)]) is None
    # lld packs segments off page boundaries (Rust's default linker): text at file offset
    # 0x13ea0, linked at 0x14ea0, mapped from file offset 0x13000 (its page) at base + 0x14000.
    base = 0x5555_5555_4000
    bias = mapping_bias(Mapping(base + 0x14000, base + 0x54000, 0x13000, "/rust"), [Segment(0x13EA0, 0x14EA0, 0x3F440)])
    assert bias is not None and base + 0x15240 - bias == 0x15240


def _frame(address: int, path: str | None) -> ResolvedAddress:
    return ResolvedAddress(address, path, "sha256:" + "0" * 64 if path else None, address if path else None)


def test_an_unchecked_walk_is_cut_at_its_first_word_outside_code() -> None:
    frames = [_frame(0x1000, "/lib.so"), _frame(0x2000, "/app"), _frame(0x2DB3102D0FB7B83D, None),
              _frame(0x3000, "/app")]
    kept, reason = checked_frames(frames, FLAG_UNCHECKED, STACK_END_COMPLETE)
    assert kept == frames[:2] and reason == "no_unwind_info"
    # The same words from a walk with a mapping table are the kernel's to judge (it never
    # emits a frame outside code); the reason is the kernel's.
    assert checked_frames(frames[:2], 0, STACK_END_COMPLETE) == (frames[:2], None)
    assert checked_frames(frames[:2], 0, STACK_END_DEPTH_LIMIT) == (frames[:2], "depth_limit")
    assert checked_frames(frames[:2], 0, STACK_END_NOT_EXECUTABLE) == (frames[:2], "not_executable")


def test_the_rules_cache_gives_back_what_was_built_and_stays_within_its_bound(tmp_path: Path) -> None:
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    built = build_rules(libc)
    assert built.row_count > 1000, built.error
    cache = RulesCache(tmp_path / "cache", max_bytes=len(built.rows) * 3 // 2)
    assert cache.get("sha256:" + "a" * 64) is None
    cache.put("sha256:" + "a" * 64, built)
    assert cache.get("sha256:" + "a" * 64) == built
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    # A second binary's rules push the bound: the least recently used goes.
    cache.put("sha256:" + "b" * 64, built)
    assert cache.get("sha256:" + "a" * 64) is None and cache.get("sha256:" + "b" * 64) == built
    assert cache.size_bytes() <= len(built.rows) * 3 // 2
    assert cache.counts["evicted"] == 1 and cache.counts["hits"] == 2


def test_a_damaged_cached_file_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    built = build_rules("/usr/lib/x86_64-linux-gnu/libc.so.6")
    cache = RulesCache(tmp_path, max_bytes=1 << 30)
    digest = "sha256:" + "c" * 64
    cache.put(digest, built)
    path = tmp_path / f"{'c' * 64}.rules"
    path.write_bytes(path.read_bytes()[:-5])  # cut short
    assert cache.get(digest) is None and cache.counts["unreadable"] == 1
    assert cache.get("../../etc/passwd") is None  # a digest that is not one names no file


def test_the_block_index_bounds_every_search_to_the_row_the_whole_search_finds() -> None:
    """What the BPF walker does with the index (find_row in bpf/calltrace.bpf.c), against a
    search of every row: the same row for every address, in far fewer steps."""
    import random
    from bisect import bisect_right

    from runtime_signals.agent.unwind import block_index

    rng = random.Random(7)
    addresses = sorted({0x1000 + rng.randrange(0, 2_000_000) for _ in range(30_000)})
    shift, index = block_index(addresses)
    assert len(index) <= len(addresses) // 4 and index[0] == 0  # a quarter of the rows' memory at most
    widest = 0
    for address in [rng.randrange(0, 2_100_000) for _ in range(20_000)] + addresses[:50] + [0, addresses[-1]]:
        whole = bisect_right(addresses, address) - 1  # -1: no row covers it
        block = address >> shift
        if block + 1 < len(index):
            low, high = index[block], index[block + 1]
            widest = max(widest, high - low + 1)
            found = low + bisect_right(addresses[low:high + 1], address) - 1
            found = found if found >= low and addresses[found] <= address else -1
        else:
            found = whole
        assert found == whole, (hex(address), found, whole)
    assert widest <= 32  # at most 6 search steps instead of 15
    assert block_index(addresses[:10]) == (0, [])  # small tables are searched whole


def test_one_worker_builds_many_binaries_and_survives_a_bad_file(tmp_path: Path) -> None:
    """The kept child interpreter (RulesWorker): builds for several files, says why for a file
    that is no ELF, goes on; a worker killed between builds is started again."""
    import os
    import time

    from runtime_signals.agent.unwind import RulesWorker

    worker = RulesWorker()
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an ELF file")
    try:
        started = time.monotonic()
        results = []
        for path in ("/usr/lib/x86_64-linux-gnu/libz.so.1", str(junk), "/bin/true", "/usr/lib/x86_64-linux-gnu/libz.so.1"):
            fd = os.open(path, os.O_RDONLY)
            try:
                results.append(worker.build(fd, timeout_s=120))
            finally:
                os.close(fd)
        elapsed = time.monotonic() - started
        libz, bad, true, again = results
        assert libz.row_count > 100 and again.rows == libz.rows
        assert bad.row_count == 0 and bad.error and true.row_count > 0
        first = worker._process
        assert first is not None and first.poll() is None  # one child did all four
        first.kill()
        first.wait()
        fd = os.open("/bin/true", os.O_RDONLY)
        try:
            assert worker.build(fd, timeout_s=120).rows == true.rows  # a new child took over
        finally:
            os.close(fd)
        assert worker._process is not first
        print(f"4 builds in one worker: {elapsed:.2f} s")
    finally:
        worker.close()


def test_a_worker_started_ahead_builds_with_the_child_it_started() -> None:
    """start_worker (called for the urgent pool when the unwind tables are made): the child
    interpreter runs before the first build, which a held process waits for, and that
    build uses it."""
    import os
    import threading

    from runtime_signals.agent import unwind

    seen: dict[str, object] = {}

    def in_a_building_thread() -> None:
        unwind.start_worker()
        worker = unwind._thread_worker()
        seen["started"] = worker._process
        fd = os.open("/bin/true", os.O_RDONLY)
        try:
            seen["rules"] = unwind.build_rules_in_worker(fd, timeout_s=120)
        finally:
            os.close(fd)
        seen["built_by"] = worker._process
        worker.close()

    thread = threading.Thread(target=in_a_building_thread)
    thread.start()
    thread.join(180)
    rules = seen["rules"]
    assert isinstance(rules, unwind.UnwindRules) and rules.row_count > 0
    assert seen["started"] is not None and seen["built_by"] is seen["started"]
