"""`signals demo`: the whole pipeline on this machine against the bundled workload."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uploads", type=int, default=7, help="calls through handle_upload (default: %(default)s)")
    parser.add_argument("--previews", type=int, default=5, help="calls through handle_preview (default: %(default)s)")
    parser.add_argument("--topic-prefix", default=None,
                        help="prefix of the demo's topics (default: demo-<unix time>.); they are created if missing")


def run(args: argparse.Namespace) -> int:
    from runtime_signals.devtools.demo import run_demo

    return run_demo(args.uploads, args.previews, topic_prefix=args.topic_prefix)
