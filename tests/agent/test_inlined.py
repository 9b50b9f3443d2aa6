"""Inlined functions (issue 11 point 7) in a real `gcc -O2 -g` build: parse_header has no
out-of-line copy at all (static, inlined into both callers); crc_step keeps one (it is
global) that only a call through a pointer reaches, while its other calls are inlined.
The agent finds the inlined copies in DWARF and probes them: every call is counted, under
the function's name. Without DWARF, `agent --check` says the function has no out-of-line
calls it can see.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from runtime_signals.agent.inlined import inlined_copies
from runtime_signals.agent.symtab import read_symbol_table
from runtime_signals.devtools.demo import create_topics
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, AgentProcess, decode_all, read_all
from tests.bpf_support import bpf_unavailable_reason

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
static int parse_header(const char *p) {
    int n = 0;
    while (p[n] && p[n] != ':') n++;
    return n * 7 + p[0];
}
unsigned crc_step(unsigned crc, unsigned char byte) {
    crc ^= byte;
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
    return crc;
}
__attribute__((noinline)) int handle_upload(const char *p) { return parse_header(p) + 1; }
__attribute__((noinline)) int handle_preview(const char *p) { return parse_header(p) * 2; }
__attribute__((noinline)) unsigned mix(unsigned crc, int i) { return crc_step(crc, (unsigned char)i); }
unsigned (*volatile step_pointer)(unsigned, unsigned char) = crc_step;
/* argv: UPLOADS PREVIEWS MIXES POINTER_CALLS */
int main(int argc, char **argv) {
    long t = 0;
    unsigned crc = 0;
    for (int i = 0; i < atoi(argv[1]); i++) t += handle_upload(i % 2 ? "a:b" : "abc:d");
    for (int i = 0; i < atoi(argv[2]); i++) t += handle_preview(i % 2 ? "x:y" : "xyz:w");
    for (int i = 0; i < atoi(argv[3]); i++) crc = mix(crc, i);
    for (int i = 0; i < atoi(argv[4]); i++) crc = step_pointer(crc, (unsigned char)i);
    printf("%ld %u\n", t, crc);
    return 0;
}
"""
UPLOADS, PREVIEWS, MIXES, POINTER_CALLS = 7, 5, 9, 4


def _build(tmp_path: Path, name: str, *flags: str) -> Path:
    source = tmp_path / "inlined.c"
    source.write_text(PROGRAM)
    binary = tmp_path / name
    subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", *flags, "-o", str(binary), str(source)], check=True)
    return binary


def test_dwarf_gives_every_inlined_copy_of_a_function(tmp_path: Path) -> None:
    binary = _build(tmp_path, "inlined", "-g")
    names = {s.name for s in read_symbol_table(binary).symbols}
    assert "parse_header" not in names and "crc_step" in names  # as the build is meant to be
    report = inlined_copies(binary, {"parse_header", "crc_step"})
    assert report.dwarf_source == str(binary)
    by_function = {f: [c for c in report.copies if c.function == f] for f in ("parse_header", "crc_step")}
    assert len(by_function["parse_header"]) == 2  # handle_upload, handle_preview
    assert len(by_function["crc_step"]) >= 1      # mix
    handle = {s.name: s for s in read_symbol_table(binary).symbols}
    inside = [c for c in by_function["parse_header"]
              if any(handle[f].file_offset <= c.file_offset < handle[f].file_offset + handle[f].size_bytes
                     for f in ("handle_upload", "handle_preview"))]
    assert len(inside) == 2


def test_without_dwarf_check_says_there_are_no_out_of_line_calls_to_see(tmp_path: Path) -> None:
    binary = _build(tmp_path, "inlined-nodwarf")
    done = subprocess.run(signals_command("agent", "--check", "--probe", f"{binary}:parse_header"),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "symbol 'parse_header' not found in" in done.stderr and "no out-of-line calls we can see" in done.stderr
    with_dwarf = _build(tmp_path, "inlined-dwarf", "-g")
    done = subprocess.run(signals_command("agent", "--check", "--probe", f"{with_dwarf}:parse_header"),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 probe(s) would attach (2 at inlined copies)" in done.stdout


@pytest.mark.bpf
@pytest.mark.broker
def test_calls_of_inlined_copies_are_counted_exactly_under_the_functions_name(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    binary = _build(tmp_path, f"inlined{uuid.uuid4().hex[:6]}", "-g")
    prefix = f"inlined-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names, partitions=1)
    with AgentProcess(kafka_bootstrap, prefix, [f"{binary}:parse_header", f"{binary}:crc_step"],
                      tmp_path / "agent.log") as agent:
        run = subprocess.Popen([str(binary), str(UPLOADS), str(PREVIEWS), str(MIXES), str(POINTER_CALLS)],
                               stdout=subprocess.DEVNULL)
        assert run.wait(30) == 0
        assert agent.stop() == 0, agent.log()[-4000:]
        log = agent.log()
    events = [e for e in decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT) if e["pid"] == run.pid]
    calls = {symbol: sum(e["observation_count"] for e in events if e["symbol"] == symbol)
             for symbol in ("parse_header", "crc_step")}
    assert calls == {"parse_header": UPLOADS + PREVIEWS, "crc_step": MIXES + POINTER_CALLS}, log[-3000:]
    # The caller a copy was inlined into is a frame of its own, right below the function,
    # named from the binary's symbols as any caller is (looked up at offset - 1).
    symbols = read_symbol_table(binary).symbols
    by_caller: dict[str, int] = {}
    for event in (e for e in events if e["symbol"] == "parse_header"):
        top, caller = event["stack_frames"][-1], event["stack_frames"][-2]
        assert caller["binary_offset"] == top["binary_offset"] + 1, [f["binary_offset"] for f in event["stack_frames"]]
        name = next(s.name for s in symbols if s.file_offset <= caller["binary_offset"] - 1 < s.file_offset + s.size_bytes)
        by_caller[name] = by_caller.get(name, 0) + event["observation_count"]
    assert by_caller == {"handle_upload": UPLOADS, "handle_preview": PREVIEWS}, by_caller
