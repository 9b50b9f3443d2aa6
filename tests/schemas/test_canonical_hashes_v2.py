"""Recipe v2 (schemas/HASHING.md part II): schemas.hashing, the document and the vectors agree.

Every v2 vector is checked against the code and against tests/schemas/recipe_v2.py, written
from the text alone, so a vector regenerated from buggy code cannot pass unnoticed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime_signals.schemas import hashing
from tests.schemas import recipe_v2 as text

VECTORS: dict[str, Any] = json.loads(
    (Path(hashing.__file__).resolve().parent / "hash-vectors.json").read_text("utf-8"))["v2"]


def cases(kind: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in VECTORS[kind]]


@pytest.mark.parametrize("case", cases("canonical_purl"))
def test_canonical_purl(case: dict[str, Any]) -> None:
    assert hashing.canonical_purl(case["purl"]) == case["expected"] == text.canonical(case["purl"])
    # Canonical is a fixed point: a published purl hashes as itself.
    assert hashing.canonical_purl(case["expected"]) == case["expected"]


@pytest.mark.parametrize("case", cases("module_identity"))
def test_module_identity(case: dict[str, Any]) -> None:
    args = (case["purl"], case["binary_digest"], case["library"])
    assert hashing.module_identity(*args) == case["expected"] == text.module(*args)


@pytest.mark.parametrize("case", cases("unresolved_signature"))
def test_unresolved_signature(case: dict[str, Any]) -> None:
    args = (case["binary_digest"], case["binary_offset"])
    assert hashing.unresolved_signature(*args) == case["expected"] == text.signature(None, *args)


@pytest.mark.parametrize("case", cases("node_hash_v2"))
def test_node_hash_v2(case: dict[str, Any]) -> None:
    assert hashing.node_hash_v2(case["purl"], case["signature"]) == case["expected"] \
        == text.node(case["purl"], case["signature"])


@pytest.mark.parametrize("case", cases("callstack_hash_v2"))
def test_callstack_hash_v2(case: dict[str, Any]) -> None:
    assert hashing.callstack_hash_v2(case["frame_identities"]) == case["expected"] \
        == text.callstack(case["frame_identities"])


@pytest.mark.parametrize("case", cases("path_hash_v2"))
def test_path_hash_v2(case: dict[str, Any]) -> None:
    assert hashing.path_hash_v2(case["node_hashes"]) == case["expected"] == text.path(case["node_hashes"])


@pytest.mark.parametrize("case", cases("combined_path_hash_v2"))
def test_combined_path_hash_v2(case: dict[str, Any]) -> None:
    assert hashing.combined_path_hash_v2(case["path_hashes"]) == case["expected"] \
        == text.combined(case["path_hashes"])


def test_two_unpackaged_programs_main_functions_differ() -> None:
    """The v1 defect: every unpackaged binary was pkg:generic/unknown, so two programs'
    main shared a node hash."""
    by_name = {case["name"]: case["expected"] for case in VECTORS["node_hash_v2"]}
    assert by_name["unpackaged-main-a"] != by_name["unpackaged-main-b"]
    a = hashing.module_identity(None, "sha256:" + "1" * 64, "/bin/main")
    b = hashing.module_identity(None, "sha256:" + "2" * 64, "/bin/main")
    assert hashing.node_hash_v2(a, "main") != hashing.node_hash_v2(b, "main")
    assert hashing.node_hash(None, "main") == hashing.node_hash(None, "main")  # v1 still computes


def test_a_deb_version_hashes_the_same_whichever_way_plus_is_written() -> None:
    plain = hashing.node_hash_v2("pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64", "f")
    encoded = hashing.node_hash_v2("pkg:deb/debian/libc6@2.36-9%2Bdeb12u4", "f")
    assert plain == encoded
    # ... where v1 gave two hashes for one function.
    assert hashing.node_hash("pkg:deb/debian/libc6@2.36-9+deb12u4", "f") != \
        hashing.node_hash("pkg:deb/debian/libc6@2.36-9%2Bdeb12u4", "f")


def test_v1_and_v2_domains_differ_for_equal_input() -> None:
    assert hashing.path_hash([]) != hashing.path_hash_v2([])
    assert hashing.combined_path_hash([]) != hashing.combined_path_hash_v2([])


def test_the_document_names_every_v2_domain_and_the_example() -> None:
    document = (Path(hashing.__file__).resolve().parent / "HASHING.md").read_text("utf-8")
    for domain in (hashing.NODE_DOMAIN_V2, hashing.CALLSTACK_DOMAIN_V2, hashing.PATH_DOMAIN_V2,
                   hashing.COMBINED_DOMAIN_V2):
        assert f"`{domain}`" in document
    assert "`pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12` → " \
           "`pkg:deb/debian/libc6@2.36-9%2Bdeb12u4`" in document
