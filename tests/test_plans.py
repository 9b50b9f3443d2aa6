"""Probe plans, pure parts: advisories + inventory -> ProbePlan, version ranges, the agent's
refusal of malformed plans, and the inventory fold of module maps. The live loop (agent,
broker, Go program, libz) is tests/agent/test_plans_live.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime_signals.agent.plans import exact, plan_problems
from runtime_signals.consumer.inventory import InventoryEntry, entries, select
from runtime_signals.evidence.plan import build_plan, load_advisories
from runtime_signals.evidence.versions import is_affected
from runtime_signals.schemas import codec

ADVISORIES = Path(__file__).resolve().parent / "data" / "advisories"
ZLIB = "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12"
GO_APP = "pkg:golang/example.com/acceptlang"


def _entry(purl: str, path: str, container: str = "host:abc", runtime: str = "NATIVE") -> InventoryEntry:
    from runtime_signals.consumer.inventory import package_of

    package, version = package_of(purl)
    return InventoryEntry(purl, package, version, "node-1", container, path, "sha256:00", runtime, 1, 1)


def _plan(inventory: list[InventoryEntry]) -> dict[str, Any]:
    return build_plan("t1", load_advisories([ADVISORIES]), inventory, 1_700_000_000_000_000)


def test_a_plan_names_go_symbols_c_functions_and_what_it_cannot_watch() -> None:
    inventory = [_entry(ZLIB, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"),
                 _entry(GO_APP, "/app/acceptlang", "c0ffee00112233", "GO")]
    plan = _plan(inventory)
    by_vuln = {t["vulnerability"]: t for t in plan["targets"]}
    go = by_vuln["GO-2022-1059"]
    assert go["binary"] == "/app/acceptlang" and go["language"] == "go" and go["containers"] == []
    assert "golang.org/x/text/language.ParseAcceptLanguage" in go["symbols"]
    assert "golang.org/x/text/language.Parse" in go["symbols"]
    zlib = by_vuln["TEST-ZLIB-0001"]
    assert (zlib["binary"], zlib["symbols"], zlib["language"]) == (
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", ["adler32", "crc32"], "c")
    gaps = {(g["vulnerability"], g["reason"]) for g in plan["not_watched"]}
    assert gaps == {("TEST-PYPI-0001", "language_not_supported"), ("TEST-ZLIB-FIXED", "version_not_affected"),
                    ("TEST-ABSENT-0001", "package_not_present"), ("TEST-NOFUNC-0001", "no_functions_named")}
    # The record is the contract: it encodes, and the same input gives the same bytes.
    registry = codec.SchemaRegistry.default()
    assert codec.encode(plan, "ProbePlan", registry) == codec.encode(_plan(list(reversed(inventory))),
                                                                    "ProbePlan", registry)


def test_a_fixed_version_in_one_container_restricts_the_target_to_the_others() -> None:
    fixed = "pkg:deb/debian/zlib1g@1:1.3.dfsg-3?arch=amd64"
    path = "/usr/lib/x86_64-linux-gnu/libz.so.1"
    plan = _plan([_entry(ZLIB, path, "aaaaaaaaaaaa1"), _entry(fixed, path, "bbbbbbbbbbbb2")])
    (zlib,) = [t for t in plan["targets"] if t["vulnerability"] == "TEST-ZLIB-0001"]
    assert zlib["containers"] == ["aaaaaaaaaaaa1"]


def test_versions_are_compared_as_their_ecosystem_does() -> None:
    go = {"ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.3.8"}]}]}
    assert is_affected("v0.3.7", go, "Go") is True
    assert is_affected("v0.3.10", go, "Go") is False  # not a string comparison
    deb = {"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.3.dfsg-1"}]}]}
    assert is_affected("1:1.2.13.dfsg-1", deb, "Debian:12") is True
    assert is_affected("1:1.3.dfsg-3", deb, "Debian:12") is False
    assert is_affected("1:1.3.1-1", deb, "Debian:12") is True  # dpkg order: 1.3.1 < 1.3.dfsg
    assert is_affected("1.0", {"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}, "npm") is True
    # An ecosystem without a known ordering cannot be told.
    assert is_affected("1.0", {"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}]}]}, "Hackage") is None
    assert is_affected(None, deb, "Debian") is None


def test_the_agent_refuses_a_malformed_plan_by_name() -> None:
    good = _plan([_entry(ZLIB, "/usr/lib/libz.so.1")])
    assert plan_problems("t1", good) == []
    bad = {**good, "format_version": 7, "plan_id": "other",
           "targets": [{**good["targets"][0], "binary": " ", "language": "cobol"}]}
    names = {name for name, _ in plan_problems("t1", bad)}
    assert names == {"plan.t1.format_version", "plan.t1.plan_id", "plan.t1.targets[0].language",
                     "plan.t1.targets[0].binary"}


def test_go_method_names_are_matched_literally() -> None:
    import fnmatch

    pattern = exact("golang.org/x/text/language.(*Matcher).Match")
    assert fnmatch.fnmatchcase("golang.org/x/text/language.(*Matcher).Match", pattern)
    assert not fnmatch.fnmatchcase("golang.org/x/text/language.(*xMatcher).Match", pattern)


def test_the_inventory_folds_module_maps_per_package_file_and_container() -> None:
    def module_map(pid: int, container: str, modules: list[tuple[str, str | None]]) -> dict[str, Any]:
        return {"host": "node-1", "container_id": container, "pid": pid, "runtime_type": "NATIVE",
                "observed_at_us": 100 + pid, "version": 1,
                "modules": [{"path": p, "purl": u, "binary_digest": "sha256:" + p} for p, u in modules]}

    maps = [module_map(1, "c1", [("/usr/lib/libz.so.1", ZLIB), ("/app/a", None)]),
            module_map(2, "c1", [("/usr/lib/libz.so.1", ZLIB)]),
            module_map(3, "c2", [("/usr/lib/libz.so.1", ZLIB)])]
    found = entries(maps)
    assert [(e.container_id, e.processes, e.last_seen_us) for e in found] == [("c1", 2, 102), ("c2", 1, 103)]
    assert found[0].package == "pkg:deb/debian/zlib1g" and found[0].version == "1:1.2.13.dfsg-1"
    assert select(found, purl="pkg:deb/debian/zlib1g", container="c2") == [found[1]]
    assert select(found, purl="pkg:deb/debian/libpng16-16") == []


def test_vex_notes_say_what_a_plan_watched_where_and_for_how_long() -> None:
    from runtime_signals.evidence.plan import watched_notes

    def status(host: str, symbols: list[str]) -> dict[str, Any]:
        return {"plan_id": "t1", "host": host, "state": "ACTIVE", "active_since_us": 1_700_000_000_000_000,
                "observed_at_us": 1_700_000_060_000_000,
                "attached": [{"binary": "/app/x", "file": "/app/x", "symbol": s} for s in symbols]}

    notes = watched_notes([status("node-b", []), status("node-a", ["crc32", "inflate"])], ["crc32"])
    assert notes == ("Plan t1: watched on 1 node(s): node-a (crc32 in /app/x, from 2023-11-14T22:13:20.000000+00:00 "
                     "to at least 2023-11-14T22:14:20.000000+00:00). Not present (nothing to attach) on: node-b.")
    assert watched_notes([], ["crc32"]).startswith("No plan status")


def _two_functions(directory: Path) -> Path:
    """A real ELF program with two probe-able functions, one and two."""
    import subprocess

    source = directory / "two.c"
    source.write_text("__attribute__((noinline)) int one(int x) { return x + 1; }\n"
                      "__attribute__((noinline)) int two(int x) { return x + 2; }\n"
                      "int main(void) { return one(0) + two(0); }\n")
    binary = directory / "two"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(source)], check=True)
    return binary


def _recording_attach() -> tuple[list[Any], Any]:
    """The attach seam of a TargetManager, recording instead of calling the kernel."""
    from runtime_signals.agent.probes import AttachedProbe, ProbeSpec

    attached: list[AttachedProbe] = []

    def attach(spec: ProbeSpec) -> AttachedProbe:
        attached.append(AttachedProbe(spec, spec.binary, 0x1000 + len(attached), len(attached)))
        return attached[-1]
    return attached, attach


def test_targets_added_and_removed_at_run_time_detach_only_what_no_other_target_uses(tmp_path: Path) -> None:
    """The TargetManager's run-time path over a real ELF file; the attach seam records instead
    of calling the kernel (the live loop is tests/agent/test_plans_live.py)."""
    from runtime_signals.agent.probes import AttachedProbe
    from runtime_signals.agent.targets import TargetManager
    from runtime_signals.config.schema import TargetSettings

    binary = _two_functions(tmp_path)
    attached, attach = _recording_attach()
    detached: list[AttachedProbe] = []

    manager = TargetManager([], [], attach=attach, detach=detached.extend, host_root=Path("/"))
    first = manager.add_targets([TargetSettings(binary=str(binary), symbols=["one", "two", "absent"])], ["plan.a"])
    second = manager.add_targets([TargetSettings(binary=str(binary), symbols=["two"])], ["plan.b"])
    manager.scan()
    assert [s for _, s in manager.attached_for(first[0])] == ["one", "two"]
    assert [s for _, s in manager.attached_for(second[0])] == ["two"]
    assert list(manager.problems_for(first[0])) == ["plan.a.symbols[2]"]
    assert len(attached) == 2  # "two" is one uprobe shared by both plans
    assert manager.remove_targets(first) == 1 and [p.spec.symbol for p in detached] == ["one"]
    assert manager.problems_for(first[0]) == {}
    manager.scan()  # a removed target is not attached again
    assert len(attached) == 2
    assert manager.remove_targets(second) == 1 and [p.spec.symbol for p in detached] == ["one", "two"]


def test_the_follower_refuses_a_malformed_record_by_name_and_removes_on_a_tombstone(tmp_path: Path) -> None:
    from runtime_signals.agent.plans import PlanFollower
    from runtime_signals.agent.targets import TargetManager
    from runtime_signals.schemas.topics import TopicNames

    registry = codec.SchemaRegistry.default()
    produced: list[tuple[str, bytes | None, bytes]] = []

    class Sink:
        def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                    headers: list[tuple[str, bytes]] | None = None, calls: int = 0) -> None:
            produced.append((topic, key, value))

    manager = TargetManager([], [], attach=None, host_root=tmp_path, proc_root=tmp_path)
    follower = PlanFollower(manager, Sink(), TopicNames(), consumer_config={}, host="node-1", agent_id="a/1")

    def last_status() -> dict[str, Any]:
        topic, key, value = produced[-1]
        assert topic == TopicNames().plan_status and key == b"p1/node-1"
        return codec.decode(value, registry, "PlanStatus").record

    follower.apply(b"p1", b"\xc3\x01garbage", 3)
    refused = last_status()
    assert refused["state"] == "REFUSED" and refused["plan_offset"] == 3
    assert refused["errors"][0]["name"] == "plan.p1" and "offset 3 is not a ProbePlan" in refused["errors"][0]["reason"]
    plan = _plan([_entry(ZLIB, "/usr/lib/x86_64-linux-gnu/libz.so.1")])
    follower.apply(b"p1", codec.encode({**plan, "plan_id": "p1"}, "ProbePlan", registry), 4)
    active = last_status()
    assert active["state"] == "ACTIVE" and active["errors"] == []
    # The library is not on this (empty) root: said by name, not an error.
    assert [p["name"] for p in active["not_present"]] == ["plan.p1.targets[0].binary"]
    follower.apply(b"p1", None, 5)
    assert last_status()["state"] == "REMOVED" and follower.counts["plans_active"] == 0


def test_a_rust_crate_given_by_binary_is_watched_only_in_an_affected_version() -> None:
    """RustSec names `smallvec::SmallVec::insert_many`; a Rust binary's crates are in no module
    map, so the user names the file and the crate's version (--binary PURL@VERSION=PATH)."""
    advisories = load_advisories([ADVISORIES.parent / "rustsec"])

    def plan(binaries: dict[str, list[str]]) -> dict[str, Any]:
        return build_plan("rust", advisories, [], 1_700_000_000_000_000, binaries)

    (target,) = plan({"pkg:cargo/smallvec@1.6.0": ["/app/server"]})["targets"]
    assert (target["binary"], target["language"], target["symbols"]) == (
        "/app/server", "rust", ["smallvec::SmallVec::insert_many"])
    fixed = plan({"pkg:cargo/smallvec@1.6.1": ["/app/server"]})
    assert fixed["targets"] == [] and [g["reason"] for g in fixed["not_watched"]] == ["version_not_affected"]
    assert plan({"pkg:cargo/smallvec": ["/app/server"]})["targets"]  # no version said: watched
    absent = plan({})
    assert [g["reason"] for g in absent["not_watched"]] == ["package_not_present"]


