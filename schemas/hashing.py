"""Canonical hashes that identify functions, stacks and call paths across nodes.

The recipe is specified in schemas/HASHING.md, precisely enough to reimplement
in another language; hash-vectors.json holds the cases every implementation
must reproduce. Keep this module a literal transcription of that document:
a change here without a new domain version silently breaks joins with data
hashed earlier or elsewhere.

Two versions of the recipe live side by side: v1 (``node_hash``, ``callstack_hash``,
``path_hash``, ``combined_path_hash``), kept so that stored hashes stay checkable,
and v2 (the ``*_v2`` functions with ``module_identity``, ``canonical_purl`` and
``unresolved_signature``), which the processor writes. A record names its version in
``hash_recipe``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

from packageurl import PackageURL

from runtime_signals.schemas.errors import HashInputError

HASH_PREFIX = "sha256:"
UNKNOWN_PURL = "pkg:generic/unknown"
UNKNOWN_SIGNATURE = "<unknown>"
UNKNOWN_BINARY = "unknown"

NODE_DOMAIN = "runtime-signals/node/v1"
CALLSTACK_DOMAIN = "runtime-signals/callstack/v1"
PATH_DOMAIN = "runtime-signals/path/v1"
COMBINED_DOMAIN = "runtime-signals/combined/v1"

RECIPE_V1 = "runtime-signals/v1"
RECIPE_V2 = "runtime-signals/v2"
NODE_DOMAIN_V2 = "runtime-signals/node/v2"
CALLSTACK_DOMAIN_V2 = "runtime-signals/callstack/v2"
PATH_DOMAIN_V2 = "runtime-signals/path/v2"
COMBINED_DOMAIN_V2 = "runtime-signals/combined/v2"
# v2: the signature of a frame that is in no digested file and has no name.
UNRESOLVED_SIGNATURE = "<unresolved>"
# v2: the only purl qualifier that names code (an unpackaged binary by its content).
CHECKSUM_QUALIFIER = "checksum"

# Exactly the Unicode White_Space property (25 code points). Not Python's \s,
# which adds U+001C..U+001F and so would disagree with other languages.
_WHITESPACE = "\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WHITESPACE_RUN = re.compile(f"[{_WHITESPACE}]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CANONICAL_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_FRAME_IDENTITY = re.compile(r"(?:sha256:[0-9a-f]{64}|unknown)\+0x(?:0|[1-9a-f][0-9a-f]*)")
_U64_SPAN = 1 << 64


def normalize_text(value: str) -> str:
    """NFC, then every run of White_Space characters becomes one space, then the
    leading and trailing space goes. The result never contains a line feed, which
    is what makes line feeds safe as field terminators."""
    return _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", value)).strip(" ")


def normalize_purl(purl: str | None) -> str:
    """The purl as it enters node_hash (HASHING.md, "Normalising a purl")."""
    if purl is None:
        return UNKNOWN_PURL
    text = unicodedata.normalize("NFC", purl)
    # Qualifiers (?arch=...) and subpath (#...) say where an artifact came from,
    # not which code it is; scanners and agents often disagree on them.
    for marker in ("?", "#"):
        text = text.partition(marker)[0]
    text = normalize_text(text)
    if text[:4].translate(_ASCII_LOWER) == "pkg:":
        package_type, slash, rest = text[4:].lstrip("/").partition("/")
        text = "pkg:" + package_type.translate(_ASCII_LOWER) + slash + rest
    return text or UNKNOWN_PURL


def normalize_signature(signature: str | None) -> str:
    """The function signature as it enters node_hash (HASHING.md, "Normalising a signature")."""
    if signature is None:
        return UNKNOWN_SIGNATURE
    return normalize_text(signature) or UNKNOWN_SIGNATURE


def node_hash(purl: str | None, signature: str | None) -> str:
    """Identity of one function: its package and its signature. For a frame that
    could not be symbolized, pass its ``frame_identity`` as the signature."""
    return _digest(NODE_DOMAIN, (normalize_purl(purl), normalize_signature(signature)))


def frame_identity(binary_digest: str | None, binary_offset: int | None, address: int) -> str:
    """Stable name of one stack frame: ``<binary_digest>+0x<offset>`` when the frame
    was located in a digested file, else ``unknown+0x<address>``.

    Offsets and addresses may be given as Avro longs: negative values are read as
    the unsigned 64-bit number with the same bits.
    """
    digest = None
    if binary_digest is not None:
        digest = normalize_text(binary_digest).translate(_ASCII_LOWER)
    if digest and binary_offset is not None:
        if not _CANONICAL_HASH.fullmatch(digest):
            raise HashInputError(
                f"binary_digest {binary_digest!r} is not 'sha256:' followed by 64 hex digits"
            )
        return f"{digest}+0x{_unsigned64('binary_offset', binary_offset):x}"
    return f"{UNKNOWN_BINARY}+0x{_unsigned64('address', address):x}"


def callstack_hash(frame_identities: Sequence[str]) -> str:
    """Identity of a stack by binary location, frames ordered bottom (outermost
    caller) to top (probed function)."""
    for index, identity in enumerate(frame_identities):
        if not isinstance(identity, str) or not _FRAME_IDENTITY.fullmatch(identity):
            raise HashInputError(
                f"frame {index}: {identity!r} is not a frame identity; "
                f"build it with frame_identity()"
            )
    return _digest(CALLSTACK_DOMAIN, frame_identities)


def path_hash(node_hashes: Sequence[str]) -> str:
    """Identity of a call path: its node hashes from entry point to probed function."""
    _check_hashes("node hash", node_hashes)
    return _digest(PATH_DOMAIN, node_hashes)


def combined_path_hash(path_hashes: Iterable[str]) -> str:
    """Identity of a set of paths: order and repeats do not matter; the empty set
    has a hash of its own."""
    unique = sorted(set(path_hashes))
    _check_hashes("path hash", unique)
    return _digest(COMBINED_DOMAIN, unique)


def _digest(domain: str, fields: Iterable[str]) -> str:
    message = domain + "\n" + "".join(field + "\n" for field in fields)
    try:
        data = message.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
        raise HashInputError(f"{domain}: input is not valid Unicode text: {exc}") from exc
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()


def _check_hashes(kind: str, hashes: Sequence[str]) -> None:
    for index, value in enumerate(hashes):
        if not isinstance(value, str) or not _CANONICAL_HASH.fullmatch(value):
            raise HashInputError(
                f"{kind} {index}: {value!r} is not 'sha256:' followed by 64 lowercase hex digits"
            )


def _unsigned64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HashInputError(f"{name} must be an integer, got {value!r}")
    if not -(1 << 63) <= value < _U64_SPAN:
        raise HashInputError(f"{name} {value} does not fit in 64 bits")
    return value % _U64_SPAN


# --- Recipe v2 (HASHING.md, part II) -----------------------------------------------------

# canonical_purl and module_identity are pure functions of their text, and parsing a purl
# costs ~130 µs: every frame of every emitted path asks again for the few thousand modules a
# fleet runs (40 % of the processor's time on the fleet recording). Errors are not cached.
PURL_CACHE_ENTRIES = 65_536
NODE_HASH_CACHE_ENTRIES = 32_768  # about 300 bytes each


def cache_sizes() -> dict[str, int]:
    """Entries in this module's caches, for /metrics."""
    return {"canonical_purls": canonical_purl.cache_info().currsize,
            "module_identities": module_identity.cache_info().currsize,
            "node_hashes": node_hash_v2.cache_info().currsize}



