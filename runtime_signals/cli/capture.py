"""`signals capture` and `signals replay`: arguments, signals, and the one-line reports."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from runtime_signals.cli.common import add_connection_arguments, connection

CAPTURE_EPILOG = """\
examples:
  signals capture signals.raw.v1 -o raw.avro                        # everything on the topic now
  signals capture signals.raw.v1 -o p1.avro --partitions 1 --from-offset 500 --to-offset 900
  signals capture signals.raw.v1 -o day.avro --since 2026-11-26T00:00Z --until 2026-11-27T00:00Z
  signals capture signals.summaries.v1 -o live.avro --follow         # until Ctrl-C
  signals capture raw --topic-prefix demo-1795701716. -o raw.avro    # a role, under a prefix

Offsets: --to-offset is exclusive. Times: ISO-8601, milliseconds since the epoch, or 30m/2h/1d
(ago); they are Kafka record timestamps, resolved to offsets by the broker. Ctrl-C ends the
capture early with a valid file whose header says where it stopped (exit status 130).
"""

REPLAY_EPILOG = """\
examples:
  signals replay raw.avro --to staging.signals.raw.v1
  signals replay raw.avro --to staging.signals.raw.v1 --rate 5000     # records per second
  signals replay --from-topic signals.raw.v1 --since 2h --to reprocess.signals.raw.v1
  signals replay modules.avro --topic-prefix replay1. --to modules   # a role, under a prefix

Keys, values, timestamps and headers are kept; partitions too when the target has as many
as the source (else by key, with watermarks sent to every partition). Then process the
copy with its own app id and prefix:
  signals processor --topic-prefix reprocess. --app-id reprocess-1
"""

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time_ms(text: str, now: datetime | None = None) -> int:
    """ISO-8601 (naive means UTC), integer milliseconds since the epoch, ``now``, or ``N[smhd]``
    (that long ago; ``-2h`` too, written ``--since=-2h`` for argparse)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.isdigit():
        return int(value)
    if value == "now":
        return int(now.timestamp() * 1000)
    relative = _RELATIVE.match(value)
    if relative:
        seconds = float(relative.group(1)) * _UNITS_S[relative.group(2)]
        try:
            return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
        except (OverflowError, ValueError) as exc:  # before year 1, or beyond what a timedelta holds
            raise argparse.ArgumentTypeError(f"{text!r} is further back than year 1") from exc
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO-8601 (2026-11-26T13:45Z), epoch ms, now, or 30m/2h/1d (ago)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _add_source_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", help="comma-separated partitions (default: all)")
    parser.add_argument("--from-offset", type=int, help="first offset of each partition")
    parser.add_argument("--to-offset", type=int, help="end offset of each partition, exclusive")
    parser.add_argument("--since", type=parse_time_ms, metavar="TIME", help="first record stamped at or after TIME")
    parser.add_argument("--until", type=parse_time_ms, metavar="TIME", help="stop before the first record stamped at or after TIME")


def add_capture_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    parser.add_argument("topic", help="topic to capture: its full name, or with --topic-prefix a role (raw, "
                                      "symbols, modules, summaries, …) or the unprefixed name")
    parser.add_argument("-o", "--output", required=True, type=Path, help="Avro container file to write")
    add_connection_arguments(parser, default_bootstrap)
    _add_source_range(parser)
    parser.add_argument("--follow", action="store_true", help="no end: keep capturing until Ctrl-C")
    parser.add_argument("--codec", choices=["deflate", "zstandard", "null"],
                        help="block compression (default: deflate, which every Avro reader reads; zstandard needs avro[zstandard] to read)")


def add_replay_arguments(parser: argparse.ArgumentParser, default_bootstrap: str) -> None:
    parser.add_argument("file", nargs="?", type=Path, help="capture file to replay")
    parser.add_argument("--from-topic", help="replay from this topic instead of a file")
    parser.add_argument("--to", required=True, dest="target",
                        help="target topic (it must exist): a full name, or with --topic-prefix a role (raw, "
                             "symbols, modules, …) or the unprefixed name")
    add_connection_arguments(parser, default_bootstrap)
    _add_source_range(parser)
    parser.add_argument("--rate", type=float, metavar="N", help="at most N records per second")
    parser.add_argument("--by-key", action="store_true",
                        help="partition by key even when the partition counts match")


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the event (the loop then finishes its file); a second one kills."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        print(f"\n{signal.Signals(signum).name}: finishing (again to abort)", file=sys.stderr)
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def run_capture(args: argparse.Namespace) -> int:
    from runtime_signals.capture.writer import CaptureRequest, capture, parse_partitions
    from runtime_signals.consumer.kafka import TopicReader

    link = connection(args)
    args.topic = link.topic(args.topic)
    request = CaptureRequest(args.topic, parse_partitions(args.partitions), args.from_offset,
                             args.to_offset, args.since, args.until, args.follow)
    request.check()
    stop = _stop_on_signals()
    result = capture(TopicReader(link.bootstrap, link.kafka_config), request, args.output, avro_codec=args.codec,
                     stop=stop)
    offsets = result.metadata["offsets"]
    spans = ", ".join(f"[{p}] {o['first']}..{o['last']}" for p, o in offsets.items()) or "no records"
    state = "complete" if result.complete else "interrupted"
    print(f"captured {result.records} records of {args.topic} ({spans}) into {result.path} ({state})")
    return 0 if result.complete else 130


def run_replay(args: argparse.Namespace) -> int:
    from runtime_signals.capture.file import verify_capture
    from runtime_signals.capture.replay import ReplaySettings, replay
    from runtime_signals.capture.writer import CaptureError, CaptureRequest, open_capture, parse_partitions, read_ranges
    from runtime_signals.consumer.kafka import TopicReader

    if (args.file is None) == (args.from_topic is None):
        raise CaptureError("give a capture FILE or --from-topic TOPIC (one of them)")
    link = connection(args)
    args.target = link.topic(args.target)
    args.from_topic = None if args.from_topic is None else link.topic(args.from_topic)
    stop = _stop_on_signals()
    if args.file is not None:
        if any(v is not None for v in (args.partitions, args.from_offset, args.to_offset, args.since, args.until)):
            raise CaptureError("offset and time bounds apply to --from-topic; a file is replayed whole")
        verify_capture(args.file)  # a damaged file is refused before one record is sent
        header, records = open_capture(args.file)
        source, partitions, total = str(args.file), header.partition_count, header.records
    else:
        reader = TopicReader(link.bootstrap, link.kafka_config)
        request = CaptureRequest(args.from_topic, parse_partitions(args.partitions), args.from_offset,
                                 args.to_offset, args.since, args.until)
        ranges, records = read_ranges(reader, request, stop)
        source, partitions = args.from_topic, len(reader.partitions(args.from_topic))
        sizes = [r.size for r in ranges]
        total = None if None in sizes else sum(s or 0 for s in sizes)
    settings = ReplaySettings(link.bootstrap, args.target, partitions, rate_per_s=args.rate,
                              keep_partitions=False if args.by_key else None,
                              extra_config=link.kafka_config)
    result = replay(records, settings, total=total, stop=stop)
    layout = "partitions kept" if result.partitions_kept else "partitioned by key"
    print(f"replayed {result.delivered}/{result.produced} records from {source} into {args.target} "
          f"({layout}{', interrupted' if result.interrupted else ''})")
    if not result.ok:
        print(f"replay: delivery failures {dict(result.failed_by_reason)}", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0
