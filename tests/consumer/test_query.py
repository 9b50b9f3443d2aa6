"""runtime_signals.consumer.query on plain summaries: matching, evidence totals, coverage. No broker."""

from __future__ import annotations

import pytest

from runtime_signals.consumer import QueryError, Summary, Target, query
from runtime_signals.schemas import hashing
from tests.consumer import sample_summaries as sample
from tests.consumer.sample_summaries import LIBIMAGE, LIBSCALE, T0_US, WINDOW_US, XNET


@pytest.fixture
def summaries() -> list[Summary]:
    return [Summary.from_record(r) for r in sample.samples()]


def test_a_probed_function_is_reached_with_each_path_totalled_over_its_windows(summaries: list[Summary]) -> None:
    answer = query.reachability(Target(function="parse_image_header"), summaries)
    assert answer.reached and answer.observation_count == 7 + 5 + 2
    upload, preview = answer.paths
    assert (upload.symbols, upload.observation_count, upload.windows) == (sample.UPLOAD, 9, 2)
    assert (preview.symbols, preview.observation_count, preview.windows) == (sample.PREVIEW, 5, 1)
    assert upload.matched_frame == len(sample.UPLOAD) - 1 and upload.container_id == "web-1"
    assert upload.first_observed_at_us == T0_US + 1_000_000
    assert upload.last_observed_at_us == T0_US + WINDOW_US + 5_000_000 + 1000
    assert answer.first_observed_at_us == T0_US + 1_000_000
    assert answer.last_observed_at_us == upload.last_observed_at_us
    assert upload.node_hash == hashing.node_hash_v2(LIBIMAGE, "parse_image_header")


def test_a_caller_frame_is_reached_through_the_paths_that_hold_it(summaries: list[Summary]) -> None:
    answer = query.reachability(Target(function="decode_image"), summaries)
    assert answer.reached and answer.observation_count == 9
    (only,) = answer.paths
    assert only.symbols[only.matched_frame] == "decode_image" and only.matched_frame == 3


def test_a_never_reached_function_is_answered_with_what_was_observed(summaries: list[Summary]) -> None:
    answer = query.reachability(Target(function="png_read_chunk"), summaries)
    assert not answer.reached and answer.paths == () and answer.observation_count == 0
    assert answer.first_observed_at_us is None
    coverage = answer.coverage
    assert coverage.containers == ("web-1", "worker-2") and coverage.windows == 4
    assert (coverage.first_window_start_us, coverage.last_window_end_us) == (T0_US, T0_US + 2 * WINDOW_US)
    assert (coverage.total_events, coverage.dropped_events, coverage.late_events) == (20, 3, 1)
    assert coverage.probed_functions == ("golang.org/x/net/html.Parse", "parse_image_header", "scale_rows")


def test_a_node_hash_matches_its_frame_in_any_case(summaries: list[Summary]) -> None:
    wanted = hashing.node_hash_v2(LIBSCALE, "scale_rows")
    answer = query.reachability(Target(node_hash=wanted.upper().replace("SHA256", "sha256")), summaries)
    assert answer.reached and [p.symbols for p in answer.paths] == [sample.RESIZE]
    assert not query.reachability(Target(node_hash=hashing.node_hash_v2(LIBIMAGE, "scale_rows")), summaries).reached


@pytest.mark.parametrize(("purl", "reached_calls"), [
    ("pkg:deb/debian/libimage", 14),                  # any version
    ("pkg:deb/debian/libimage@1.2.3", 14),
    ("pkg:deb/debian/libimage@1.2.4", 0),             # another version was running
    ("pkg:deb/debian/libimage?arch=amd64", 14),       # qualifiers given must match
    ("pkg:deb/debian/libimage?arch=arm64", 0),
    ("pkg:deb/ubuntu/libimage", 0),
])
def test_a_package_is_reached_when_its_functions_were_probed_and_called(
        summaries: list[Summary], purl: str, reached_calls: int) -> None:
    answer = query.reachability(Target(purl=purl), summaries)
    assert answer.observation_count == reached_calls and answer.reached == bool(reached_calls)


def test_a_function_in_a_package_needs_the_package_to_match(summaries: list[Summary]) -> None:
    assert query.reachability(Target(function="parse_image_header", purl="pkg:deb/debian/libimage"), summaries).reached
    other = query.reachability(Target(function="parse_image_header", purl="pkg:deb/debian/libother"), summaries)
    assert not other.reached


def test_a_caller_frame_matched_by_name_says_its_package_is_unconfirmed(summaries: list[Summary]) -> None:
    answer = query.reachability(Target(function="decode_image", purl="pkg:deb/debian/libimage"), summaries)
    assert answer.reached and [p.purl_verified for p in answer.paths] == [False]


def test_signatures_match_by_name_with_parameters_or_rust_hash() -> None:
    record = sample.summary_record("c", 0, [sample.path_record("c", 0, ("main", "ns::parse"), 1, None)])
    record["call_paths"][0]["function_signatures"] = ["main", "ns::parse(char const*, unsigned long)"]
    rust = sample.summary_record("r", 0, [sample.path_record("r", 0, ("main", "regex::compile::h0123456789abcdef"), 3, None)])
    found = [Summary.from_record(record), Summary.from_record(rust)]
    assert query.reachability(Target(function="ns::parse"), found).observation_count == 1
    assert query.reachability(Target(function="regex::compile"), found).observation_count == 3
    assert not query.reachability(Target(function="ns::par"), found).reached


def test_time_bounds_select_overlapping_windows(summaries: list[Summary]) -> None:
    later = query.select(summaries, since_us=T0_US + WINDOW_US)
    assert {(s.container_id, s.started_at_us) for s in later} == {("web-1", T0_US + WINDOW_US),
                                                                  ("worker-2", T0_US + WINDOW_US)}
    assert query.select(summaries, container="web-1", until_us=T0_US + 1) == [summaries[0]]
    with pytest.raises(QueryError, match="until"):
        query.select(summaries, since_us=T0_US, until_us=T0_US)


def test_latest_state_is_the_union_of_a_containers_windows(summaries: list[Summary]) -> None:
    state = query.container_state("web-1", summaries)
    assert state is not None
    assert (state.windows, state.total_events, state.first_window_start_us, state.last_window_end_us) == (
        2, 14, T0_US, T0_US + 2 * WINDOW_US)
    assert [(p.symbols, p.observation_count, p.windows) for p in state.paths] == [
        (sample.UPLOAD, 9, 2), (sample.PREVIEW, 5, 1)]
    assert state.probed_functions == ("parse_image_header",)
    assert query.container_state("nobody", summaries) is None
    from_state = query.reachability_in_state(Target(function="handle_preview"), state)
    assert from_state.reached and from_state.observation_count == 5


def test_malformed_questions_are_refused() -> None:
    with pytest.raises(QueryError, match="function, a node hash or a PURL"):
        query.Matcher(Target())
    with pytest.raises(QueryError, match="not a package URL"):
        query.Matcher(Target(purl="libimage"))


def test_go_symbols_match_with_their_package(summaries: list[Summary]) -> None:
    answer = query.reachability(Target(function="golang.org/x/net/html.Parse", purl="pkg:golang/golang.org/x/net"),
                                summaries)
    assert answer.reached and answer.paths[0].purl == XNET and answer.observation_count == 2