@lru_cache(maxsize=PURL_CACHE_ENTRIES)
def canonical_purl(purl: str | None) -> str:
    """The purl as it enters node_hash_v2 (HASHING.md §11): the purl specification's
    canonical form as packageurl-python 0.17 writes it, with every qualifier but
    ``checksum`` and the subpath dropped. Text that is not a purl is only normalised."""
    if purl is None:
        return UNKNOWN_PURL
    text = normalize_text(purl)
    if text[:4].translate(_ASCII_LOWER) == "pkg:":
        text = "pkg:" + text[4:].lstrip("/")
    if not text:
        return UNKNOWN_PURL
    try:
        parsed = PackageURL.from_string(text)
    except ValueError:
        return text  # not a purl: hashed as normalised text (HASHING.md §11, step 3)
    qualifiers = parsed.qualifiers if isinstance(parsed.qualifiers, dict) else {}
    kept = {CHECKSUM_QUALIFIER: qualifiers[CHECKSUM_QUALIFIER].translate(_ASCII_LOWER)} \
        if qualifiers.get(CHECKSUM_QUALIFIER) else {}
    canonical = PackageURL(parsed.type, parsed.namespace, parsed.name, parsed.version, kept, None)
    return str(canonical.to_string())


@lru_cache(maxsize=PURL_CACHE_ENTRIES)
def module_identity(purl: str | None, binary_digest: str | None, library: str | None) -> str:
    """The purl of the module a frame is in (HASHING.md §12): its package's, else
    ``pkg:generic/NAME?checksum=sha256:HEX`` for a digested file no package claims,
    else ``pkg:generic/unknown`` (anonymous or JIT memory, a file not read)."""
    if purl is not None and normalize_text(purl):
        return canonical_purl(purl)
    digest = _checked_digest(binary_digest)
    if digest is None:
        return UNKNOWN_PURL
    name = normalize_text((library or "").rpartition("/")[2]) or "unknown"
    return canonical_purl(PackageURL("generic", None, name, None, {CHECKSUM_QUALIFIER: digest}).to_string())


