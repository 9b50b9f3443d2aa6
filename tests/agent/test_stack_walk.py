"""The caller of a probed function appears exactly once, whichever way the kernel unwinds a
uprobe at a function entry: against the real BPF program and the real agent, each known
call chain of tests/agent/targets/callers.c reaches the raw topic frame for frame.

On this kernel the chains cover both forms of bpf_get_stack's walk: a function starting
with `push %rbp` (newer kernels put the caller's return address in the walk themselves)
and one starting with any other instruction (every kernel leaves it out), each also
recursing from one call site, where the caller's return address repeats down the chain.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from runtime_signals.agent.probes import CallTracer, TracerSettings
from runtime_signals.agent.symtab import FunctionSymbol, read_symbol_table
from runtime_signals.devtools.demo import create_topics
from runtime_signals.schemas.topics import TopicNames
from tests.agent.agent_runs import CALL_EVENT, AgentProcess, decode_all, read_all
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

CALLS = 40
PUSH_RBP = b"\x55"
NOP = b"\x90"
ENDBR64 = b"\xf3\x0f\x1e\xfa"
# Outermost first, as the processor reads a path; each runs CALLS times.
EXPECTED = {
    ("main", "a", "b", "leaf_push"): CALLS,
    ("main", "a", "c", "leaf_nopush"): CALLS,
    **{("main",) + ("rec_push",) * depth: CALLS for depth in range(1, 5)},
    **{("main",) + ("rec_nop",) * depth: CALLS for depth in range(1, 5)},
}


def _first_bytes(binary: Path, symbol: FunctionSymbol, count: int) -> bytes:
    with open(binary, "rb") as handle:
        handle.seek(symbol.file_offset)
        return handle.read(count)


def _name_at(symbols: list[FunctionSymbol], offset: int) -> str:
    names = [s.name for s in symbols if s.file_offset <= offset < s.file_offset + s.size_bytes]
    return names[0] if names else hex(offset)


def _chain_in_binary(event: dict, binary: Path, symbols: list[FunctionSymbol]) -> tuple[str, ...]:
    """The names of the innermost frames that lie in binary, outermost first: from the probed
    function down to main (below it, libc's frames)."""
    chain = []
    for frame in reversed(event["stack_frames"]):  # innermost first
        if frame["library"] != str(binary):
            break
        chain.append(_name_at(symbols, frame["binary_offset"]))
    return tuple(reversed(chain))


def test_each_caller_appears_once_whatever_the_entry_instruction(kafka_bootstrap: str, callers: Path,
                                                                 tmp_path: Path) -> None:
    symbols = read_symbol_table(callers).symbols
    by_name = {s.name: s for s in symbols}
    # The premises, from the binary itself: which first instruction each probe sits on.
    assert _first_bytes(callers, by_name["leaf_push"], 1) == PUSH_RBP
    assert _first_bytes(callers, by_name["rec_push"], 1) == PUSH_RBP
    assert _first_bytes(callers, by_name["rec_nop"], 2) == NOP + PUSH_RBP
    first = _first_bytes(callers, by_name["leaf_nopush"], 4)
    assert first[:1] != PUSH_RBP and first != ENDBR64, first.hex()

    prefix = f"stackwalk-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    probes = [f"{callers}:{name}" for name in ("leaf_push", "leaf_nopush", "rec_push", "rec_nop")]
    with AgentProcess(kafka_bootstrap, prefix, probes, tmp_path / "agent.log", ["--no-budget"]) as agent:
        subprocess.run([str(callers), str(CALLS)], check=True, timeout=60)
        assert agent.stop() == 0, agent.log()[-4000:]

    events = decode_all(read_all(kafka_bootstrap, names.raw), CALL_EVENT)
    observed: Counter[tuple[str, ...]] = Counter()
    for event in events:
        observed[_chain_in_binary(event, callers, symbols)] += event["observation_count"]
    assert dict(observed) == EXPECTED


@pytest.mark.parametrize("max_frames", [2, 64, 127])
def test_the_kernel_verifies_the_walk_at_every_depth_the_settings_allow(max_frames: int) -> None:
    """The walk is verified once per frame it may take: the deepest setting (127 frames) must
    stay within the verifier's budget of a million instructions, with room to spare here
    (about 800,000 on this kernel with the stack window), or the agent cannot start."""
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    tracer = CallTracer(TracerSettings(max_frames=max_frames, ringbuf_pages=16))
    try:
        assert tracer.max_frames == max_frames
    finally:
        tracer.close()
