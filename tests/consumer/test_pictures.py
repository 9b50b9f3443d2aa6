"""Pure parts of the analyst's view, without a broker: pictures of call paths (folded,
speedscope, SVG), the report's rows, prefixes, container prefixes, "did you mean"."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from runtime_signals.cli.answers import did_you_mean, format_answer
from runtime_signals.consumer import query
from runtime_signals.consumer.errors import QueryError
from runtime_signals.consumer.models import Summary, Target
from runtime_signals.evidence import flamegraph, report
from runtime_signals.schemas.topics import TopicNames, normalize_prefix
from tests.consumer import sample_summaries as sample
from tests.consumer.sample_summaries import LIBIMAGE

SVG = "{http://www.w3.org/2000/svg}"


def summaries() -> list[Summary]:
    return [Summary.from_record(r) for r in sample.samples()]


def test_prefixes_are_normalised_once_and_for_every_part() -> None:
    assert normalize_prefix("ux.svc") == normalize_prefix("ux.svc.") == "ux.svc."
    assert normalize_prefix("") == "" and normalize_prefix("  ") == ""
    assert TopicNames().with_prefix("ux.svc").raw == "ux.svc.signals.raw.v1"


def test_a_container_prefix_names_one_container_or_says_which() -> None:
    ids = {"host:3d1219c7c4c5", "web-1", "worker-2"}
    assert query.resolve_container("host:3d12", ids) == "host:3d1219c7c4c5"
    assert query.resolve_container("web-1", ids) == "web-1"
    assert query.resolve_container("nobody", ids) == "nobody"
    with pytest.raises(QueryError, match="prefix of several containers: web-1, worker-2"):
        query.resolve_container("w", ids)


def test_did_you_mean_finds_typos_and_partial_names() -> None:
    observed = summaries()
    assert did_you_mean("parse_image_headr", observed) == ["parse_image_header"]
    assert "decode_image" in did_you_mean("DECODE_IMAGE", observed)
    assert did_you_mean("png_read_chunk", observed) == []


def test_folded_stacks_count_every_call_once_and_are_sorted() -> None:
    stacks = flamegraph.stacks_of(summaries())
    text = flamegraph.folded(stacks)
    lines = text.splitlines()
    assert text == flamegraph.folded(dict(reversed(list(stacks.items()))))  # same bytes whatever the order
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 7 + 5 + 2 + 4 + 2
    assert "_start;main;handle_upload;decode_image;parse_image_header 9" in lines  # two windows, one stack
    only = flamegraph.stacks_of(summaries(), Target(function="scale_rows"))
    assert flamegraph.folded(only) == "main;resize;scale_rows 4\n"


def test_speedscope_profile_weights_are_the_calls() -> None:
    document = flamegraph.speedscope(flamegraph.stacks_of(summaries()), "t")
    assert document["$schema"] == flamegraph.SPEEDSCOPE_SCHEMA
    (profile,) = document["profiles"]
    frames = [f["name"] for f in document["shared"]["frames"]]
    assert len(frames) == len(set(frames))
    assert sum(profile["weights"]) == profile["endValue"] == 20
    assert all(0 <= i < len(frames) for sample_ in profile["samples"] for i in sample_)
    json.dumps(document)  # plain JSON


def test_the_svg_is_well_formed_deterministic_and_frames_are_as_wide_as_their_calls() -> None:
    stacks = flamegraph.stacks_of(summaries())
    picture = flamegraph.svg(stacks, "title <&>")
    assert picture == flamegraph.svg(dict(reversed(list(stacks.items()))), "title <&>")  # order-independent
    root = ET.fromstring(picture)
    widths: dict[str, float] = {}
    for group in root.iter(f"{SVG}g"):
        name = group.find(f"{SVG}title").text.split(" (")[0]  # type: ignore[union-attr]
        widths[name] = widths.get(name, 0) + float(group.find(f"{SVG}rect").get("width"))  # type: ignore[union-attr,arg-type]
    total = widths["all calls"]
    assert widths["parse_image_header"] == pytest.approx(total * 14 / 20, abs=2)  # two frames: 9 + 5 calls
    assert widths["scale_rows"] == pytest.approx(total * 4 / 20, abs=1)
    empty = ET.fromstring(flamegraph.svg({}, "nothing"))
    assert "no call path observed" in ET.tostring(empty, encoding="unicode")


def test_rows_fold_stacks_with_the_same_names_and_format_answer_limits() -> None:
    twin = dict(sample.path_record("web-1", 0, sample.UPLOAD, 3, LIBIMAGE), callstack_hash="sha256:" + "ab" * 32)
    extra = Summary.from_record(sample.summary_record("web-1", 0, [twin]))
    answer = query.reachability(Target(function="decode_image"), [*summaries(), extra])
    assert len(answer.paths) == 2  # the library keeps the two stacks apart
    (row,) = report.rows(answer.paths)
    assert (row.calls, row.stacks) == (12, 2)
    text = format_answer(query.reachability(Target(function="parse_image_header"), summaries()), limit=1)
    assert "… 1 more path(s), 5 calls: --limit 0 shows them all, --json gives every field" in text
