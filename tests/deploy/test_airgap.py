"""The air-gapped recipe of docs/deploy.md: `scripts/images.sh bundle DIR` on a connected
host, then `scripts/images.sh build --from DIR` with every route out poisoned (PyPI, Debian,
Maven and any proxy point at a closed port; docker build has no network at all). The images
must build from the bundle alone and run."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.deploy import engine

pytestmark = pytest.mark.timeout(1800)

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing answers


def test_images_build_from_a_bundle_alone(tmp_path: Path) -> None:
    engine.require_engine()
    engine.build_images()  # warms the caches the bundle is made from
    bundle = tmp_path / "bundle"
    proc = subprocess.run([str(engine.IMAGES_SCRIPT), "bundle", str(bundle)], capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (bundle / "bases").iterdir()) == [
        "debian-bcc-12.tar", "debian-java-12.tar", "debian-python-12.tar"]
    prefix = f"rs-airgap-{uuid.uuid4().hex[:6]}/"
    offline = engine.clean_env(
        IMAGE_PREFIX=prefix, PIP_INDEX_URL=f"{CLOSED}/simple", DEBIAN_MIRROR=f"{CLOSED}/debian",
        http_proxy=CLOSED, https_proxy=CLOSED, HTTP_PROXY=CLOSED, HTTPS_PROXY=CLOSED,
        MAVEN_OPTS="-DproxySet=true -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 "
                   "-Dhttps.proxyPort=9",
        # An empty cache: nothing but the bundle to build from.
        RUNTIME_SIGNALS_CACHE=str(tmp_path / "cache"))
    offline["PYTHON"] = os.environ.get("PYTHON", str(Path.home() / ".cache/runtime-signals/venv/bin/python"))
    images = [f"{prefix}processor:{engine.VERSION}", f"{prefix}agent:{engine.VERSION}",
              f"{prefix}kafka:{engine.KAFKA_IMAGE.rsplit(':', 1)[1]}"]
    bases = [f"{prefix}debian-{name}:12" for name in ("python", "bcc", "java")]
    try:
        proc = subprocess.run([str(engine.IMAGES_SCRIPT), "build", "--from", str(bundle)], capture_output=True,
                              text=True, timeout=1500, env=offline)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert engine.docker("run", "--rm", "--network", "none", images[0], "config", "check").returncode == 0
        assert "ok" in engine.docker("run", "--rm", "--network", "none", "--entrypoint", "python3", images[1], "-c",
                                     "import bcc, runtime_signals; print('ok')").stdout
        assert engine.docker("image", "inspect", images[2]).returncode == 0
    finally:
        engine.docker("rmi", "-f", *images, *bases, check=False)
