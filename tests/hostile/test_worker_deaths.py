"""Native code that kills the worker: the demangler's input bound, and a record that kills
the worker anyway recognised by the offset left in flight. Real process deaths, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from runtime_signals.processor.inflight import InflightLog

# Nested template arguments: LLVM's demangler recurses once per level with no limit.
EIGHTY_KB_NAME = "_ZN" + "1aI" * 20_000 + "i" + "E" * 20_000 + "1bEv"


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).parents[2]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False,
                          cwd=tmp_path)


def test_the_raw_demangler_dies_on_an_eighty_kilobyte_name(tmp_path: Path) -> None:
    # The hazard itself, so the bound below is known to matter on this build of pydemumble.
    done = _python(f"import pydemumble; pydemumble.demangle({EIGHTY_KB_NAME!r})", tmp_path)
    assert done.returncode == -signal.SIGSEGV


def test_an_eighty_kilobyte_mangled_name_no_longer_kills_the_worker(tmp_path: Path) -> None:
    done = _python("from runtime_signals.schemas.demangle import readable as demangle\n"
                   f"name = {EIGHTY_KB_NAME!r}\n"
                   "assert demangle(name) == name\n"
                   "print(demangle('_ZN5image6Parser6decodeEv'))", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "image::Parser::decode()"


def _die_processing(directory: Path, offset: int, tmp_path: Path) -> None:
    """A worker that takes partition 3, starts on `offset` and is killed by the kernel."""
    done = _python("import os, signal\n"
                   "from pathlib import Path\n"
                   "from runtime_signals.processor.inflight import InflightLog\n"
                   f"log = InflightLog(Path({str(directory)!r}), 'raw')\n"
                   "log.open(3)\n"
                   f"log.begin(3, {offset - 1}); log.end(3, {offset - 1})\n"
                   f"log.begin(3, {offset})\n"
                   "os.kill(os.getpid(), signal.SIGSEGV)", tmp_path)
    assert done.returncode == -signal.SIGSEGV


def test_a_record_in_flight_at_two_deaths_is_recognised_and_one_death_is_not_enough(tmp_path: Path) -> None:
    directory = tmp_path / "inflight"
    _die_processing(directory, 41, tmp_path)
    restarted = InflightLog(directory, "raw")
    assert restarted.open(3) == (41, 1)
    assert not restarted.is_poison(3, 41)  # one death: kill -9 or a drained node also do that
    restarted.close()

    _die_processing(directory, 41, tmp_path)  # the same record kills the next worker too
    again = InflightLog(directory, "raw")
    assert again.open(3) == (41, 2) and again.is_poison(3, 41) and not again.is_poison(3, 42)


def test_a_record_handled_to_the_end_leaves_nothing_in_flight(tmp_path: Path) -> None:
    log = InflightLog(tmp_path, "raw")
    log.open(0)
    log.begin(0, 7)
    log.end(0, 7)
    log.close()
    assert InflightLog(tmp_path, "raw").open(0) is None
