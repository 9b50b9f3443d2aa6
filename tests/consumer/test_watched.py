"""How long a function was watched, from the agents' statistics (consumer/watched.py)."""

from __future__ import annotations

from typing import Any

from runtime_signals.consumer.watched import names_of, probe_symbol, watched

S = 1_000_000
PROBE = "/usr/lib/x86_64-linux-gnu/libz.so.1:deflate"


def report(at_s: float, detached_s: float | None, agent: str = "node-1/r1") -> dict[str, Any]:
    probes = {} if detached_s is None else {PROBE: int(detached_s * 1e9)}
    return {"agent_id": agent, "host": agent.split("/")[0], "reported_at_us": int(at_s * S), "detached_ns_by_probe": probes}


def test_time_detached_or_not_reported_is_not_watched() -> None:
    reports = [report(t, d) for t, d in ((0, 0), (10, 0), (20, 4), (30, 4), (40, 4))]
    assert watched("deflate", reports, 0, 40 * S).watched_us() == 36 * S
    # The span's ends: before the first report and after the last, nothing is known.
    assert watched("deflate", reports, -20 * S, 60 * S).watched_us() == 36 * S
    # An interval straddling the span's start keeps its unwatched time inside the span.
    assert watched("deflate", reports, 15 * S, 40 * S).watched_us() == 21 * S


def test_a_restart_and_a_probe_not_yet_attached_count_as_not_watched() -> None:
    reports = [report(0, None), report(10, 0), report(20, 0), report(30, 1), report(40, 2)]
    # 0..10: not attached yet; 10..20 watched; 20..30 and 30..40 less the second detached in each.
    assert watched("deflate", reports, 0, 40 * S).watched_us() == 28 * S
    later = [*reports[1:3], report(30, 0.5), report(40, 9)]
    assert watched("deflate", later, 0, 40 * S).watched_us() == 10 * S + 9_500_000 + 1_500_000
    restarted = [report(0, 0), report(10, 5), report(20, 1), report(30, 1)]  # the figure fell: a restart
    assert watched("deflate", restarted, 0, 30 * S).watched_us() == 5 * S + 10 * S


def test_watched_time_is_measured_on_the_agents_run_clock_when_reports_carry_it() -> None:
    # The wall clock was stepped 3 s forward between the second and third reports, and the
    # second report was published 0.2 s late; the agent's run clock saw 10 s pass each time.
    reports = [{**report(t, d), "run_ns": run_s * 1_000_000_000}
               for t, d, run_s in ((0, 0, 1), (10.2, 0, 11), (23, 4, 21), (33, 4, 31))]
    assert watched("deflate", reports, 0, 33 * S).watched_us() == 10 * S + 6 * S + 10 * S
    # Capped by the wall-clock span inside the asked span, the rest placed inside it.
    assert watched("deflate", reports, 0, 5 * S).watched_us() == 4_800_000  # 10 s watched in 10.2 s
    assert watched("deflate", reports, 28 * S, 33 * S).watched_us() == 5 * S
    # A run clock that went back is a restart: how long the agent was down is not known.
    restarted = [*reports[:2], {**reports[2], "run_ns": 2_000_000_000}, {**reports[3], "run_ns": 12_000_000_000}]
    assert watched("deflate", restarted, 0, 33 * S).watched_us() == 10 * S + 10 * S


def test_only_the_agents_asked_about_and_only_probes_on_the_function() -> None:
    reports = [report(t, 0, "node-1/r1") for t in (0, 10)] + [report(t, 0, "node-2/r1") for t in (0, 5)]
    assert watched("deflate", reports, 0, 10 * S, agents={"node-2/r1"}).watched_us() == 5 * S
    assert watched("deflate", reports, 0, 10 * S).watched_us() == 10 * S  # the longest of any agent
    none = watched("inflate", reports, 0, 10 * S)
    assert none.probes == () and none.reports == 4  # reports there were: it was not watched
    assert watched("inflate", reports, 100 * S, 200 * S).reports == 0  # none: nothing known


def test_probe_ids_name_their_function_as_users_do() -> None:
    assert probe_symbol("/usr/lib/libz.so.1:deflate") == "deflate"
    assert probe_symbol("/app/server:imgproc::Parser::parse") == "imgproc::Parser::parse"
    assert probe_symbol("python:json.decoder:JSONDecoder.decode") == "json.decoder.JSONDecoder.decode"
    assert "smallvec::SmallVec::insert_many" in names_of("_ZN8smallvec17SmallVec$LT$A$GT$11insert_many17ha65ffa6f41416157E")
