"""The Dockerfiles, read statically (no Docker engine here: the images are not built by the
tests): pinned multi-stage builds, no remote ADD, a health check, the processor unprivileged,
and a build context that holds every package the project installs."""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.manifests import REPO

DOCKER = REPO / "deploy" / "docker"
IMAGES = ("agent", "processor")
# repository:tag where the tag carries a version number (not latest, not a bare "12"), or a digest.
PINNED = re.compile(r"^[\w./-]+:(?=[^:]*\d+\.\d+)[\w.-]+(@sha256:[0-9a-f]{64})?$|^[\w./-]+@sha256:[0-9a-f]{64}$")


def _parse(image: str) -> DockerfileParser:
    # fileobj: given a path, the parser would look for <path>/Dockerfile.
    return DockerfileParser(fileobj=io.BytesIO((DOCKER / f"Dockerfile.{image}").read_bytes()))


def _instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


def _final_stage(parser: DockerfileParser) -> list[dict[str, str]]:
    starts = [index for index, i in enumerate(parser.structure) if i["instruction"] == "FROM"]
    return parser.structure[starts[-1]:]


@pytest.mark.parametrize("image", IMAGES)
def test_bases_are_pinned_and_the_build_is_multi_stage(image: str) -> None:
    parser = _parse(image)
    assert parser.is_multistage
    for base in parser.parent_images:
        assert PINNED.match(base), f"Dockerfile.{image}: base {base!r} is not pinned to a version or digest"


@pytest.mark.parametrize("image", IMAGES)
def test_nothing_is_fetched_by_add_and_a_health_check_is_declared(image: str) -> None:
    parser = _parse(image)
    for value in _instructions(parser, "ADD"):
        assert "://" not in value, f"Dockerfile.{image}: ADD of a URL ({value}) is not reproducible"
    (health,) = _instructions(parser, "HEALTHCHECK")
    assert "/healthz" in health and "9464" in health
    assert json.loads(_instructions(parser, "ENTRYPOINT")[-1]) == ["signals"]


def test_the_processor_runs_as_a_numeric_non_root_user() -> None:
    users = [i["value"] for i in _final_stage(_parse("processor")) if i["instruction"] == "USER"]
    assert users, "the processor image sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it


def test_the_agent_image_carries_debian_bcc_and_no_kernel_headers() -> None:
    runs = " ".join(i["value"] for i in _final_stage(_parse("agent")) if i["instruction"] == "RUN")
    assert "python3-bpfcc" in runs
    # Headers must match the node's kernel, so they come from the node, never the image.
    assert "linux-headers" not in runs


def _dockerignore_keeps(path: str) -> bool:
    """Whether the repository's .dockerignore lets path into the build context (Docker's
    rule: the last matching pattern wins; a leading ! re-includes)."""
    kept = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            kept = negate
    return kept


@pytest.mark.parametrize("image", IMAGES)
def test_every_package_is_copied_from_a_context_that_holds_it(image: str) -> None:
    parser = _parse(image)
    copied = set()
    for value in _instructions(parser, "COPY"):
        if value.startswith("--from="):
            continue
        *sources, _destination = value.split()
        for source in sources:
            path = source.rstrip("/")
            assert (REPO / path).exists(), f"Dockerfile.{image}: COPY {source}: not in the repository"
            assert _dockerignore_keeps(path), f"Dockerfile.{image}: COPY {source}: excluded by .dockerignore"
            copied.add(path)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # runtime_signals, and the design card's folders it links in (runtime_signals/agent -> ../agent).
    package = REPO / "runtime_signals"
    packages = {"runtime_signals"} | {link.resolve().name for link in package.iterdir() if link.is_symlink()}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied, \
        "a package of pyproject.toml is not copied into the image"
    assert not _dockerignore_keeps("tests") and not _dockerignore_keeps(".git")


def test_readme_example_paths_exist() -> None:
    # The build commands in the Dockerfiles' headers run from the repository root.
    for image in IMAGES:
        text = (DOCKER / f"Dockerfile.{image}").read_text()
        assert f"docker build -f deploy/docker/Dockerfile.{image}" in text
    assert Path(REPO / ".dockerignore").is_file()
