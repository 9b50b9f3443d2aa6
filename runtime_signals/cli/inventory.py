"""`signals inventory`: which packages run where, from the module maps the agents publish."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from runtime_signals.cli.common import add_connection_arguments, connection
from runtime_signals.consumer import inventory
from runtime_signals.consumer.kafka import TopicReader
from runtime_signals.consumer.models import iso
from runtime_signals.schemas import codec

EPILOG = """\
examples:
  signals inventory
  signals inventory --purl pkg:deb/debian/zlib1g            # every version of one package
  signals inventory --purl pkg:golang/example.com/app@v1.2.0 --json
  signals inventory --container 4f1c3a9be2d0

Read from the compacted modules topic: a package appears once a process that maps one of its
files has made a probed call (agents publish module maps then). A Go binary is listed under its
main module; libraries compiled into it are not listed on their own.
exit status: 0 packages listed; 4 none for this filter; 1 an error.
"""


def add_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    add_connection_arguments(parser, default_bootstrap)
    parser.add_argument("--purl", help="only this package (a PURL, with or without @version)")
    parser.add_argument("--container", help="only this container (id or a 12+ character prefix)")
    parser.add_argument("--json", action="store_true", help="one JSON document: a list of entries")


def read(args: argparse.Namespace) -> list[inventory.InventoryEntry]:
    """The inventory on the cluster of these connection arguments, unfiltered."""
    conn = connection(args)
    reader = TopicReader(conn.bootstrap, {k: v for k, v in conn.kafka_config.items() if k != "bootstrap.servers"})
    skipped: Counter[str] = Counter()
    maps = inventory.read_module_maps(reader, conn.topics.modules, codec.SchemaRegistry.default(), skipped)
    if skipped:
        print(f"signals inventory: {sum(skipped.values())} module map(s) skipped: {dict(skipped)}", file=sys.stderr)
    return inventory.entries(maps)


def run(args: argparse.Namespace) -> int:
    found = inventory.select(read(args), purl=args.purl, container=args.container)
    if args.json:
        print(json.dumps([e.as_dict() for e in found], indent=2, sort_keys=True))
    else:
        for e in found:
            print(f"{e.purl}  {e.host}  {e.container_id}  {e.path}  ({e.processes} process"
                  f"{'es' if e.processes != 1 else ''}, last seen {iso(e.last_seen_us)})")
        print(f"{len({e.purl for e in found})} package version(s) in {len({e.container_id for e in found})} "
              f"container(s) on {len({e.host for e in found})} node(s)", file=sys.stderr)
    return 0 if found else 4
