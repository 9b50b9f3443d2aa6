"""What record signing costs (issue 12, runtime_signals/kafka/provenance.py), without a broker:
the agent's headers per record, the worker's check per record, a raw call record through the
engine with and without a CA (the floor), and the bytes the headers add to a batch before and
after zstd (the agent's compression). Certificates are made with openssl, as a CA would.

    python -m benchmarks.provenance [--records 20000] [--out benchmarks/provenance-results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backports import zstd

from runtime_signals.kafka.provenance import RecordSigner, RecordVerifier
from runtime_signals.processor.engine import Engine, EngineSettings
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames

NAMES = TopicNames()


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_node(directory: Path, node: str) -> tuple[Path, Path, Path]:
    """A CA and one node's ECDSA P-256 certificate (what cert-manager issues by default)."""
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench-ca",
             "-addext", "basicConstraints=critical,CA:TRUE")
    _openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "node.key", "-out", "node.csr", "-subj", f"/CN={node}")
    _openssl(directory, "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "node.pem", "-days", "2")
    return directory / "ca.pem", directory / "node.pem", directory / "node.key"


def call_values(count: int, registry: codec.SchemaRegistry, agent_id: str, at_us: int) -> list[bytes]:
    digest = "sha256:" + "ab" * 32
    return [codec.encode({
        "event_id": f"00000000-0000-4000-8000-{n:012d}", "container_id": f"c{n % 50}", "pid": 4242, "tid": 4242,
        "timestamp_ns": n, "symbol": "parse", "function_address": 0x401000, "stack_trace": [0x401200, 0x401000],
        "runtime_type": "NATIVE", "received_at_us": at_us, "observed_at_us": at_us - n, "agent_id": agent_id,
        "host": "bench-node", "observation_count": 1 + n % 7,
        "stack_frames": [{"address": 0x401200 + n % 64, "binary_digest": digest, "binary_offset": 0x1200 + n % 64,
                          "library": "/app/server"},
                         {"address": 0x401000, "binary_digest": digest, "binary_offset": 0x1000,
                          "library": "/app/server"}],
    }, "RuntimeCallEvent", registry) for n in range(count)]


def engine_seconds(values: list[bytes], headers: list[Any], verifier: RecordVerifier | None,
                   registry: codec.SchemaRegistry, now_us: int) -> float:
    engine = Engine(EngineSettings(WindowSpec(60_000, 5_000), "raw", symbol_wait_ms=0), NoSymbols(), registry,
                    provenance=verifier)
    engine.assign(0, None)
    started = time.perf_counter()
    for offset, (value, header) in enumerate(zip(values, headers, strict=True)):
        engine.handle(0, offset, b"c", value, header, now_us)
    seconds = time.perf_counter() - started
    assert engine.counts["events"] > 0 and not any(k.startswith("dlq:") for k in engine.counts), engine.counts
    return seconds


def measure(records: int) -> dict[str, Any]:
    registry = codec.SchemaRegistry.default()
    with tempfile.TemporaryDirectory() as work:
        ca, certificate, key = make_node(Path(work), "bench-node")
        signer = RecordSigner.from_files(certificate, key, NAMES.roles())
        now_us = int(time.time() * 1e6)
        values = call_values(records, registry, "bench-node/1", now_us)

        started = time.perf_counter()
        headers = [tuple(signer.headers(NAMES.raw, b"c", v)) for v in values]
        sign_s = time.perf_counter() - started

        verifier = RecordVerifier.from_file(ca)
        started = time.perf_counter()
        for value, header in zip(values, headers, strict=True):
            assert verifier.verify("raw", b"c", value, header, now_us // 1000).verified
        verify_s = time.perf_counter() - started

        floor_s = engine_seconds(values, [()] * records, None, registry, now_us)
        signed_s = engine_seconds(values, headers, RecordVerifier.from_file(ca), registry, now_us)

    header_bytes = sum(len(k) + len(v) for k, v in headers[0])
    batch = values[:1000]
    plain = b"".join(batch)
    with_headers = b"".join(v + b"".join(k.encode() + h for k, h in hs) for v, hs in zip(batch, headers, strict=False))
    return {
        "records": records,
        "sign_us_per_record": round(sign_s / records * 1e6, 2),
        "verify_us_per_record": round(verify_s / records * 1e6, 2),
        "engine_us_per_record_unsigned": round(floor_s / records * 1e6, 2),
        "engine_us_per_record_signed": round(signed_s / records * 1e6, 2),
        "engine_ratio_signed_to_unsigned": round(signed_s / floor_s, 3),
        "header_bytes_per_record": header_bytes,
        "record_bytes": len(values[0]),
        "batch_1000_zstd_bytes_unsigned": len(zstd.compress(plain)),
        "batch_1000_zstd_bytes_signed": len(zstd.compress(with_headers)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.provenance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    row = measure(args.records)
    for name, value in row.items():
        print(f"{name}: {value}")
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.node(), "python": sys.version.split()[0],
                                        "figures": row}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