def test_a_new_version_of_a_plan_keeps_the_probes_of_the_functions_both_name(tmp_path: Path) -> None:
    """Plans are re-published as advisories change: a function both versions name keeps its
    uprobe (no gap in which its calls are missed, no probe slot spent again)."""
    from runtime_signals.agent.plans import PlanFollower
    from runtime_signals.agent.targets import TargetManager
    from runtime_signals.schemas.topics import TopicNames

    binary = _two_functions(tmp_path)
    attached, attach = _recording_attach()
    detached: list[str] = []

    class Sink:
        def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                    headers: list[tuple[str, bytes]] | None = None, calls: int = 0) -> None:
            pass

    manager = TargetManager([], [], attach=attach, detach=lambda probes: detached.extend(p.spec.symbol for p in probes),
                            host_root=Path("/"))
    follower = PlanFollower(manager, Sink(), TopicNames(), consumer_config={}, host="node-1", agent_id="a/1")
    registry = codec.SchemaRegistry.default()

    def version(symbols: list[str]) -> bytes:
        return codec.encode({"format_version": 1, "plan_id": "p", "created_at_us": 1, "advisories": ["X-1"],
                             "not_watched": [], "targets": [{"vulnerability": "X-1", "purl": None, "language": "c",
                                                             "binary": str(binary), "symbols": symbols,
                                                             "containers": []}]}, "ProbePlan", registry)

    follower.apply(b"p", version(["one", "two"]), 1)
    follower.apply(b"p", version(["two"]), 2)  # "one" dropped from the advisory
    assert [p.spec.symbol for p in attached] == ["one", "two"] and detached == ["one"]
    follower.apply(b"p", version(["two"]), 3)  # the same again
    assert len(attached) == 2 and detached == ["one"]
