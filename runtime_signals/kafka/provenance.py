"""Who wrote a record: each agent's records carry proof of its own principal, which a
reader checks against a certificate authority it trusts.

Kafka authenticates producers but tells consumers nothing about who wrote a record, so an
agent id, a symbol table or a module map is only a claim; one compromised node could speak
for another, or publish a forged table before the real one. With record signing on:

* every agent has its own certificate (one principal per agent: its common name, the node's
  or the agent pod's name), issued by a CA the processor trusts (docs/deploy.md, "Record
  signing"); its agent id is ``<principal>/<run>``, and a record may only claim that id;
* at start the agent draws a random 32-byte session key and signs it, once, with its
  certificate's private key (the *session*);
* every record it produces carries the certificate, the session key, the session's
  signature and an HMAC-SHA256 of the record under the session key (headers below). The
  MAC covers the topic's role (``raw``, ``symbols``, ...: not its name, so a capture replayed
  under another prefix still verifies), the key and the value;
* a reader checks the certificate against its CA at the record's timestamp and the session
  signature once per session (cached, bounded), then one HMAC per record (~2 µs, against
  ~80 µs for a public-key signature per record).

The session key travels in the clear. That is sound under the deployment's ACLs: agents
may write the input topics but read none of them, and readers (the processor) may not
write them, so no one who can write a record can learn another agent's key. Whoever holds
both (an admin principal, or a raw capture file together with write access) could forge
records of that session, as they could delete or rewrite the topic anyway. A record
replayed as is verifies: a MAC proves who made a record, not that it is new.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

PRINCIPAL_HEADER = "signals.principal"        # the signer's common name, for people and reports
CERTIFICATE_HEADER = "signals.certificate"    # the agent's certificate, DER
SESSION_KEY_HEADER = "signals.session-key"    # 32 random bytes drawn at agent start
SESSION_SIGNATURE_HEADER = "signals.session-signature"  # the certificate's key over the session
MAC_HEADER = "signals.mac"                    # HMAC-SHA256 of the record under the session key
HEADERS = (PRINCIPAL_HEADER, CERTIFICATE_HEADER, SESSION_KEY_HEADER, SESSION_SIGNATURE_HEADER, MAC_HEADER)

SESSION_KEY_BYTES = 32
_SESSION_CONTEXT = b"runtime-signals/record-session/v1\0"
_RECORD_CONTEXT = b"runtime-signals/record-mac/v1\0"
# Sessions verified and remembered per reader: one per agent start, so a few per node.
DEFAULT_MAX_SESSIONS = 16_384
# A certificate in a header beyond this is not parsed (a real one is 0.5-2 KiB).
MAX_CERTIFICATE_BYTES = 16 * 1024

SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Headers = Sequence[tuple[str, bytes | None]]


class ProvenanceError(Exception):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def _session_message(principal: str, session_key: bytes) -> bytes:
    return _SESSION_CONTEXT + principal.encode() + b"\0" + session_key


def record_message(role: str, key: bytes | None, value: bytes | None) -> bytes:
    """What a record's MAC covers: the topic's role, then the key and the value, each
    length-prefixed (a missing key and an empty one differ)."""
    parts = [_RECORD_CONTEXT, role.encode(), b"\0"]
    for field in (key, value):
        parts.append(struct.pack(">q", -1 if field is None else len(field)))
        parts.append(field or b"")
    return b"".join(parts)


def common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and value else None


def speaks_for(principal: str, agent_id: str) -> bool:
    """Whether an agent id belongs to a principal: a signing agent names itself
    ``<principal>/<run>`` (agent/state.py), where the principal is its certificate's
    common name (the node's or the agent pod's name)."""
    return agent_id == principal or agent_id.startswith(principal + "/")


class RecordSigner:
    """An agent's signing side: the headers that prove each of its records is its own."""

    def __init__(self, certificate_pem: bytes, key_pem: bytes, roles: Mapping[str, str],
                 where: str = "the signing certificate") -> None:
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError as exc:
            raise ProvenanceError(f"{where}: not a PEM certificate: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ProvenanceError(f"{where}: the private key is not an unencrypted PEM key: {exc}") from exc
        if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise ProvenanceError(f"{where}: a {type(key).__name__} key; use Ed25519, ECDSA or RSA")
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, public) != \
                certificate.public_key().public_bytes(serialization.Encoding.DER, public):
            raise ProvenanceError(f"{where}: the private key does not belong to the certificate")
        principal = common_name(certificate)
        if principal is None or "/" in principal:
            raise ProvenanceError(f"{where}: the certificate's subject needs a common name without '/' "
                                  f"(the node's or agent pod's name), has {certificate.subject.rfc4514_string()!r}")
        self.principal = principal
        self._roles = dict(roles)
        self._session_key = os.urandom(SESSION_KEY_BYTES)
        signature = _sign(key, _session_message(principal, self._session_key))
        self._fixed = [(PRINCIPAL_HEADER, principal.encode()),
                       (CERTIFICATE_HEADER, certificate.public_bytes(serialization.Encoding.DER)),
                       (SESSION_KEY_HEADER, self._session_key), (SESSION_SIGNATURE_HEADER, signature)]

    @classmethod
    def from_files(cls, certificate: Path, key: Path, roles: Mapping[str, str]) -> RecordSigner:
        try:
            return cls(certificate.read_bytes(), key.read_bytes(), roles, where=f"{certificate} / {key}")
        except OSError as exc:
            raise ProvenanceError(f"cannot read {exc.filename}: {exc.strerror}") from exc

    def headers(self, topic: str, key: bytes | None, value: bytes) -> list[tuple[str, bytes]]:
        role = self._roles.get(topic, topic)
        return [*self._fixed, (MAC_HEADER, hmac.digest(self._session_key, record_message(role, key, value), "sha256"))]


