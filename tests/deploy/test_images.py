"""The Dockerfiles, read statically (tests/deploy/test_compose_up.py and test_k8s_run.py build
and run them): the project's own or pinned bases, multi-stage builds, no frontend fetched from
a registry, no remote ADD, a health check, the processor unprivileged, and a build context
(scripts/images.sh's) that holds every file copied, with every dependency locked."""

from __future__ import annotations

import io
import json
import re
import tomllib

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.manifests import REPO

DOCKER = REPO / "deploy" / "docker"
IMAGES = ("agent", "processor")
ALL_IMAGES = (*IMAGES, "kafka")
# The bases scripts/images.sh makes with debootstrap (their content is fixed by the cached
# tarball, or by DEBIAN_MIRROR pointing at a snapshot.debian.org date).
OWN_BASE = re.compile(r"^runtime-signals/debian-(python|bcc|java):12$")
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


def _base_default(image: str) -> str:
    parser = _parse(image)
    (default,) = [i["value"].split("=", 1)[1] for i in parser.structure
                  if i["instruction"] == "ARG" and i["value"].startswith("BASE_IMAGE=")]
    return default


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_bases_are_the_projects_own_and_overridable(image: str) -> None:
    parser = _parse(image)
    assert image == "kafka" or parser.is_multistage
    default = _base_default(image)
    # Every stage FROM ${BASE_IMAGE} (the parser substitutes the argument's default).
    assert set(parser.parent_images) == {default}, f"Dockerfile.{image}: every stage FROM ${{BASE_IMAGE}}"
    assert all("${BASE_IMAGE}" in v for v in _instructions(parser, "FROM"))
    assert OWN_BASE.match(default) or PINNED.match(default), f"Dockerfile.{image}: base {default!r}"
    assert f"[{OWN_BASE.match(default).group(1)}]=" in (REPO / "scripts" / "images.sh").read_text()  # type: ignore[union-attr]
    # A registry base without the packages gets them from DEBIAN_MIRROR (an internal mirror).
    assert any(i["value"].startswith("DEBIAN_MIRROR") for i in parser.structure if i["instruction"] == "ARG")


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_no_frontend_is_fetched_from_a_registry(image: str) -> None:
    # `# syntax=` makes every BuildKit build pull a frontend image: no registry here.
    assert not re.search(r"(?im)^#\s*syntax\s*=", (DOCKER / f"Dockerfile.{image}").read_text())


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


# What scripts/images.sh puts in each build context (python_context, kafka_context).
CONTEXT_FILES = {"agent": {"requirements.lock", "wheels", "project"},
                 "processor": {"requirements.lock", "wheels", "project"},
                 "kafka": {"libs", "entrypoint.sh", "log4j2.properties"}}


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_every_copied_file_is_in_the_context_the_script_assembles(image: str) -> None:
    copied = set()
    for value in _instructions(_parse(image), "COPY"):
        if value.startswith("--from="):
            continue
        *sources, _destination = value.split()
        copied |= {source.rstrip("/") for source in sources}
    assert copied == CONTEXT_FILES[image]
    script = (REPO / "scripts" / "images.sh").read_text()
    for name in copied:
        assert f"$dir/{name}" in script or '"$dir/" ' in script or f"/{name}" in script, name


def test_the_lock_file_pins_every_runtime_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = {}
    for line in (DOCKER / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in project["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0]).lower()
        assert name in pinned, f"{requirement}: not in deploy/docker/requirements.lock (scripts/images.sh lock)"


def test_build_commands_in_the_headers_exist() -> None:
    for image in ALL_IMAGES:
        assert "scripts/images.sh build" in (DOCKER / f"Dockerfile.{image}").read_text()
    assert (REPO / "scripts" / "images.sh").stat().st_mode & 0o111
