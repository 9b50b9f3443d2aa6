"""Summary records as the processor writes them (schemas/RuntimeSignalSummary.avsc), built by
hand so the consumer tests know every count, time and hash they should get back."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from runtime_signals.schemas import codec, hashing

SUMMARY = "io.runtimesignals.RuntimeSignalSummary"
WINDOW_US = 60_000_000
T0_US = (int(time.time()) // 60 * 60 - 3600) * 1_000_000  # an hour ago, on a minute
LIBIMAGE = "pkg:deb/debian/libimage@1.2.3?arch=amd64"
LIBSCALE = "pkg:deb/debian/libscale@0.9"
XNET = "pkg:golang/golang.org/x/net@v0.17.0"

UPLOAD = ("_start", "main", "handle_upload", "decode_image", "parse_image_header")
PREVIEW = ("_start", "main", "handle_preview", "parse_image_header")
RESIZE = ("main", "resize", "scale_rows")
GO_PARSE = ("main.main", "net/http.(*conn).serve", "golang.org/x/net/html.Parse")


APP_DIGEST = "sha256:" + "cd" * 32
APP = {"path": "/app/server", "binary_digest": APP_DIGEST, "purl": None, "comm": "server"}


def path_record(container: str, window: int, symbols: tuple[str, ...], count: int, purl: str | None,
                first_offset_us: int = 1_000_000, libraries: tuple[str | None, ...] | None = None) -> dict[str, Any]:
    """A v2 path (schemas/HASHING.md part II): the probed function (last frame) is in the
    package ``purl``; its callers are in the unpackaged program /app/server."""
    start = T0_US + window * WINDOW_US
    libraries = libraries or ("/app/server",) * (len(symbols) - 1) + ("/usr/lib/libimage.so.1",)
    digests = [APP_DIGEST] * len(symbols)
    offsets = [int(hashlib.sha256(s.encode()).hexdigest()[:5], 16) for s in symbols]
    purls = [hashing.module_identity(purl if i == len(symbols) - 1 else None, digests[i], libraries[i])
             for i in range(len(symbols))]
    node_hashes = [hashing.node_hash_v2(purls[i], s) for i, s in enumerate(symbols)]
    identities = [hashing.frame_identity(d, o, 0) for d, o in zip(digests, offsets, strict=False)]
    return {
        "symbols": list(symbols),
        "observation_count": count,
        "purl": purl,
        "runtime_type": "GO" if symbols is GO_PARSE else "NATIVE",
        "first_observed_at_us": start + first_offset_us,
        "last_observed_at_us": start + first_offset_us + (count - 1) * 1000,
        "node_hashes": node_hashes,
        "path_hash": hashing.path_hash_v2(node_hashes),
        "callstack_hash": hashing.callstack_hash_v2(identities),
        "function_signatures": list(symbols),
        "binary_digests": digests,
        "binary_offsets": offsets,
        "container_id": container,
        "window_start_us": start,
        "window_end_us": start + WINDOW_US,
        "libraries": list(libraries),
        "purls": purls,
        "addresses": [None] * len(symbols),
        "hash_recipe": hashing.RECIPE_V2,
        "executables": [dict(APP)],
    }


def summary_record(container: str, window: int, paths: list[dict[str, Any]], dropped: int = 0,
                   late: int = 0) -> dict[str, Any]:
    start = T0_US + window * WINDOW_US
    paths = sorted(paths, key=lambda p: (p["path_hash"], p["callstack_hash"]))
    path_hashes = sorted({p["path_hash"] for p in paths})
    return {
        "container_id": container,
        "started_at_us": start,
        "stopped_at_us": start + WINDOW_US,
        "total_events": sum(p["observation_count"] for p in paths),
        "call_paths": paths,
        "observed_symbols": sorted({s for p in paths for s in p["symbols"]}),
        "dropped_events": dropped,
        "detected_runtimes": sorted({p["runtime_type"] for p in paths}),
        "observed_node_hashes": sorted({h for p in paths for h in p["node_hashes"]}),
        "observed_path_hashes": path_hashes,
        "combined_path_hash": hashing.combined_path_hash_v2(path_hashes),
        "raw_records": sum(p["observation_count"] for p in paths),
        "late_events": late,
        "hash_recipe": hashing.RECIPE_V2,
    }


def samples() -> list[dict[str, Any]]:
    """web-1: parse_image_header by two paths over two windows (7 + 5, then 2 calls);
    worker-2: scale_rows (4 calls, 3 dropped, 1 late), then html.Parse (2 calls)."""
    return [
        summary_record("web-1", 0, [path_record("web-1", 0, UPLOAD, 7, LIBIMAGE),
                                    path_record("web-1", 0, PREVIEW, 5, LIBIMAGE, 2_000_000)]),
        summary_record("worker-2", 0, [path_record("worker-2", 0, RESIZE, 4, LIBSCALE)], dropped=3, late=1),
        summary_record("web-1", 1, [path_record("web-1", 1, UPLOAD, 2, LIBIMAGE, 5_000_000)]),
        summary_record("worker-2", 1, [path_record("worker-2", 1, GO_PARSE, 2, XNET,
                                                   libraries=("/app/server",) * 3)]),
    ]


def summary_key(summary: dict[str, Any]) -> bytes:
    return f"{summary['container_id']}|{summary['started_at_us']}".encode()


def produce(bootstrap: str, topic: str, summaries: list[dict[str, Any]],
            extra: Sequence[tuple[bytes, bytes | None]] = ()) -> None:
    """The summaries keyed as the processor keys them, then the ``extra`` (key, value) records."""
    registry = codec.SchemaRegistry.default()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "partitioner": "murmur2_random"})
    for summary in summaries:
        producer.produce(topic, key=summary_key(summary), value=codec.encode(summary, SUMMARY, registry))
    for key, value in extra:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


PNG_PROBE = "/usr/lib/x86_64-linux-gnu/libpng16.so.16:png_read_chunk"


def statistics_report(agent_id: str, at_us: int, detached_s: int) -> dict[str, Any]:
    """A SignalStatistics record of ``agent_id`` whose png_read_chunk probe has been detached
    for ``detached_s`` seconds of this run."""
    return {"total_events": 0, "events_per_second": 0.0, "unique_call_paths": 0, "buffer_utilization_percent": 0.0,
            "dropped_events": 0, "agent_id": agent_id, "host": agent_id.split("/")[0], "reported_at_us": at_us,
            "detached_ns_by_probe": {PNG_PROBE: detached_s * 1_000_000_000}}


def watch_records() -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """(statistics, module maps): node-2 runs worker-2 and reports every 10 s over its two
    windows; its png_read_chunk probe was detached 30 s of them (between +40 s and +70 s).
    node-1 runs web-1 and watched all the time."""
    registry = codec.SchemaRegistry.default()
    statistics = []
    for step in range(13):
        at_us = T0_US + step * 10_000_000
        detached = min(30, max(0, (step - 4) * 10))
        for agent, seconds in (("node-2/r1", detached), ("node-1/r1", 0)):
            statistics.append((agent.encode(), codec.encode(statistics_report(agent, at_us, seconds),
                                                            "SignalStatistics", registry)))
    maps = []
    for agent, container in (("node-2/r1", "worker-2"), ("node-1/r1", "web-1")):
        record = {"host": agent.split("/")[0], "agent_id": agent, "pid": 4242, "process_start_ticks": 1,
                  "container_id": container, "executable": "/app/server", "runtime_type": "NATIVE", "version": 1,
                  "observed_at_us": T0_US, "modules": []}
        maps.append((f"{agent}/4242/1".encode(), codec.encode(record, "ModuleMap", registry)))
    return statistics, maps
