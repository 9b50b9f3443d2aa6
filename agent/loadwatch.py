"""Hold processes at the moments their code changes, so no call is missed after a library
is loaded and no short-lived process loses its attribution (bpf/loadwatch.bpf.c).

The kernel side stops (SIGSTOP) a process when its dynamic loader has mapped a library a
target names (at start-up, before constructors and main; in dlopen, before it returns),
when it execs an executable a target names, and when it execs in a root not seen before
(a new container, whose loader is hooked then). The agent, woken by the ring buffer,
attaches what is new, reads the process's maps, container, runtime and packages while it
is alive (ProcessTable.capture), and resumes it (SIGCONT). A call made afterwards is
attached, and attributed even if the process exits at once.

What it costs and what it cannot do (docs/attribution.md):
- a held process pauses for the agent's round trip (a few ms; longer the first time a
  large library is hashed);
- SIGSTOP is a job-control stop: a parent that waits with WUNTRACED (an interactive shell
  running the program in the foreground) sees "Stopped" and the program continue in the
  background; a traced process's stop goes to its tracer;
- holds happen only while the agent's heartbeat is fresh (an agent that dies stops
  holding within heartbeat_ms), and every process held is resumed when the agent stops;
- a loader whose file lacks _dl_debug_state or _r_debug (not glibc) is not hooked: its
  libraries are attached by the periodic rescan, and that gap is counted
  (TargetManager's late_attaches).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from runtime_signals import bpf as bpf_sources
from runtime_signals.agent import bpfsys
from runtime_signals.agent.clock import BootClock
from runtime_signals.agent.errors import BpfLoadError, ProbeError
from runtime_signals.agent.fileid import BackingFiles, FileKey
from runtime_signals.agent.kernel_types import VMLINUX, KernelTypes, KernelTypesError, offset_cflags
from runtime_signals.agent.probes import import_bcc
from runtime_signals.agent.tracefs import UprobeEvents
from runtime_signals.config.schema import TargetSettings

log = logging.getLogger(__name__)

NAME_BYTES = 64          # LOADWATCH_NAME_BYTES
MAX_LOADERS = 64         # LOADWATCH_MAX_LOADERS
KIND_EXEC_TARGET, KIND_NEW_ROOT, KIND_LIBRARY = 1, 2, 3  # enum loadwatch_kind
KIND_NAMES = {KIND_EXEC_TARGET: "exec of a target", KIND_NEW_ROOT: "exec in a new root",
              KIND_LIBRARY: "library of a target loaded"}
# Order of enum loadwatch_counter in bpf/loadwatch.h.
COUNTER_NAMES = ("loader_hook_calls", "execs", "held", "not_held_agent_away", "event_lost", "read_fault",
                 "list_too_long", "root_unread")
_LOADER_NAME = re.compile(r"(/\S*/ld-linux[^/\s]*\.so[.\d]*|/\S*/ld64\.so[.\d]*)$", re.MULTILINE)


class LoadEvent(ctypes.Structure):
    """struct load_event of bpf/loadwatch.h."""

    _fields_ = [("boot_ns", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("kind", ctypes.c_uint32),
                ("held", ctypes.c_uint32), ("objects", ctypes.c_uint32)]


class NameKey(ctypes.Structure):
    """struct name_key of bpf/loadwatch.h."""

    _fields_ = [("name", ctypes.c_char * NAME_BYTES)]


class RootKey(ctypes.Structure):
    """struct root_key of bpf/loadwatch.h."""

    _fields_ = [("device", ctypes.c_uint64), ("inode", ctypes.c_uint64)]


def library_stem(name: str) -> str | None:
    """What the kernel compares a loaded object's name with: its base name cut after the
    first ".so" ("libz.so.1" -> "libz.so"). A target's library name or path gives the stem
    of every file it matches (agent/targets.library_matches): 'z' and 'libz' -> 'libz.so'."""
    base = name.rsplit("/", 1)[-1]
    if ".so" in base:
        stem = base[: base.index(".so") + 3]
    elif "/" in name:
        return None  # a path without ".so": an executable
    else:
        stem = (base if base.startswith("lib") else f"lib{base}") + ".so"
    return stem[: NAME_BYTES - 1]


def watched_names(targets: list[TargetSettings]) -> tuple[set[str], set[str]]:
    """(library stems, executable base names) the kernel side holds processes for."""
    stems: set[str] = set()
    executables: set[str] = set()
    for target in targets:
        stem = library_stem(target.binary)
        if stem is not None:
            stems.add(stem)
        else:
            executables.add(target.binary.rsplit("/", 1)[-1][: NAME_BYTES - 1])
    return stems, executables


@dataclass(frozen=True, slots=True)
class LoaderHook:
    """Where to hook one loader file: its debugger hook and the distance to _r_debug."""

    file_offset: int       # of _dl_debug_state, for the uprobe
    r_debug_delta: int     # &_r_debug - &_dl_debug_state, in the loaded image


def loader_hook(path: str | os.PathLike[str]) -> LoaderHook | None:
    """The hook of a glibc loader file; None when it is not one (musl, stripped, unreadable)."""
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            values: dict[str, int] = {}
            for section_name in (".dynsym", ".symtab"):
                section = elf.get_section_by_name(section_name)
                if isinstance(section, SymbolTableSection):
                    for wanted in ("_dl_debug_state", "_r_debug"):
                        for symbol in section.get_symbol_by_name(wanted) or ():
                            values.setdefault(wanted, symbol["st_value"])
            if len(values) < 2:
                return None
            address = values["_dl_debug_state"]
            for segment in elf.iter_segments("PT_LOAD"):
                start = segment["p_vaddr"]
                if start <= address < start + segment["p_filesz"]:
                    return LoaderHook(address - start + segment["p_offset"], values["_r_debug"] - address)
    except (OSError, ELFError, ValueError):
        return None
    return None


_CAP_KILL = 5


def can_resume_any_process(status: Path = Path("/proc/self/status")) -> bool:
    """Whether the agent may SIGCONT processes of any user (CAP_KILL in its effective set):
    without it, a process stopped for the agent could stay stopped, so holds stay off."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_KILL & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def kernel_device(st_dev: int) -> int:
    """A device number as the kernel keeps it in struct super_block (MKDEV: major << 20)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


HELD_PIN = "held_pids"  # bpf/loadwatch.bpf.c's held_pids, pinned in the agent's pin directory


def resume_left_holds(pin_dir: Path, proc_root: Path = Path("/proc")) -> int:
    """Resume the processes an agent that died held (stopped) and never resumed, from the map
    it pinned in pin_dir; returns how many. A pid whose process started after the hold is
    another process (the pid was reused) and is left alone."""
    pinned = pin_dir / HELD_PIN
    if not pinned.exists():
        return 0
    fd = bpfsys.pinned(pinned)
    resumed = 0
    try:
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        for pid in bpfsys.map_u32_keys(fd):
            held_ns = bpfsys.map_u32_u64_value(fd, pid)
            try:
                stat = (proc_root / str(pid) / "stat").read_text()
            except OSError:
                continue  # gone
            fields = stat[stat.rindex(")") + 2:].split()
            started_ns = int(fields[19]) * 1_000_000_000 // ticks_per_s
            if held_ns is None or started_ns > held_ns:
                continue
            try:
                os.kill(pid, signal.SIGCONT)
                resumed += 1
                log.warning("resumed pid %d, held by an agent that died before resuming it", pid)
            except ProcessLookupError:
                pass
    finally:
        os.close(fd)
    pinned.unlink(missing_ok=True)
    return resumed


# The kernel members the exec hook reads to find a process's root (bpf/loadwatch.bpf.c).
ROOT_MEMBERS = {"LW_TASK_FS": "task_struct.fs", "LW_FS_ROOT_DENTRY": "fs_struct.root.dentry",
                "LW_DENTRY_INODE": "dentry.d_inode", "LW_DENTRY_SB": "dentry.d_sb",
                "LW_INODE_INO": "inode.i_ino", "LW_SB_DEV": "super_block.s_dev"}


def root_offset_cflags(types_path: Path = VMLINUX) -> list[str]:
    """The running kernel's offsets of ROOT_MEMBERS as -D flags; none (the headers' offsets,
    logged) where the kernel has no BTF or the BTF lacks one of them."""
    try:
        return offset_cflags(ROOT_MEMBERS, KernelTypes.running_kernel(types_path))
    except KernelTypesError as exc:
        log.warning("exec holds for new roots use the installed headers' struct offsets: %s", exc)
        return []


OnHold = Callable[[int, int], None]  # (pid, kind): attach and capture while the process is held


class LoadWatch:
    """The loaded loadwatch program, its loader hooks and the thread that answers holds."""

    def __init__(self, targets: list[TargetSettings], on_hold: OnHold, *, backing: BackingFiles,
                 proc_root: Path = Path("/proc"), host_root: Path = Path("/"), heartbeat_ms: int = 2000,
                 pin_dir: Path | None = None) -> None:
        bcc = import_bcc()
        try:
            self._bpf = bcc.BPF(src_file=str(bpf_sources.LOADWATCH_SOURCE).encode(),
                                cflags=[f"-I{bpf_sources.SOURCE_DIR}", *root_offset_cflags()])
            self._prog_fd: int = self._bpf.load_func(b"on_loader_brk", bcc.BPF.KPROBE).fd
            self._bpf[b"check_names"][ctypes.c_int(0)] = ctypes.c_int(
                self._bpf.load_func(b"check_name", bcc.BPF.KPROBE).fd)
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise BpfLoadError(f"loading {bpf_sources.LOADWATCH_SOURCE}: {exc}") from exc
        self._on_hold = on_hold
        self._backing = backing
        self._proc_root = proc_root
        self._heartbeat_ns = heartbeat_ms * 1_000_000
        self._uprobes = UprobeEvents(name_prefix="ld")
        self._loaders: dict[FileKey, int] = {}  # loader file -> its index (cookie), -1 when not hookable
        self._links: list[bpfsys.UprobeLink] = []
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._busy_since_ns = 0  # monotonic ns when the hold being answered began; 0 when idle
        self.counts: Counter[str] = Counter()
        self._static_targets = list(targets)
        self._names: tuple[set[str], set[str]] = (set(), set())
        self.watch([])
        self.beat()
        self.mark_root_known(host_root)
        self._held_map = self._bpf[b"held_pids"]
        self._held_pin = None
        if pin_dir is not None:
            # A killed agent cannot resume what it held: the next one does (resume_left_holds).
            self._held_pin = pin_dir / HELD_PIN
            bpfsys.pin(self._held_map.get_fd(), self._held_pin)
        self._events = self._bpf[b"load_events"]
        self._events.open_ring_buffer(self._handle)

    def watch(self, added: list[TargetSettings]) -> None:
        """Hold processes for the static targets and these (a probe plan's, as plans come and
        go): the kernel's name maps become exactly their names."""
        stems, executables = watched_names(self._static_targets + list(added))
        one = ctypes.c_uint8(1)
        for table, wanted, known in ((b"library_stems", stems, self._names[0]),
                                     (b"executable_names", executables, self._names[1])):
            for name in sorted(wanted - known):
                try:
                    self._bpf[table][NameKey(name.encode())] = one
                except KeyError:  # the map is full (1024 names): that name's loads are not held
                    self.counts["hold_names_dropped"] += 1
                    log.warning("loader holds: no room for %r in %s; its processes are not held (the rescan "
                                "attaches them, counted as late_attaches)", name, table.decode())
                    wanted.discard(name)
            for name in known - wanted:
                self._bpf[table].pop(NameKey(name.encode()), None)
        if self._names != (stems, executables) and self._names != (set(), set()):
            log.info("loader holds watch %d library name(s) and %d executable(s)", len(stems), len(executables))
        self._names = (stems, executables)

    # --- loaders ------------------------------------------------------------------
    def hook_all(self) -> int:
        """Hook the loader of every running process (at start); returns loaders hooked."""
        before = len(self._links)
        for entry in os.scandir(self._proc_root):
            if entry.name.isdigit():
                self.hook_loaders_of(int(entry.name))
        return len(self._links) - before

    def hook_loaders_of(self, pid: int) -> None:
        """Hook the loader(s) pid maps, if not hooked yet, and mark its root as known."""
        proc = self._proc_root / str(pid)
        try:
            text = (proc / "maps").read_text()
        except OSError:
            return
        for path in set(_LOADER_NAME.findall(text)):
            key = self._backing.identity(proc / "root" / path.lstrip("/"), proc / "mountinfo", path)
            if key is None or key in self._loaders:
                continue
            self._hook(key, proc / "root" / path.lstrip("/"))
        self.mark_root_known(proc / "root")

    def _hook(self, key: FileKey, host_path: Path) -> None:
        hook = loader_hook(host_path)
        if hook is None or len(self._links) >= MAX_LOADERS:
            self._loaders[key] = -1
            self.counts["loaders_not_hookable"] += 1
            log.warning("loader %s cannot be hooked (%s): libraries it loads are attached by the periodic "
                        "rescan, and calls before that are not observed (counted in late_attaches)", host_path,
                        "no _dl_debug_state/_r_debug" if hook is None else f"more than {MAX_LOADERS} loaders")
            return
        index = len(self._links)
        self._bpf[b"loader_delta"][ctypes.c_int(index)] = ctypes.c_int64(hook.r_debug_delta)
        try:
            event_id = self._uprobes.create(index, str(host_path), hook.file_offset)
            link = bpfsys.attach_trace_event(self._prog_fd, event_id, index,
                                             f"loader hook {host_path}+0x{hook.file_offset:x}")
        except ProbeError as exc:
            self._loaders[key] = -1
            self.counts["loaders_not_hookable"] += 1
            log.warning("hooking loader %s failed: %s", host_path, exc)
            return
        self._links.append(link)
        self._loaders[key] = index
        self.counts["loaders_hooked"] += 1
        log.info("hooked loader %s (+0x%x)", host_path, hook.file_offset)

    def mark_root_known(self, root: Path) -> None:
        try:
            st = os.stat(root)
        except OSError:
            return
        self._bpf[b"known_roots"][RootKey(kernel_device(st.st_dev), st.st_ino)] = ctypes.c_uint8(1)

    # --- holds --------------------------------------------------------------------
    def beat(self) -> None:
        """Promise the kernel side an answer for heartbeat_ms more."""
        self._bpf[b"agent_alive"][ctypes.c_int(0)] = ctypes.c_uint64(BootClock.now_boot_ns() + self._heartbeat_ns)

    def _handle(self, _ctx: object, data: ctypes.c_void_p, _size: int) -> int:
        event = ctypes.cast(data, ctypes.POINTER(LoadEvent)).contents
        pid, kind, held = event.pid, event.kind, bool(event.held)
        if held:
            with self._lock:
                self._held.add(pid)
        started = self._busy_since_ns = time.monotonic_ns()
        try:
            self.hook_loaders_of(pid)
            self._on_hold(pid, kind)
            self.counts["holds_answered" if held else "notices_answered"] += 1
        except Exception:  # one process's surprise must not stop the holds that follow
            self.counts["hold_errors"] += 1
            log.exception("answering the hold of pid %d (%s) failed", pid, KIND_NAMES.get(kind, kind))
        finally:
            self._busy_since_ns = 0
            if held:
                self._resume(pid)
                held_ns = time.monotonic_ns() - started
                self.counts["held_ns_total"] += held_ns
                log.debug("held pid %d (%s) for %.2f ms", pid, KIND_NAMES.get(kind, kind), held_ns / 1e6)
        return 0

    def _resume(self, pid: int) -> None:
        with self._lock:
            self._held.discard(pid)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed while held
        try:
            del self._held_map[ctypes.c_uint32(pid)]
        except KeyError:
            pass

    def run(self, stop: threading.Event, poll_ms: int = 100) -> threading.Thread:
        """Answer holds on a daemon thread until stop is set, then resume whatever is held.
        The heartbeat is renewed from a second thread, but only while no single hold has
        been waiting for half of heartbeat_ms: a stuck answer stops new holds, yet a slow one
        (the first sight of a big library) does not leave the next process unheld."""

        def loop() -> None:
            try:
                while not stop.is_set():
                    self._bpf.ring_buffer_poll(poll_ms)
            except Exception:  # holds must not outlive the thread that answers them
                log.exception("the loader-hold thread failed: holds are off from now on")
            finally:
                self.close()

        thread = threading.Thread(target=loop, name="loadwatch", daemon=True)

        def beat() -> None:
            while not stop.wait(self._heartbeat_ns / 4e9) and thread.is_alive():
                busy = self._busy_since_ns
                if not busy or time.monotonic_ns() - busy < self._heartbeat_ns // 2:
                    self.beat()

        thread.start()
        threading.Thread(target=beat, name="loadwatch-heartbeat", daemon=True).start()
        return thread

    def poll(self, timeout_ms: int) -> None:
        self.beat()
        self._bpf.ring_buffer_poll(timeout_ms)

    def counters(self) -> dict[str, int]:
        table = self._bpf[b"lw_counters"]
        kernel = {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(COUNTER_NAMES)}
        return {**kernel, **self.counts}

    def close(self) -> None:
        """Stop holding, resume every process held, unhook the loaders."""
        self._bpf[b"agent_alive"][ctypes.c_int(0)] = ctypes.c_uint64(0)
        self._bpf.ring_buffer_consume()  # holds already sent: answer them
        with self._lock:
            held = list(self._held)
        for pid in held:
            self._resume(pid)
        for link in self._links:
            link.close()
        self._links.clear()
        self._uprobes.remove_all()
        if self._held_pin is not None:
            self._held_pin.unlink(missing_ok=True)
            self._held_pin = None
