"""Text output of summaries and answers: demangled names, and distinct paths never printed alike."""

from __future__ import annotations

from typing import Any

from runtime_signals.cli.answers import format_answer
from runtime_signals.consumer.display import PathFrames, path_labels, readable
from runtime_signals.consumer.models import Coverage, PathEvidence, Reachability, Target
from runtime_signals.consumer.summaries import format_table

PARSE = "_ZN7imgproc6Parser5parseEPKc"
HANDLE = "_Z14handle_requestRN7imgproc6ParserEi"
RUST = "_ZN7mycrate6decode4read17h0123456789abcdefE"
DIGEST = "sha256:" + "ab" * 32


def _path(count: int, offsets: list[int | None], signatures: list[str] | None = None) -> dict[str, Any]:
    symbols = ["main", HANDLE, PARSE]
    return {"symbols": symbols, "function_signatures": signatures, "binary_offsets": offsets,
            "binary_digests": [DIGEST] * 3, "observation_count": count}


def _summary(paths: list[dict[str, Any]]) -> dict[str, Any]:
    return {"container_id": "host:1", "started_at_us": 0, "stopped_at_us": 60_000_000, "total_events": 9,
            "call_paths": paths, "detected_runtimes": ["NATIVE"], "combined_path_hash": "h"}


def test_mangled_names_are_shown_demangled() -> None:
    assert readable(PARSE) == "imgproc::Parser::parse(char const*)"
    assert readable(RUST).startswith("mycrate::decode::read")
    assert readable("crc32") == "crc32"
    assert readable(DIGEST + "+0x1f") == "sha256:abababab…+0x1f"


def test_a_table_shows_demangled_names_and_tells_apart_two_call_sites() -> None:
    # Same functions, different call sites in handle_request: two paths, not one printed twice.
    table = format_table([_summary([_path(5, [0x1000, 0x1105, 0x1200]), _path(4, [0x1000, 0x1123, 0x1200])])])
    rows = [line for line in table.splitlines() if "→" in line and "calls" not in line]
    assert len(rows) == 2 and rows[0] != rows[1]
    assert "handle_request(imgproc::Parser&, int)@0x1105" in rows[0]
    assert "handle_request(imgproc::Parser&, int)@0x1123" in rows[1]
    # Frames that agree keep their plain name: the location is shown only where it tells apart.
    assert rows[0].split()[1] == "main" and rows[0].endswith("imgproc::Parser::parse(char const*)")


def test_paths_with_different_names_show_no_locations() -> None:
    labels = path_labels([PathFrames(["main", "a"], binary_offsets=[1, 2]), PathFrames(["main", "b"], binary_offsets=[1, 2])])
    assert labels == [["main", "a"], ["main", "b"]]


def test_paths_alike_in_names_and_offsets_differ_by_binary() -> None:
    other = "sha256:" + "cd" * 32
    labels = path_labels([PathFrames(["main", "f"], binary_offsets=[1, 2], binary_digests=[DIGEST, DIGEST]),
                          PathFrames(["main", "f"], binary_offsets=[1, 2], binary_digests=[DIGEST, other])])
    assert labels[0] != labels[1] and labels[0][0] == "main"


def test_a_reachable_answer_shows_demangled_names_and_call_sites() -> None:
    coverage = Coverage(("host:1",), 1, 0, 60_000_000, 9, 0, 0, (PARSE,))

    def evidence(count: int, offset: int) -> PathEvidence:
        return PathEvidence("host:1", ("main", HANDLE, PARSE), ("/app",) * 3, None, 2, None, None, None, count, 1, 2,
                            1, True, (), (DIGEST,) * 3, (0x1000, offset, 0x1200))

    answer = Reachability(Target(function="imgproc::Parser::parse"), True, 9, 1, 2,
                          (evidence(5, 0x1105), evidence(4, 0x1123)), coverage)
    text = format_answer(answer)
    assert "[imgproc::Parser::parse(char const*)]" in text
    assert "handle_request(imgproc::Parser&, int)@0x1105" in text and "@0x1123" in text
    assert "probed functions seen: imgproc::Parser::parse(char const*)" in text
    assert PARSE not in text
