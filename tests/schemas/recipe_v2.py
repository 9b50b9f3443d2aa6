"""A second implementation of schemas/HASHING.md part II (recipe v2), written from the text
alone: no import of schemas.hashing nor of packageurl. The vectors test and the end-to-end
recomputation test check the project's hashes against it, so a rule that the code and the
document disagree on shows up as a mismatch rather than as a regenerated vector."""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any
from urllib.parse import unquote

WHITE_SPACE = frozenset(
    [9, 10, 11, 12, 13, 32, 133, 160, 5760, *list(range(8192, 8203)), 8232, 8233, 8239, 8287, 12288]
)
UNKNOWN = "pkg:generic/unknown"
KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/")
LOWER_NAMESPACE = {"bitbucket", "github", "pypi", "gitlab", "composer", "luarocks", "qpkg", "alpm", "apk", "hex"}
LOWER_NAME = {"bitbucket", "github", "pypi", "gitlab", "composer", "luarocks", "oci", "npm", "alpm", "apk",
              "bitnami", "hex", "pub"}


def _text(value: str) -> str:
    """Section 2: NFC, each White_Space run to one space, one leading and one trailing space removed."""
    out: list[str] = []
    for char in unicodedata.normalize("NFC", value):
        if ord(char) in WHITE_SPACE:
            if not out or out[-1] != " ":
                out.append(" ")
        else:
            out.append(char)
    joined = "".join(out)
    joined = joined.removeprefix(" ")
    joined = joined.removesuffix(" ")
    return joined


def ascii_lower(value: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in value)


def encode(value: str) -> str:
    """§11 step 7: UTF-8 bytes, uppercase hex, all but letters, digits and - . _ ~ : /."""
    return "".join(chr(b) if chr(b) in KEEP and b < 128 else f"%{b:02X}" for b in value.encode("utf-8"))


def canonical(purl: str | None) -> str:
    """§11."""
    if purl is None:
        return UNKNOWN
    value = _text(purl)
    if ascii_lower(value[:4]) == "pkg:":
        rest = value[4:]
        while rest.startswith("/"):
            rest = rest[1:]
        value = "pkg:" + rest
    if not value:
        return UNKNOWN
    parsed = _parse(value)
    if parsed is None:
        return value
    kind, namespace, name, version, checksum = parsed
    kind = ascii_lower(kind)
    segments = [s for s in namespace.split("/") if s.strip()] if namespace else []
    if kind in LOWER_NAMESPACE:
        segments = [s.lower() for s in segments]
    encoded_name = encode(name)
    if kind in LOWER_NAME:
        encoded_name = encoded_name.lower()
    if kind == "pypi" or kind == "hackage":
        encoded_name = encoded_name.replace("_", "-")
    if kind == "pub":
        encoded_name = "".join(c if "a" <= c <= "z" or "0" <= c <= "9" else "_" for c in encoded_name.lower())
    if version and kind in ("huggingface", "oci"):
        version = version.lower()
    out = "pkg:" + kind + "/" + "".join(encode(s) + "/" for s in segments) + encoded_name
    if version:
        out += "@" + encode(version)
    if checksum:
        out += "?checksum=" + encode(ascii_lower(checksum))
    return out


def _parse(value: str) -> tuple[str, str, str, str, str] | None:
    """pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS#SUBPATH, components percent-decoded; the
    subpath and every qualifier but checksum dropped (§11 step 5)."""
    if not value.startswith("pkg:"):
        return None
    body = value[4:].split("#", 1)[0]
    body, _, query = body.partition("?")
    checksum = ""
    for pair in query.split("&") if query else []:
        key, _, item = pair.partition("=")
        if key.strip().lower() == "checksum":
            checksum = unquote(item)
    kind, slash, rest = body.strip("/").partition("/")
    if not slash or not kind:
        return None
    rest = rest.strip("/")
    at = rest.rfind("@")
    version = ""
    if at >= 0:
        rest, version = rest[:at], unquote(rest[at + 1:])
    namespace, _, name = rest.rpartition("/")
    name = unquote(name).strip().strip("/")
    if not name:
        return None
    return kind, "/".join(unquote(s) for s in namespace.split("/")) if namespace else "", name, version.strip(), checksum


def module(purl: str | None, digest: str | None, library: str | None) -> str:
    """§12."""
    if purl is not None and _text(purl):
        return canonical(purl)
    if digest:
        name = _text((library or "").split("/")[-1]) or "unknown"
        return canonical(f"pkg:generic/{encode(name)}?checksum={ascii_lower(digest)}")
    return UNKNOWN


def signature(resolved: str | None, digest: str | None, offset: int | None) -> str:
    """§13 (and section 3 for a named frame)."""
    if resolved is not None:
        return _text(resolved) or "<unknown>"
    if digest and offset is not None:
        return f"{ascii_lower(digest)}+0x{offset % (1 << 64):x}"
    return "<unresolved>"


def sha(domain: str, fields: list[str]) -> str:
    message = domain + "\n" + "".join(f + "\n" for f in fields)
    return "sha256:" + hashlib.sha256(message.encode("utf-8")).hexdigest()


def node(purl: str | None, sig: str | None) -> str:
    return sha("runtime-signals/node/v2", [canonical(purl), _text(sig) if sig is not None and _text(sig) else "<unknown>"])


def identity(digest: str | None, offset: int | None, address: int | None) -> str:
    if digest and offset is not None:
        return f"{ascii_lower(digest.strip())}+0x{offset % (1 << 64):x}"
    assert address is not None, "a frame without digest and offset needs its address"
    return f"unknown+0x{address % (1 << 64):x}"


def callstack(identities: list[str]) -> str:
    return sha("runtime-signals/callstack/v2", identities)


def path(node_hashes: list[str]) -> str:
    return sha("runtime-signals/path/v2", node_hashes)


def combined(path_hashes: list[str]) -> str:
    return sha("runtime-signals/combined/v2", sorted(set(path_hashes)))


def recompute_path(record: dict[str, Any]) -> dict[str, Any]:
    """§15: every hash of one published ObservedCallPath, from its own fields."""
    count = len(record["symbols"])
    nodes = [node(record["purls"][i], record["function_signatures"][i]) for i in range(count)]
    addresses = record["addresses"] or [None] * count
    identities = [identity(record["binary_digests"][i], record["binary_offsets"][i], addresses[i])
                  for i in range(count)]
    return {"node_hashes": nodes, "path_hash": path(nodes), "callstack_hash": callstack(identities)}
