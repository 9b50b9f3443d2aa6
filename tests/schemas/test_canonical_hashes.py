"""hashing.py, HASHING.md and hash-vectors.json agree with one another.

The vectors are checked twice: against schemas.hashing, and against a second
implementation written here from HASHING.md alone (different code, same text), so a
vector file regenerated from buggy code cannot pass unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.schemas import hashing
from runtime_signals.schemas.errors import HashInputError

SCHEMA_DIR = Path(hashing.__file__).resolve().parent
VECTORS: dict[str, Any] = json.loads((SCHEMA_DIR / "hash-vectors.json").read_text("utf-8"))
HASHING_MD = (SCHEMA_DIR / "HASHING.md").read_text("utf-8")
FUNCTIONS = ["node_hash", "frame_identity", "callstack_hash", "path_hash", "combined_path_hash"]


# --- A second implementation, transcribed from HASHING.md -------------------------------

WHITE_SPACE = (
    [9, 10, 11, 12, 13, 32, 133, 160, 5760, *list(range(8192, 8203)), 8232, 8233, 8239, 8287, 12288]
)


def md_text(value: str) -> str:
    out: list[str] = []
    for char in unicodedata.normalize("NFC", value):
        if ord(char) in WHITE_SPACE:
            if not out or out[-1] != " ":
                out.append(" ")
        else:
            out.append(char)
    text = "".join(out)
    if text.startswith(" "):
        text = text[1:]
    if text.endswith(" "):
        text = text[:-1]
    return text


def md_purl(purl: str | None) -> str:
    if purl is None:
        return "pkg:generic/unknown"
    text = unicodedata.normalize("NFC", purl)
    cuts = [i for i in (text.find("?"), text.find("#")) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    text = md_text(text)
    if text[:4].lower() == "pkg:" and text[:4].isascii():
        rest = text[4:]
        while rest.startswith("/"):
            rest = rest[1:]
        slash = rest.find("/")
        kind, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        kind = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in kind)
        text = "pkg:" + kind + tail
    return text if text else "pkg:generic/unknown"


def md_hash(domain: str, fields: list[str]) -> str:
    message = domain + "\n"
    for field in fields:
        message += field + "\n"
    return "sha256:" + hashlib.sha256(message.encode("utf-8")).hexdigest()


def md_node_hash(purl: str | None, signature: str | None) -> str:
    s = "<unknown>" if signature is None else (md_text(signature) or "<unknown>")
    return md_hash("runtime-signals/node/v1", [md_purl(purl), s])


def md_frame_identity(digest: str | None, offset: int | None, address: int) -> str:
    d = "" if digest is None else md_text(digest).lower()
    if d and offset is not None:
        return d + "+0x" + format(offset & (2**64 - 1), "x")
    return "unknown+0x" + format(address & (2**64 - 1), "x")


MD_IMPLEMENTATION = {
    "node_hash": lambda c: md_node_hash(c["purl"], c["signature"]),
    "frame_identity": lambda c: md_frame_identity(c["binary_digest"], c["binary_offset"],
                                                  c["address"]),
    "callstack_hash": lambda c: md_hash("runtime-signals/callstack/v1", c["frame_identities"]),
    "path_hash": lambda c: md_hash("runtime-signals/path/v1", c["node_hashes"]),
    "combined_path_hash": lambda c: md_hash("runtime-signals/combined/v1",
                                            sorted(set(c["path_hashes"]))),
}

CODE_IMPLEMENTATION = {
    "node_hash": lambda c: hashing.node_hash(c["purl"], c["signature"]),
    "frame_identity": lambda c: hashing.frame_identity(c["binary_digest"], c["binary_offset"],
                                                       c["address"]),
    "callstack_hash": lambda c: hashing.callstack_hash(c["frame_identities"]),
    "path_hash": lambda c: hashing.path_hash(c["node_hashes"]),
    "combined_path_hash": lambda c: hashing.combined_path_hash(c["path_hashes"]),
}

CASES = [(function, case) for function in FUNCTIONS for case in VECTORS[function]]
CASE_IDS = [f"{function}:{case['name']}" for function, case in CASES]


@pytest.mark.parametrize(("function", "case"), CASES, ids=CASE_IDS)
def test_code_reproduces_the_vector(function: str, case: dict[str, Any]) -> None:
    assert CODE_IMPLEMENTATION[function](case) == case["expected"]


@pytest.mark.parametrize(("function", "case"), CASES, ids=CASE_IDS)
def test_the_document_s_recipe_reproduces_the_vector(function: str, case: dict[str, Any]) -> None:
    assert MD_IMPLEMENTATION[function](case) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: f"{c['function']}:{c['reason']}")
def test_invalid_inputs_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises(HashInputError):
        getattr(hashing, case["function"])(**case["input"])


def test_the_worked_example_is_the_message_the_document_prints() -> None:
    message = (
        b"runtime-signals/node/v1\n"
        b"pkg:pypi/requests@2.31.0\n"
        b"requests.get(url, params=None)\n"
    )
    assert f"Message (3 lines, {len(message)} bytes)" in HASHING_MD
    case = next(c for c in VECTORS["node_hash"] if c["name"] == "worked-example")
    assert case["expected"] == "sha256:" + hashlib.sha256(message).hexdigest()
    assert case["purl"] in HASHING_MD.replace("`", "")


def test_empty_lists_hash_the_domain_line_alone() -> None:
    for function, domain in [("callstack_hash", "callstack"), ("path_hash", "path"),
                             ("combined_path_hash", "combined")]:
        expected = hashlib.sha256(f"runtime-signals/{domain}/v1\n".encode()).hexdigest()
        assert getattr(hashing, function)([]) == "sha256:" + expected


def test_white_space_is_exactly_the_documented_set() -> None:
    # Python's isspace() is White_Space plus the four information separators U+001C..U+001F.
    python_space = {c for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert python_space - {0x1C, 0x1D, 0x1E, 0x1F} == set(WHITE_SPACE)
    assert len(WHITE_SPACE) == 25
    for code in WHITE_SPACE:
        assert hashing.normalize_text(f"a{chr(code)}{chr(code)}b") == "a b"
    assert hashing.normalize_text("a\u001cb\u200bc") == "a\u001cb\u200bc"


def test_order_matters_for_stacks_and_paths_but_not_for_path_sets() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert hashing.path_hash([a, b]) != hashing.path_hash([b, a])
    assert hashing.combined_path_hash([a, b]) == hashing.combined_path_hash([b, a, b])
    frames = ["unknown+0x1", "unknown+0x2"]
    assert hashing.callstack_hash(frames) != hashing.callstack_hash(frames[::-1])


def test_each_kind_of_hash_lives_in_its_own_domain() -> None:
    # The same single input line must never give the same hash as another kind.
    h = "sha256:" + "c" * 64
    assert hashing.path_hash([h]) != hashing.combined_path_hash([h])


def test_every_vector_function_and_edge_case_is_covered() -> None:
    names = {function: {case["name"] for case in VECTORS[function]} for function in FUNCTIONS}
    assert {"null-purl-uses-stand-in", "null-signature-uses-stand-in",
            "unresolved-frame-as-signature", "signature-nfd-decomposed",
            "unicode-whitespace-collapsed", "qualifiers-and-subpath-dropped"} <= names["node_hash"]
    for function in ("callstack_hash", "path_hash", "combined_path_hash"):
        assert "empty" in names[function]
    assert "unsorted-equals-sorted" in names["combined_path_hash"]
    assert "reversed-differs" in names["path_hash"]
