"""Per-agent principals for real: an agent signing with its node's certificate, a processor
worker trusting only that CA, a real broker, a real probe on a real process. Forgers write
first: an unsigned table renaming the workload's functions and a module map giving it a
package, an unsigned call, and another node's valid certificate speaking for this agent.
None of them counts; each is refused with its reason and its writer."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from runtime_signals.agent.symtab import read_symbol_table
from runtime_signals.devtools.demo import create_topics, wait_for_summaries
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.kafka.provenance import RecordSigner
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.bpf_support import bpf_unavailable_reason
from tests.processor.harness import free_port, read_all, scrape, wait_until
from tests.processor.raw_records import call_event, module_map
from tests.secure_kafka import issue_leaf, make_ca

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

UPLOADS = 7
PREVIEWS = 5
NODE = "sig-node-1"
REGISTRY = codec.SchemaRegistry.default()
LEAF = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"


def test_only_what_the_node_signed_counts_and_forgeries_are_refused_by_name(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "ca")
    issue_leaf(pki, NODE, f"/CN={NODE}", LEAF)
    issue_leaf(pki, "sig-node-9", "/CN=sig-node-9", LEAF)
    workload = build_workload(tmp_path / "workload")
    digest = "sha256:" + hashlib.sha256(workload.read_bytes()).hexdigest()
    prefix = f"signed-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)

    # The forgers write before the real agent starts: first come would be first served.
    table = read_symbol_table(workload)
    forged_table = {"binary_digest": digest, "build_id": table.build_id, "source": table.source, "chunk_index": 0,
                    "chunk_count": 1, "symbol_count": len(table.symbols),
                    "symbols": [{"file_offset": s.file_offset, "size_bytes": s.size_bytes,
                                 "name": "alias_z" if s.name == "handle_upload" else s.name} for s in table.symbols]}
    forged_map = module_map()
    forged_map["modules"][0].update(binary_digest=digest, purl="pkg:deb/debian/evil@0")
    forged_call = call_event("anything", 1, count=1000)
    node_9 = RecordSigner.from_files(pki / "sig-node-9.pem", pki / "sig-node-9.key", names.roles())
    as_node_1 = codec.encode({"agent_id": f"{NODE}/forged", "host": NODE, "watermark_us": 2**62, "sequence": 2**62},
                             "AgentWatermark", REGISTRY)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(names.symbols, codec.encode(forged_table, "SymbolTable", REGISTRY), f"{digest}/0".encode())
    producer.produce(names.modules, codec.encode(forged_map, "ModuleMap", REGISTRY), b"forged")
    producer.produce(names.raw, codec.encode(forged_call, "RuntimeCallEvent", REGISTRY), b"anything")
    producer.produce(names.raw, as_node_1, b"x", headers=node_9.headers(names.raw, b"x", as_node_1))
    assert producer.flush(30) == 0

    env = {"SIGNALS_AGENT__SIGNING_CERTIFICATE": str(pki / f"{NODE}.pem"),
           "SIGNALS_AGENT__SIGNING_KEY": str(pki / f"{NODE}.key"),
           "SIGNALS_PROCESSOR__AGENT_CA_FILE": str(pki / "ca.pem")}
    with LocalPipeline(kafka_bootstrap, [f"{workload}:{PROBED_SYMBOL}"], topic_prefix=prefix, window_ms=1000,
                       lateness_ms=300, log_dir=tmp_path, processor_app_id=f"{prefix}processor",
                       env=env) as pipeline:
        port = free_port()
        pipeline.start_processor(extra_args=["--metrics-port", str(port)])
        pipeline.start_agent()
        subprocess.run([str(workload), str(UPLOADS), str(PREVIEWS)], check=True, stdout=subprocess.DEVNULL)
        summaries = wait_for_summaries(kafka_bootstrap, names.summaries, UPLOADS + PREVIEWS, timeout_s=90)
        assert pipeline.stop_agent() == 0, pipeline.log("agent")
        metrics = wait_until(lambda: (m := scrape(port)).get(
            'runtime_signals_processor_dlq_records_total{reason="impersonation"}') == 1 and m, 20, "metrics")
        pipeline.stop_processor()
    logs = f"agent:\n{pipeline.log('agent')[-3000:]}\nprocessor:\n{pipeline.log('processor')[-4000:]}"
    assert f"records signed as {NODE}" in pipeline.log("agent"), logs

    # Exactly the node's own calls, named from its own table, with no forged package.
    assert sum(s["total_events"] for s in summaries) == UPLOADS + PREVIEWS, logs
    per_tail: Counter[tuple[str, ...]] = Counter()
    for summary in summaries:
        for path in summary["call_paths"]:
            per_tail[tuple(path["symbols"][-4:])] += path["observation_count"]
            assert "pkg:deb/debian/evil@0" not in path["purls"], path["purls"]
    assert per_tail[("main", "handle_upload", "decode_image", PROBED_SYMBOL)] == UPLOADS, (per_tail, logs)

    # Each forgery is refused, with the reason and the writer it claimed or proved.
    reasons = sorted(r.headers["signals.dlq.reason"].decode() for r in read_all(kafka_bootstrap, names.dlq))
    assert reasons == ["impersonation", "unauthenticated"], logs
    processor_log = pipeline.log("processor")
    assert f"unauthenticated conflict for {digest}" in processor_log, logs
    assert "SymbolTable: no signals.certificate" in processor_log and "ModuleMap: no signals" in processor_log
    prefix = "runtime_signals_processor_"
    assert metrics[prefix + "unauthenticated_tables_total"] == 2
    assert metrics[prefix + 'record_signatures_total{outcome="unsigned"}'] == 3  # the call, the table, the map
    assert metrics[prefix + 'record_signatures_total{outcome="verified"}'] >= 4  # table, map, calls, watermarks
    assert metrics[prefix + 'cache_entries{cache="provenance_sessions_raw"}'] == 2  # node-1's and node-9's
