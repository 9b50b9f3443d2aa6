"""Raw-topic records for processor tests, built with schemas.codec: no agent, no BPF.

A "scenario" is a deterministic list of records for one agent: calls of a few containers
along a few call paths, and an AgentWatermark after every step, as the agent sends them.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from runtime_signals.schemas import codec

CALL_EVENT = "io.runtimesignals.RuntimeCallEvent"
WATERMARK = "io.runtimesignals.AgentWatermark"
APP_DIGEST = "sha256:" + "ab" * 32
LIB_DIGEST = "sha256:" + "cd" * 32
# 2026-01-01T00:00:00Z: event time starts on a whole second, so windows line up.
BASE_US = 1_767_225_600_000_000
REGISTRY = codec.SchemaRegistry.default()

# Call paths as (digest, file offset) frames, bottom to top; the top frame is the probed function.
PATHS: tuple[tuple[tuple[str, int], ...], ...] = (
    ((LIB_DIGEST, 0x2_9d90), (APP_DIGEST, 0x1_1a0), (APP_DIGEST, 0x1_240), (APP_DIGEST, 0x1_300)),
    ((LIB_DIGEST, 0x2_9d90), (APP_DIGEST, 0x1_1c0), (APP_DIGEST, 0x1_300)),
    ((APP_DIGEST, 0x1_1e0), (APP_DIGEST, 0x1_300)),
)


def call_event(container: str, observed_at_us: int, *, count: int = 1, path: int = 0,
               symbol: str | None = "parse_image_header", seed: int = 0, **overrides: Any) -> dict[str, Any]:
    frames = PATHS[path]
    record: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=random.Random(f"{container}{observed_at_us}{seed}").getrandbits(128))),
        "container_id": container,
        "pid": 4242,
        "tid": 4242,
        "timestamp_ns": observed_at_us * 1000,
        "symbol": symbol,
        "function_address": 0x55_0000_0000 + frames[-1][1],
        "stack_trace": [0x55_0000_0000 + offset for _, offset in frames],
        "runtime_type": "NATIVE",
        "received_at_us": observed_at_us + 1_000,
        "observed_at_us": observed_at_us,
        "agent_id": "agent-1",
        "observation_count": count,
        "stack_frames": [{"address": 0x55_0000_0000 + offset, "binary_digest": digest,
                          "binary_offset": offset, "library": "/app/bin" if digest == APP_DIGEST else "/lib/libc.so.6"}
                         for digest, offset in frames],
    }
    record.update(overrides)
    return record


def encode_call(record: dict[str, Any]) -> bytes:
    return codec.encode(record, CALL_EVENT, REGISTRY)


def encode_watermark(watermark_us: int, sequence: int, agent_id: str = "agent-1") -> bytes:
    return codec.encode({"agent_id": agent_id, "host": "node-1", "watermark_us": watermark_us,
                         "sequence": sequence}, WATERMARK, REGISTRY)


@dataclass
class Scenario:
    """Records in the order one agent would produce them; (key, value, partition or None)."""

    records: list[tuple[bytes, bytes, int | None]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # index in records where each step starts
    calls: Counter[str] = field(default_factory=Counter)  # calls per container
    calls_per_window: Counter[tuple[str, int]] = field(default_factory=Counter)


def scenario(containers: list[str], steps: int, step_us: int, window_us: int, partitions: int,
             seed: int = 1, agent_id: str = "agent-1", final_watermark_us: int | None = None) -> Scenario:
    """Each step: 0-2 calls per container at the step's event time (observation_count 1-3,
    a random path), then a watermark at that time to every partition. A last watermark
    closes every window. Container n's calls go to partition n % partitions."""
    rng = random.Random(seed)
    out = Scenario()
    for step in range(steps):
        out.steps.append(len(out.records))
        at_us = BASE_US + step * step_us
        for container in containers:
            for n in range(rng.randint(0, 2)):
                count = rng.randint(1, 3)
                event = call_event(container, at_us + n, count=count, path=rng.randrange(len(PATHS)),
                                   seed=seed, agent_id=agent_id)
                # Containers spread evenly over the partitions (a stand-in for the keyed
                # partitioner, which may put a handful of keys all on one partition).
                partition = containers.index(container) % partitions
                out.records.append((container.encode(), encode_call(event), partition))
                out.calls[container] += count
                out.calls_per_window[(container, (at_us - at_us % window_us))] += count
        for partition in range(partitions):
            out.records.append((agent_id.encode(), encode_watermark(at_us, step + 1, agent_id), partition))
    end_us = final_watermark_us or BASE_US + steps * step_us + 10 * window_us
    out.steps.append(len(out.records))
    for partition in range(partitions):
        out.records.append((agent_id.encode(), encode_watermark(end_us, steps + 1, agent_id), partition))
    return out


def symbol_tables() -> list[dict[str, Any]]:
    """SymbolTable records naming every frame of PATHS (callers are looked up at offset - 1):
    C names, an Itanium C++ name and a Rust v0 name."""
    app = [(0x1_100, 0xb0, "_ZN5image6Parser6decodeERKSt6vectorIhSaIhEE"), (0x1_1b0, 0x20, "handle_preview"),
           (0x1_1d0, 0x20, "main"), (0x1_200, 0x80, "_RNvNtCs1234_5image6header5parse"),
           (0x1_300, 0x40, "parse_image_header")]
    lib = [(0x2_9d00, 0x100, "__libc_start_call_main")]
    return [{"binary_digest": digest, "chunk_index": 0, "chunk_count": 1, "symbol_count": len(symbols),
             "source": ".symtab",
             "symbols": [{"file_offset": o, "size_bytes": s, "name": n} for o, s, n in symbols]}
            for digest, symbols in ((APP_DIGEST, app), (LIB_DIGEST, lib))]


def encoded_symbol_tables() -> list[tuple[bytes, bytes, int | None]]:
    return [(f"{t['binary_digest']}/0".encode(), codec.encode(t, "SymbolTable", REGISTRY), None)
            for t in symbol_tables()]


APP_PURL = "pkg:deb/debian/image-app@1.2.3?arch=amd64"
LIBC_PURL = "pkg:deb/debian/libc6@2.36-9?arch=amd64"


def module_map(pid: int = 4242, container: str = "c1") -> dict[str, Any]:
    """The ModuleMap an agent publishes for a process that maps the app and libc."""
    return {"host": "node-1", "agent_id": "agent-1", "pid": pid, "process_start_ticks": 1000,
            "container_id": container, "executable": "/app/bin", "runtime_type": "NATIVE", "version": 1,
            "observed_at_us": BASE_US, "modules": [
                {"path": "/app/bin", "start_address": 0x55_0000_0000, "end_address": 0x55_0001_0000,
                 "file_offset": 0, "binary_digest": APP_DIGEST, "build_id": None, "purl": APP_PURL},
                {"path": "/lib/libc.so.6", "start_address": 0x7f_0000_0000, "end_address": 0x7f_0010_0000,
                 "file_offset": 0, "binary_digest": LIB_DIGEST, "build_id": None, "purl": LIBC_PURL}]}


def encoded_module_maps() -> list[tuple[bytes, bytes, int | None]]:
    return [(b"node-1/4242/1000", codec.encode(module_map(), "ModuleMap", REGISTRY), None)]


def encoded_binaries() -> dict[str, list[tuple[bytes, bytes, int | None]]]:
    """What an agent publishes about the binaries of PATHS, by TopicNames attribute."""
    return {"symbols": encoded_symbol_tables(), "modules": encoded_module_maps()}
