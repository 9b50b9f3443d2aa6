"""Record signing (runtime_signals.kafka.provenance) with certificates made by openssl:
what a reader accepts, and every way a writer without the right key is refused."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from runtime_signals.kafka.provenance import (
    MAC_HEADER,
    ProvenanceError,
    RecordSigner,
    RecordVerifier,
    speaks_for,
)
from runtime_signals.processor.engine import Engine, EngineSettings, Output
from runtime_signals.processor.symbolize import NoSymbols
from runtime_signals.processor.windows import WindowSpec
from runtime_signals.schemas import codec
from runtime_signals.schemas.topics import TopicNames
from tests.processor.raw_records import REGISTRY, call_event, encode_call, encode_watermark
from tests.secure_kafka import issue_leaf, make_ca

NODE = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
NAMES = TopicNames()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    issue_leaf(directory, "node-1", "/CN=node-1", NODE)
    issue_leaf(directory, "node-9", "/CN=node-9", NODE)
    issue_leaf(directory, "impostor", "/CN=node-1", NODE, ca="rogue-ca")
    return directory


def signer(pki: Path, name: str) -> RecordSigner:
    return RecordSigner.from_files(pki / f"{name}.pem", pki / f"{name}.key", NAMES.roles())


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_signed_record_verifies_as_its_nodes_and_under_any_prefix(pki: Path) -> None:
    verifier = RecordVerifier.from_file(pki / "ca.pem")
    node = signer(pki, "node-1")
    assert node.principal == "node-1"
    headers = node.headers(NAMES.raw, b"c1", b"value")
    found = verifier.verify("raw", b"c1", b"value", headers, now_ms())
    assert found.verified and found.principal == "node-1"
    prefixed_names = NAMES.with_prefix("team-a")
    prefixed = RecordSigner.from_files(pki / "node-1.pem", pki / "node-1.key", prefixed_names.roles())
    assert verifier.verify("raw", b"c1", b"v", prefixed.headers(prefixed_names.raw, b"c1", b"v"), now_ms()).verified
    for _ in range(3):  # the session is checked once, the MAC every time
        verifier.verify("raw", b"c1", b"value", headers, now_ms())
    assert verifier.counts["session_cache_misses"] == 2 and verifier.counts["verified"] == 5


def test_every_forgery_is_refused_with_its_reason(pki: Path) -> None:
    verifier = RecordVerifier.from_file(pki / "ca.pem")
    headers = signer(pki, "node-1").headers(NAMES.symbols, b"k", b"table")
    at = now_ms()
    cases = {
        "unsigned": verifier.verify("symbols", b"k", b"table", [], at),
        "altered value": verifier.verify("symbols", b"k", b"tab1e", headers, at),
        "altered key": verifier.verify("symbols", b"K", b"table", headers, at),
        "another topic": verifier.verify("modules", b"k", b"table", headers, at),
        "another MAC": verifier.verify("symbols", b"k", b"table",
                                       [(n, v if n != MAC_HEADER else b"\0" * 32) for n, v in headers], at),
        "rogue CA": verifier.verify("symbols", b"k", b"table",
                                    signer(pki, "impostor").headers(NAMES.symbols, b"k", b"table"), at),
        "expired": verifier.verify("symbols", b"k", b"table", headers, at + 10 * 86_400_000),
        "no time": verifier.verify("symbols", b"k", b"table", headers, None),
    }
    assert {name: found.verified for name, found in cases.items()} == dict.fromkeys(cases, False)
    assert "not signed" in (cases["unsigned"].problem or "")
    assert "not issued by a trusted CA" in (cases["rogue CA"].problem or "")
    assert "MAC does not match" in (cases["another topic"].problem or "")
    assert cases["expired"].principal == "node-1" and "outside the validity" in (cases["expired"].problem or "")

    # A session key lifted from one node's records, signed again by another node's
    # certificate, is that other node's session: it cannot speak for node-1.
    node_9 = signer(pki, "node-9").headers(NAMES.symbols, b"k", b"table")
    swapped = [(n, v) for n, v in node_9 if n != "signals.session-key"] + \
        [(n, v) for n, v in headers if n == "signals.session-key"]
    assert not verifier.verify("symbols", b"k", b"table", swapped, at).verified


def test_an_agent_id_belongs_to_its_nodes_principal_only() -> None:
    assert speaks_for("node-1", "node-1/5c1e0a9b2f3d") and speaks_for("node-1", "node-1")
    assert not speaks_for("node-1", "node-10/5c1e0a9b2f3d") and not speaks_for("node-9", "node-1/5c1e0a9b2f3d")


def test_unusable_files_are_named(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ProvenanceError, match="does not belong to the certificate"):
        RecordSigner.from_files(pki / "node-1.pem", pki / "node-9.key", {})
    with pytest.raises(ProvenanceError, match="is not a CA certificate"):
        RecordVerifier.from_file(pki / "node-1.pem")
    with pytest.raises(ProvenanceError, match=re.escape(str(tmp_path / "none.pem"))):
        RecordVerifier.from_file(tmp_path / "none.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ProvenanceError, match=r"junk\.pem"):
        RecordSigner.from_files(tmp_path / "junk.pem", pki / "node-1.key", {})


def test_sessions_remembered_are_bounded(pki: Path) -> None:
    verifier = RecordVerifier.from_file(pki / "ca.pem", max_sessions=2)
    for _ in range(4):  # every agent start is a new session
        node = signer(pki, "node-1")
        assert verifier.verify("raw", None, b"v", node.headers(NAMES.raw, None, b"v"), now_ms()).verified
    assert verifier.sizes()["provenance_sessions"] == 2 and verifier.counts["sessions_evicted"] == 2


def test_the_engine_takes_only_what_an_agent_signed_for_itself(pki: Path) -> None:
    """Raw records against the engine with a CA: a node's own calls and watermark count; an
    unsigned call, node-9 speaking as node-1, node-1 speaking as node-10, and node-1's
    record altered on the way go to
    the dead-letter topic with their reasons, and move no window."""
    engine = Engine(EngineSettings(WindowSpec(1000), raw_topic="raw", symbol_wait_ms=0), NoSymbols(), REGISTRY,
                    provenance=RecordVerifier.from_file(pki / "ca.pem"))
    engine.assign(0, None)
    node_1, node_9 = signer(pki, "node-1"), signer(pki, "node-9")
    now_us = now_ms() * 1000
    t0_us = now_us // 1_000_000 * 1_000_000 - 5_000_000
    outputs: list[Output] = []

    offsets = iter(range(100))

    def send(value: bytes, key: bytes, by: RecordSigner | None, signed: bytes | None = None) -> None:
        headers = tuple(by.headers(NAMES.raw, key, signed or value)) if by is not None else ()
        outputs.extend(engine.handle(0, next(offsets), key, value, headers, now_us))

    own = "node-1/5c1e0a9b2f3d"
    send(encode_call(call_event("c1", t0_us, count=3, agent_id=own, host="node-1")), b"c1", node_1)
    send(encode_call(call_event("c1", t0_us, count=40, agent_id=own, host="node-1")), b"c1", None)
    send(encode_call(call_event("c1", t0_us, count=50, agent_id=own, host="node-1")), b"c1", node_9)
    send(encode_call(call_event("c1", t0_us, count=60, agent_id="node-10/1", host="node-1")), b"c1", node_1)
    send(encode_call(call_event("c1", t0_us, count=70, agent_id=own, host="node-1")), b"c1", node_1,
         signed=encode_call(call_event("c1", t0_us, count=7, agent_id=own, host="node-1")))  # altered on the way
    # node-9 tries to close every window early for node-1 (and with it, everyone).
    send(encode_watermark(t0_us + 4_000_000, 9, own), own.encode(), node_9)
    assert not [o for o in outputs if o.kind == "summary"]
    send(encode_watermark(t0_us + 4_000_000, 1, own), own.encode(), node_1)

    reasons = [dict(o.headers)["signals.dlq.reason"].decode() for o in outputs if o.kind == "dlq"]
    assert reasons == ["unauthenticated", "impersonation", "impersonation", "unauthenticated", "impersonation"]
    (summary,) = [codec.decode(o.value, REGISTRY).record for o in outputs if o.kind == "summary"]
    assert summary["total_events"] == 3
