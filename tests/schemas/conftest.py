"""Fixtures for the schema-contract tests: a registry of the current schemas and one
fully populated example record per top-level schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime_signals.schemas.codec import SchemaRegistry

DATA_DIR = Path(__file__).resolve().parent / "data"

DIGEST_LIBC = "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
DIGEST_APP = "sha256:" + "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64


@pytest.fixture
def registry() -> SchemaRegistry:
    return SchemaRegistry.default()


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


def _call_path() -> dict[str, Any]:
    return {
        "symbols": ["main", "handle_upload", "SSL_write"],
        "observation_count": 3_000_000_000,  # beyond int32 on purpose
        "purl": "pkg:deb/debian/openssl@3.0.11-1",
        "runtime_type": "NATIVE",
        "first_observed_at_us": 1_700_000_000_000_000,
        "last_observed_at_us": 1_700_000_059_999_999,
        "node_hashes": [HASH_A, HASH_B, HASH_A],
        "path_hash": HASH_B,
        "callstack_hash": HASH_A,
        "function_signatures": ["main(int, char**)", "handle_upload(req*)", "SSL_write"],
        "binary_digests": [DIGEST_APP, DIGEST_APP, None],
        "binary_offsets": [0x1040, 0x2210, None],
        "container_id": "3f4e9a1c",
        "window_start_us": 1_700_000_000_000_000,
        "window_end_us": 1_700_000_060_000_000,
        "libraries": ["/app/server", "/app/server", None],
        "purls": ["pkg:generic/server?checksum=" + DIGEST_APP, "pkg:generic/server?checksum=" + DIGEST_APP,
                  "pkg:generic/unknown"],
        "addresses": [None, None, 0x7F3A12C0],
        "hash_recipe": "runtime-signals/v2",
        "executables": [{"path": "/app/server", "binary_digest": DIGEST_APP, "purl": None, "comm": "server"}],
    }


@pytest.fixture
def examples() -> dict[str, dict[str, Any]]:
    """One record per top-level schema, every field set to a non-default value."""
    return {
        "RuntimeCallEvent": {
            "event_id": "6f1c1f4e-9a4b-4c55-8f0e-1f2a3b4c5d6e",
            "container_id": "3f4e9a1c",
            "pid": 4242,
            "tid": 4243,
            "timestamp_ns": 123_456_789_012,
            "symbol": "SSL_write",
            "function_address": -0x7FFF_0000_0000_0000,  # an address >= 2^63, stored bit-for-bit
            "stack_trace": [0x55D0C0DE1040, 0x55D0C0DE2210, 0x7F3A12C0],
            "runtime_type": "NATIVE",
            "library": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "purl": "pkg:deb/debian/openssl@3.0.11-1",
            "received_at_us": 1_700_000_000_100_000,
            "function_signature": "int SSL_write(SSL*, void const*, int)",
            "binary_digest": DIGEST_LIBC,
            "binary_offset": 0x3A2C0,
            "node_hash": HASH_A,
            "callstack_hash": HASH_B,
            "observed_at_us": 1_700_000_000_000_000,
            "host": "node-7",
            "agent_id": "agent-7-1",
            "cgroup_id": 9876,
            "probe_id": "/usr/lib/x86_64-linux-gnu/libssl.so.3:SSL_write",
            "observation_count": 5,
            "last_timestamp_ns": 123_456_999_999,
            "stack_frames": [
                {"address": 0x55D0C0DE1040, "binary_digest": DIGEST_APP,
                 "binary_offset": 0x1040, "library": "/app/server", "purl": None},
                {"address": 0x55D0C0DE2210, "binary_digest": DIGEST_APP,
                 "binary_offset": 0x2210, "library": "/app/server", "purl": None},
                {"address": 0x7F3A12C0, "binary_digest": None, "binary_offset": None,
                 "library": None, "purl": None},
            ],
            "stack_truncated": True,
            "truncation_reason": "depth_limit",
            "executable": "/app/server",
            "executable_digest": DIGEST_APP,
            "executable_purl": "pkg:oci/server@sha256%3A" + "c" * 64,
            "comm": "server",
        },
        "AgentWatermark": {
            "agent_id": "agent-7-1",
            "host": "node-7",
            "watermark_us": 1_700_000_000_000_000,
            "sequence": 17,
        },
        "ObservedCallPath": _call_path(),
        "RuntimeSignalSummary": {
            "container_id": "3f4e9a1c",
            "started_at_us": 1_700_000_000_000_000,
            "stopped_at_us": 1_700_000_060_000_000,
            "total_events": 3_000_000_000,
            "call_paths": [_call_path()],
            "observed_symbols": ["SSL_write", "handle_upload", "main"],
            "dropped_events": 2,
            "detected_runtimes": ["NATIVE", "PYTHON"],
            "observed_node_hashes": [HASH_A, HASH_B],
            "observed_path_hashes": [HASH_B],
            "combined_path_hash": HASH_A,
            "raw_records": 600_000_000,
            "late_events": 4,
            "hash_recipe": "runtime-signals/v2",
        },
        "SignalStatistics": {
            "total_events": 1_000_000,
            "events_per_second": 1234.5,
            "unique_call_paths": 12,
            "buffer_utilization_percent": 3.25,
            "dropped_events": 7,
            "cpu_overhead_percent": 0.8,
            "memory_usage_bytes": 64 * 1024 * 1024,
            "agent_id": "agent-7-1",
            "host": "node-7",
            "reported_at_us": 1_700_000_000_000_000,
            "dropped_by_reason": {"ringbuf_full": 5, "rate_limited": 2},
            "delivered_events": 999_990,
            "pending_events": 3,
            "spool_bytes": 4096,
            "detached_ns_by_probe": {"/usr/lib/x86_64-linux-gnu/libssl.so.3:SSL_read": 30_000_000_000},
            "run_ns": 3_600_000_000_000,
        },
        "StackFrame": {
            "address": 0x7F3A12C0,
            "binary_digest": DIGEST_LIBC,
            "binary_offset": 0x3A2C0,
            "library": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64",
        },
    }
