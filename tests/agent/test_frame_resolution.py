"""Frame resolution against a real process: each mapping's file is digested and offered to
the symbol-table publisher once per (process, mapping); once known, a frame costs no stat;
a library dlopen'ed after the first read still resolves; an exited process is forgotten."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime_signals.agent.processes import ProcessTable
from runtime_signals.agent.procmaps import parse_maps
from runtime_signals.agent.symtab import read_symbol_table
from tests.agent.programs import PLUGIN

# Loads the library named on stdin's first line, then says where plugin_entry is, then waits.
LOADER = """
import ctypes, sys
print("ready", flush=True)
lib = ctypes.CDLL(sys.stdin.readline().strip())
print(ctypes.cast(lib.plugin_entry, ctypes.c_void_p).value, flush=True)
sys.stdin.readline()
"""


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_frames_resolve_once_per_mapping_and_see_a_later_dlopen(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "plugin.c"
    source.write_text(PLUGIN)
    plugin = tmp_path / "libplugin.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-fno-omit-frame-pointer", "-o", str(plugin), str(source)],
                   check=True)
    process = subprocess.Popen([sys.executable, "-c", LOADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    offers: list[tuple[str, Path]] = []
    table = ProcessTable(on_new_binary=lambda digest, path, _root: offers.append((digest, path)))
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "ready"
        executable = Path(os.path.realpath(f"/proc/{process.pid}/exe"))
        text_mapping = next(m for m in parse_maps(Path(f"/proc/{process.pid}/maps").read_text())
                            if m.path == str(executable))
        caller = text_mapping.start + 0x10

        first = table.resolve_frames(process.pid, (caller, caller + 1, caller))
        assert [f.path for f in first] == [str(executable)] * 3
        assert {f.binary_digest for f in first} == {_sha256(executable)}
        assert first[0].binary_offset == text_mapping.file_offset + 0x10
        assert offers == [(_sha256(executable), Path(f"/proc/{process.pid}/root") / str(executable).lstrip("/"))]

        # The library arrives after the process's maps were read.
        process.stdin.write(f"{plugin}\n")
        process.stdin.flush()
        entry = int(process.stdout.readline())
        entry_symbol = next(s for s in read_symbol_table(plugin).symbols if s.name == "plugin_entry")
        version = table.maps.version(process.pid)
        later = table.resolve_frames(process.pid, (entry, caller))
        assert (later[0].path, later[0].binary_digest, later[0].binary_offset) == (
            str(plugin), _sha256(plugin), entry_symbol.file_offset)
        assert table.maps.version(process.pid) == version + 1
        assert [digest for digest, _path in offers] == [_sha256(executable), _sha256(plugin)]

        # Known mappings: no stat, no new offer, however often the frames come back.
        callers_of_stat: list[str] = []
        real_stat = os.stat

        def counting_stat(*args: object, **kwargs: object) -> os.stat_result:
            callers_of_stat.append(sys._getframe(1).f_code.co_name)
            return real_stat(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "stat", counting_stat)
        for _ in range(100):
            again = table.resolve_frames(process.pid, (entry, caller, caller + 1))
        monkeypatch.undo()
        assert callers_of_stat == [] and len(offers) == 2
        assert [(f.path, f.binary_digest, f.binary_offset) for f in again[:2]] == [
            (f.path, f.binary_digest, f.binary_offset) for f in later]
    finally:
        process.kill()
        process.wait()
    # Kept one sweep after it is gone (its last calls may still be in the dedup map), then forgotten.
    table.forget_exited()
    assert table.forget_exited() >= 1
    assert process.pid not in table.maps.known_pids()