def _sign(key: SigningKey, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a reader made of a record: its verified principal, or why there is none."""

    principal: str | None
    problem: str | None = None  # None: verified

    @property
    def verified(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class _Session:
    principal: str
    not_before_ms: int
    not_after_ms: int
    session_key: bytes


class RecordVerifier:
    """A reader's side: checks records against the CA certificates of one PEM bundle.
    Deterministic: a record's verdict depends on the record (its headers and its Kafka
    timestamp, against which certificates are checked) and the CA alone, so a replay
    verifies the same records."""

    def __init__(self, ca_pem: bytes, where: str = "the CA bundle", max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        try:
            authorities = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise ProvenanceError(f"{where}: no PEM certificate could be read: {exc}") from exc
        self._authorities: dict[bytes, list[x509.Certificate]] = {}
        for authority in authorities:
            try:
                constraints = authority.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                constraints = None
            if constraints is None or not constraints.ca:
                raise ProvenanceError(f"{where}: {authority.subject.rfc4514_string()!r} is not a CA certificate "
                                      f"(basicConstraints CA:TRUE missing)")
            self._authorities.setdefault(authority.subject.public_bytes(), []).append(authority)
        # By (certificate, session key, signature) as sent: a hit compares the bytes, so it
        # is never another session's verdict. Least recently used first.
        self._sessions: OrderedDict[tuple[bytes, bytes, bytes], _Session | str] = OrderedDict()
        self._max_sessions = max_sessions
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_file(cls, path: Path, max_sessions: int = DEFAULT_MAX_SESSIONS) -> RecordVerifier:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProvenanceError(f"cannot read the CA bundle {path}: {exc.strerror}") from exc
        return cls(data, where=str(path), max_sessions=max_sessions)

    def sizes(self) -> dict[str, int]:
        return {"provenance_sessions": len(self._sessions), "provenance_sessions_max": self._max_sessions}

    def verify(self, role: str, key: bytes | None, value: bytes | None, headers: Headers,
               timestamp_ms: int | None) -> Provenance:
        found: dict[str, bytes] = {}
        for name, data in headers:
            if name in HEADERS and data is not None:
                found.setdefault(name, data)
        claimed = found.get(PRINCIPAL_HEADER, b"").decode("utf-8", "replace")[:256] or None
        missing = [name for name in HEADERS[1:] if name not in found]
        if missing:
            return self._refuse("unsigned", claimed, f"no {', '.join(missing)} header: the record is not signed")
        session = self._session(found[CERTIFICATE_HEADER], found[SESSION_KEY_HEADER],
                                found[SESSION_SIGNATURE_HEADER])
        if isinstance(session, str):
            return self._refuse("bad_session", claimed, session)
        if timestamp_ms is None or not session.not_before_ms <= timestamp_ms <= session.not_after_ms:
            return self._refuse("certificate_not_valid", session.principal,
                                f"record time {timestamp_ms} ms is outside the validity of {session.principal!r}'s "
                                f"certificate ({session.not_before_ms}..{session.not_after_ms} ms)")
        expected = hmac.digest(session.session_key, record_message(role, key, value), "sha256")
        if not hmac.compare_digest(expected, found[MAC_HEADER]):
            return self._refuse("bad_mac", session.principal,
                                f"the MAC does not match the record (altered, or written for another topic than "
                                f"{role!r})")
        self.counts["verified"] += 1
        return Provenance(session.principal)

    def _refuse(self, reason: str, principal: str | None, problem: str) -> Provenance:
        self.counts[f"refused:{reason}"] += 1
        return Provenance(principal, problem)

    def _session(self, certificate_der: bytes, session_key: bytes, signature: bytes) -> _Session | str:
        cache_key = (signature, session_key, certificate_der)
        known = self._sessions.get(cache_key)
        if known is not None:
            self._sessions.move_to_end(cache_key)
            self.counts["session_cache_hits"] += 1
            return known
        self.counts["session_cache_misses"] += 1
        verdict = self._check_session(certificate_der, session_key, signature)
        self._sessions[cache_key] = verdict
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
            self.counts["sessions_evicted"] += 1
        return verdict

    def _check_session(self, certificate_der: bytes, session_key: bytes, signature: bytes) -> _Session | str:
        if len(certificate_der) > MAX_CERTIFICATE_BYTES:
            return f"certificate header of {len(certificate_der)} bytes (at most {MAX_CERTIFICATE_BYTES})"
        if len(session_key) != SESSION_KEY_BYTES:
            return f"session key of {len(session_key)} bytes, not {SESSION_KEY_BYTES}"
        try:
            certificate = x509.load_der_x509_certificate(certificate_der)
        except ValueError as exc:
            return f"the certificate header is not a DER certificate: {exc}"
        principal = common_name(certificate)
        if principal is None or "/" in principal:
            return f"certificate {certificate.subject.rfc4514_string()!r} has no usable common name"
        issuers = self._authorities.get(certificate.issuer.public_bytes(), [])
        if not any(_issued_by(certificate, issuer) for issuer in issuers):
            return (f"{principal!r}'s certificate was not issued by a trusted CA "
                    f"(issuer {certificate.issuer.rfc4514_string()!r})")
        try:
            _verify(certificate.public_key(), signature, _session_message(principal, session_key))
        except (InvalidSignature, ValueError):
            return f"the session signature is not {principal!r}'s"
        return _Session(principal, _ms(certificate.not_valid_before_utc), _ms(certificate.not_valid_after_utc),
                        session_key)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _verify(public_key: object, signature: bytes, message: bytes) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, message)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError(f"unsupported key type {type(public_key).__name__}")


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)
