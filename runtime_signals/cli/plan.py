"""`signals plan`: advisories -> a probe plan for every agent; `signals plan status`: what each node watches."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from runtime_signals.cli.common import add_connection_arguments, connection
from runtime_signals.consumer import inventory
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.consumer.models import iso
from runtime_signals.evidence.plan import PlanError, build_plan, load_advisories
from runtime_signals.schemas import codec

PROBE_PLAN = "io.runtimesignals.ProbePlan"
PLAN_STATUS = "io.runtimesignals.PlanStatus"

EPILOG = """\
examples:
  signals plan advisories/ --plan-id osv-2026-11                 # print what it would watch
  signals plan GO-2022-1059.json --plan-id text --publish        # every agent attaches it
  signals plan GO-2022-1059.json --inventory inventory.json      # a saved `signals inventory --json`
  signals plan status                                           # per plan, per node
  signals plan remove text                                      # a tombstone: agents detach

Advisories are OSV JSON files (or directories of them). Each affected package present in the
inventory (from the modules topic, or --inventory FILE) in an affected version becomes targets:
its files and its vulnerable functions' symbol names (Go: pkg.Func, pkg.(*T).M and pkg.T.M;
Rust: demangled paths; C: as named). What cannot be watched is printed, with why.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    add_connection_arguments(parser, default_bootstrap)
    parser.add_argument("advisories", nargs="*", type=Path, metavar="OSV_FILE_OR_DIR",
                        help="OSV JSON files or directories; or `status`, or `remove PLAN_ID`")
    parser.add_argument("--plan-id", help="name of the plan, its key on the plans topic (default: plan-<time>)")
    parser.add_argument("--inventory", type=Path, metavar="FILE",
                        help="a saved `signals inventory --json` instead of reading the modules topic")
    parser.add_argument("--binary", action="append", default=[], metavar="PURL=PATH",
                        help="also probe this file for this package (a crate compiled into a Rust binary)")
    parser.add_argument("--publish", action="store_true", help="write the plan to the plans topic")
    parser.add_argument("--json", action="store_true", help="print the plan (or the status) as JSON")


def run(args: argparse.Namespace) -> int:
    words = [str(a) for a in args.advisories]
    if words[:1] == ["status"]:
        return _status(args)
    if words[:1] == ["remove"]:
        if len(words) != 2:
            raise PlanError("signals plan remove PLAN_ID: name one plan")
        return _remove(args, words[1])
    if not words:
        raise PlanError("no advisories: give OSV JSON files or directories (or `status`, `remove PLAN_ID`)")
    advisories = load_advisories(args.advisories)
    entries = _inventory(args)
    binaries: dict[str, list[str]] = {}
    for text in args.binary:
        purl, sep, path = text.partition("=")
        if not sep or not purl.startswith("pkg:") or not path:
            raise PlanError(f"--binary {text!r}: expected PURL=PATH, e.g. pkg:cargo/smallvec=/app/server")
        binaries.setdefault(purl, []).append(path)
    created_at_us = time.time_ns() // 1000
    plan = build_plan(args.plan_id or f"plan-{created_at_us // 1_000_000}", advisories, entries, created_at_us,
                      binaries)
    if args.json:
        print(json.dumps(plan, indent=2, sort_keys=True))
    else:
        print_plan(plan)
    if args.publish:
        conn = connection(args)
        _produce(conn.kafka_config, conn.topics.plans, plan["plan_id"].encode(),
                 codec.encode(plan, PROBE_PLAN, codec.SchemaRegistry.default()))
        print(f"published plan {plan['plan_id']} to {conn.topics.plans}", file=sys.stderr)
    return 0


def print_plan(plan: dict[str, Any]) -> None:
    count = len(plan["advisories"])
    print(f"plan {plan['plan_id']}: {count} {'advisory' if count == 1 else 'advisories'}, "
          f"{len(plan['targets'])} target(s), {len(plan['not_watched'])} not watched")
    for target in plan["targets"]:
        where = f"in {', '.join(target['containers'])}" if target["containers"] else "wherever it is mapped"
        print(f"  watch {target['binary']} ({target['language']}, {target['vulnerability']} {target['purl']}) "
              f"{where}: {', '.join(target['symbols'])}")
    for gap in plan["not_watched"]:
        print(f"  cannot watch {gap['vulnerability']} {gap['purl']} {gap['function'] or '(package)'}: "
              f"{gap['reason']}{' (' + gap['detail'] + ')' if gap['detail'] else ''}")


def _inventory(args: argparse.Namespace) -> list[inventory.InventoryEntry]:
    if args.inventory is not None:
        try:
            rows = json.loads(args.inventory.read_text(encoding="utf-8"))
            return [inventory.InventoryEntry(**row) for row in rows]
        except (OSError, ValueError, TypeError) as exc:
            raise PlanError(f"--inventory {args.inventory}: not a `signals inventory --json` file: {exc}") from exc
    from runtime_signals.cli.inventory import read

    return read(args)


def _produce(config: dict[str, str], topic: str, key: bytes, value: bytes | None) -> None:
    from confluent_kafka import Producer

    producer = Producer({**config, "enable.idempotence": True})
    failures: list[str] = []
    producer.produce(topic, key=key, value=value,
                     on_delivery=lambda err, _msg: failures.append(str(err)) if err is not None else None)
    remaining = producer.flush(30)
    if remaining or failures:
        raise PlanError(f"{topic}: the plan record was not delivered "
                        f"({failures[0] if failures else 'no answer within 30 s'})")


def _remove(args: argparse.Namespace, plan_id: str) -> int:
    conn = connection(args)
    _produce(conn.kafka_config, conn.topics.plans, plan_id.encode(), None)
    print(f"removed plan {plan_id} from {conn.topics.plans} (a tombstone): agents detach its probes",
          file=sys.stderr)
    return 0


def read_statuses(args: argparse.Namespace) -> list[dict[str, Any]]:
    conn = connection(args)
    reader = TopicReader(conn.bootstrap, {k: v for k, v in conn.kafka_config.items() if k != "bootstrap.servers"})
    skipped: Counter[str] = Counter()
    found = inventory.latest_records(reader, conn.topics.plan_status, codec.SchemaRegistry.default(), PLAN_STATUS,
                                     skipped)
    return sorted(found.values(), key=lambda s: (s["plan_id"], s["host"]))


def _status(args: argparse.Namespace) -> int:
    statuses = read_statuses(args)
    if args.json:
        print(json.dumps(statuses, indent=2, sort_keys=True))
        return 0 if statuses else 4
    for status in statuses:
        print(f"{status['plan_id']} on {status['host']}: {status['state']}, {len(status['attached'])} probe(s) "
              f"attached, {len(status['not_present'])} not present, {len(status['errors'])} error(s) "
              f"(since {iso(status['active_since_us'])}, as of {iso(status['observed_at_us'])})")
        for probe in status["attached"]:
            print(f"  watching {probe['symbol']} in {probe['file']}")
        for problem in status["not_present"]:
            print(f"  not here: {problem['name']}: {problem['reason']}")
        for problem in status["errors"]:
            print(f"  error: {problem['name']}: {problem['reason']}")
    return 0 if statuses else 4
