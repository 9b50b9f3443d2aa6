"""The seed model (C# records) mapped to the Avro fields that carry each property.

The contract tests hold the .avsc files and docs/contract.md to this table.
"""

from __future__ import annotations

# record -> C# property -> Avro field
SEED_FIELDS: dict[str, dict[str, str]] = {
    "RuntimeCallEvent": {
        "EventId": "event_id",
        "ContainerId": "container_id",
        "Pid": "pid",
        "Tid": "tid",
        "TimestampNs": "timestamp_ns",
        "Symbol": "symbol",
        "FunctionAddress": "function_address",
        "StackTrace": "stack_trace",
        "RuntimeType": "runtime_type",
        "Library": "library",
        "Purl": "purl",
        "ReceivedAt": "received_at_us",
        "FunctionSignature": "function_signature",
        "BinaryDigest": "binary_digest",
        "BinaryOffset": "binary_offset",
        "NodeHash": "node_hash",
        "CallstackHash": "callstack_hash",
    },
    "ObservedCallPath": {
        "Symbols": "symbols",
        "ObservationCount": "observation_count",
        "Purl": "purl",
        "RuntimeType": "runtime_type",
        "FirstObservedAt": "first_observed_at_us",
        "LastObservedAt": "last_observed_at_us",
        "NodeHashes": "node_hashes",
        "PathHash": "path_hash",
        "CallstackHash": "callstack_hash",
        "FunctionSignatures": "function_signatures",
        "BinaryDigests": "binary_digests",
        "BinaryOffsets": "binary_offsets",
    },
    "RuntimeSignalSummary": {
        "ContainerId": "container_id",
        "StartedAt": "started_at_us",
        "StoppedAt": "stopped_at_us",
        "TotalEvents": "total_events",
        "CallPaths": "call_paths",
        "ObservedSymbols": "observed_symbols",
        "DroppedEvents": "dropped_events",
        "DetectedRuntimes": "detected_runtimes",
        "ObservedNodeHashes": "observed_node_hashes",
        "ObservedPathHashes": "observed_path_hashes",
        "CombinedPathHash": "combined_path_hash",
    },
    "SignalStatistics": {
        "TotalEvents": "total_events",
        "EventsPerSecond": "events_per_second",
        "UniqueCallPaths": "unique_call_paths",
        "BufferUtilization": "buffer_utilization_percent",
        "DroppedEvents": "dropped_events",
        "CpuOverheadPercent": "cpu_overhead_percent",
        "MemoryUsageBytes": "memory_usage_bytes",
    },
}

# Properties the seed declares nullable (`T?`): their Avro fields must be ["null", T].
SEED_NULLABLE: dict[str, set[str]] = {
    "RuntimeCallEvent": {
        "symbol", "library", "purl", "function_signature", "binary_digest", "binary_offset",
        "node_hash", "callstack_hash",
    },
    "ObservedCallPath": {
        "purl", "node_hashes", "path_hash", "callstack_hash", "function_signatures",
        "binary_digests", "binary_offsets",
    },
    "RuntimeSignalSummary": {"observed_node_hashes", "observed_path_hashes", "combined_path_hash"},
    "SignalStatistics": set(),
}

RUNTIME_TYPE_CODES: dict[str, int] = {
    "NATIVE": 0, "JVM": 1, "NODE": 2, "PYTHON": 3, "DOTNET": 4, "GO": 5, "RUBY": 6, "UNKNOWN": 255,
}