def unresolved_signature(binary_digest: str | None, binary_offset: int | None) -> str:
    """What names a frame no symbol table names (HASHING.md §13): its place in its file,
    ``sha256:HEX+0xOFFSET``, else ``<unresolved>``: a frame in no digested file has no
    address-independent name."""
    digest = _checked_digest(binary_digest)
    if digest is None or binary_offset is None:
        return UNRESOLVED_SIGNATURE
    return f"{digest}+0x{_unsigned64('binary_offset', binary_offset):x}"


@lru_cache(maxsize=NODE_HASH_CACHE_ENTRIES)
def node_hash_v2(module_purl: str | None, signature: str | None) -> str:
    """Identity of one function (v2): its module's canonical purl and its signature. Cached:
    every emitted path hashes each of its frames, and a fleet's paths share their functions."""
    return _digest(NODE_DOMAIN_V2, (canonical_purl(module_purl), normalize_signature(signature)))


def callstack_hash_v2(frame_identities: Sequence[str]) -> str:
    """callstack_hash under the v2 domain (frame identities as in v1, §4)."""
    callstack_hash(frame_identities)  # the same input checks
    return _digest(CALLSTACK_DOMAIN_V2, frame_identities)


def path_hash_v2(node_hashes: Sequence[str]) -> str:
    _check_hashes("node hash", node_hashes)
    return _digest(PATH_DOMAIN_V2, node_hashes)


def combined_path_hash_v2(path_hashes: Iterable[str]) -> str:
    unique = sorted(set(path_hashes))
    _check_hashes("path hash", unique)
    return _digest(COMBINED_DOMAIN_V2, unique)


def _checked_digest(binary_digest: str | None) -> str | None:
    if binary_digest is None:
        return None
    digest = normalize_text(binary_digest).translate(_ASCII_LOWER)
    if not digest:
        return None
    if not _CANONICAL_HASH.fullmatch(digest):
        raise HashInputError(f"binary_digest {binary_digest!r} is not 'sha256:' followed by 64 hex digits")
    return digest
