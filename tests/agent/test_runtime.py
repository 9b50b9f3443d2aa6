"""Runtime detection on real processes of every runtime this machine has."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime_signals.agent.processes import ProcessTable
from runtime_signals.agent.runtime import detect_runtime
from runtime_signals.schemas.codec import RuntimeType
from tests.agent.programs import build_go_program, compile_c

C_SLEEPER = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("ready\n"); fflush(stdout); sleep(30); return 0; }
"""
JAVA_SLEEPER = """
public class Sleeper {
    public static void main(String[] args) throws Exception {
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(30000);
    }
}
"""


def _runtime_of(argv: list[str], cwd: Path | None = None) -> str:
    """Start argv, wait for its 'ready' line (its runtime is loaded by then), describe it."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == b"ready", (argv, line, process.stderr.read() if process.poll() is not None else b"")
        return ProcessTable().describe(process.pid).runtime_type
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("runtimes")


def test_a_c_program_is_native(programs: Path) -> None:
    binary = compile_c(C_SLEEPER, programs / "sleeper")
    assert _runtime_of([str(binary)]) == "NATIVE"


def test_a_go_program_is_go(programs: Path) -> None:
    binary = build_go_program(programs)
    assert _runtime_of([str(binary), "wait"]) == "GO"


def test_a_java_program_is_jvm(programs: Path) -> None:
    (programs / "Sleeper.java").write_text(JAVA_SLEEPER)
    subprocess.run(["javac", "Sleeper.java"], cwd=programs, check=True, capture_output=True)
    assert _runtime_of(["java", "-Xshare:auto", "-cp", str(programs), "Sleeper"]) == "JVM"


def test_node_is_node() -> None:
    assert _runtime_of(["node", "-e", "console.log('ready'); setTimeout(() => {}, 30000)"]) == "NODE"


@pytest.mark.parametrize("python", [sys.executable, "/usr/bin/python3"])
def test_python_is_python_whether_libpython_is_shared_or_static(python: str) -> None:
    # The venv's interpreter maps libpython3.11.so; Debian's /usr/bin/python3 has it built in,
    # so only its executable's name tells.
    if not Path(python).exists():
        pytest.skip(f"{python} is not installed")
    assert _runtime_of([python, "-c", "import time; print('ready', flush=True); time.sleep(30)"]) == "PYTHON"


def test_ruby_is_ruby() -> None:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is missing: scripts/bootstrap.sh installs Debian's ruby"
    assert _runtime_of([ruby, "-e", "puts 'ready'; STDOUT.flush; sleep 30"]) == "RUBY"


def test_dotnet_is_dotnet(programs: Path) -> None:
    dotnet = shutil.which("dotnet")
    if dotnet is None:
        pytest.skip("dotnet is not installed on this machine (no .NET SDK in Debian 12's archive); "
                    "detection by libcoreclr.so is covered by test_library_markers_name_the_runtime")
    assert _runtime_of([dotnet, "--info"]) in ("DOTNET",)


@pytest.mark.parametrize("paths, runtime", [
    (["/usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.0/libcoreclr.so"], RuntimeType.DOTNET),
    (["/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"], RuntimeType.JVM),
    (["/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1"], RuntimeType.RUBY),
    (["/usr/lib/x86_64-linux-gnu/libc.so.6"], RuntimeType.NATIVE),
])
def test_library_markers_name_the_runtime(paths: list[str], runtime: RuntimeType) -> None:
    assert detect_runtime("/app/server", paths) is runtime
