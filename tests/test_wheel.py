"""The built wheel, installed into a fresh virtualenv outside the checkout, is the whole
product: one top-level package (runtime_signals) with its resources as package data, a
working `signals`, its local broker, and the demo (real broker, real BPF)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from runtime_signals.devtools import localkafka
from tests.bpf_support import bpf_unavailable_reason

REPO = Path(__file__).resolve().parent.parent


def _purelib(venv: Path) -> Path:
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only the wheel installed into it; the dependencies come from
    the test virtualenv's site-packages through a .pth file (no network needed), which
    processes no .pth of its own, so the checkout's editable install is not seen."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, text=True, cwd=root)
    [wheel] = wheels.glob("runtime_signals-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = _purelib(venv)
    before = {p.name for p in site.iterdir()}
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, cwd=root)
    added = {p.name for p in site.iterdir()} - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"runtime_signals"}, added
    deps = Path(sysconfig.get_paths()["purelib"])
    (site / "test-dependencies.pth").write_text(f"{deps}\n")
    for pth in deps.glob("debian-bcc.pth"):  # bcc from Debian, as scripts/bootstrap.sh exposes it
        (site / pth.name).write_text(pth.read_text())
    return venv


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KAFKA_BOOTSTRAP_SERVERS")}
    return {**env, **extra}


def test_the_wheel_holds_one_package_with_its_resources(installed: Path) -> None:
    probe = ("import runtime_signals, runtime_signals.bpf as b, runtime_signals.schemas.codec as c, "
             "runtime_signals.devtools.localkafka as k, runtime_signals.devtools.workload as w; "
             "print(runtime_signals.__file__); print(b.CALLTRACE_SOURCE.is_file(), c.SCHEMA_DIR.joinpath("
             "'RuntimeCallEvent.avsc').is_file(), k.LocalKafkaConfig.from_env().pom_path.is_file(), w.WORKLOAD_SOURCE.is_file())")
    done = subprocess.run([str(installed / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                          cwd=installed.parent, env=_env())
    assert done.returncode == 0, done.stderr
    location, resources = done.stdout.splitlines()
    assert location.startswith(str(_purelib(installed))), location  # not the checkout
    assert resources == "True True True True"
    for top in ("agent", "processor", "schemas", "consumer", "bpf"):
        assert not (_purelib(installed) / top).exists(), f"{top} must not be a top-level package"


def test_signals_runs_from_the_wheel(installed: Path) -> None:
    done = subprocess.run([str(installed / "bin" / "signals"), "config", "reference"], capture_output=True,
                          text=True, cwd=installed.parent, env=_env())
    assert done.returncode == 0, done.stderr
    assert "processor.checkpoint_interval_ms" in done.stdout


@pytest.mark.broker
@pytest.mark.bpf
def test_the_wheel_brings_up_its_broker_and_runs_the_demo(installed: Path, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    real_cache = Path(os.environ.get("RUNTIME_SIGNALS_CACHE", Path.home() / ".cache" / "runtime-signals"))
    jars = real_cache.expanduser() / f"kafka-{localkafka.KAFKA_VERSION}"
    cache = tmp_path / "cache"
    cache.mkdir()
    if jars.is_dir():  # reuse the jars scripts/bootstrap.sh resolved; a fresh cache would resolve them again
        (cache / jars.name).symlink_to(jars)
    port, controller_port = localkafka.free_port_pair()
    env = _env(RUNTIME_SIGNALS_CACHE=str(cache), RUNTIME_SIGNALS_KAFKA_PORT=str(port),
               RUNTIME_SIGNALS_KAFKA_CONTROLLER_PORT=str(controller_port))
    signals = str(installed / "bin" / "signals")
    up = subprocess.run([signals, "kafka", "up"], capture_output=True, text=True, cwd=tmp_path, env=env,
                        timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert up.stdout.strip() == f"127.0.0.1:{port}"
        demo = subprocess.run([signals, "demo"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "calls 12" in demo.stdout
        assert "main → handle_upload → decode_image → parse_image_header" in demo.stdout
    finally:
        subprocess.run([signals, "kafka", "down"], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
