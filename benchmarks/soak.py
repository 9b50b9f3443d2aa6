"""Soak: a node churning short-lived processes for a long time, with the whole pipeline
running; memory sampled over time. Not a timed test and not part of the suite's stages (it
runs for as long as it is told): `python -m benchmarks.soak --duration-s 600`.

The node: `--binaries` distinct executables (copies of the demo workload, each with its own
bytes, so its own digest, symbol table and probe), started one after another by
`--spawners` threads, each process making a few probed calls and exiting; one in three runs
inside a container cgroup (cgroup2, named as Docker names its scopes), and the containers
are replaced every `--container-every` processes, so containers appear and disappear as on
a busy node. The agent probes every binary; the processor summarises into 2 s windows; a
consumer asks for the last minute's summaries every few seconds.

Every `--sample-s` it records: processes started, agent resident memory, the kernel memory
of the agent's BPF maps (memlock of every map fd it holds), processor and consumer resident
memory, and the agent's cache sizes from /metrics. "Flat after warm-up" is judged by the
slope of each series over the second half of the run (MiB per 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from runtime_signals.config.schema import ProcessorSection
from runtime_signals.devtools.localkafka import free_port_pair
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload

from .kafka_io import dedicated_broker, pipeline_topics
from .procs import Child, signals_argv

CONSUMER_LOOP = """
import sys, time
from runtime_signals.consumer import SignalsClient
from runtime_signals.schemas.topics import TopicNames
client = SignalsClient(sys.argv[1], TopicNames().with_prefix(sys.argv[2]))
while True:
    list(client.summaries(since_us=time.time_ns() // 1000 - 60_000_000))
    print("queried", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bpf_map_bytes(pid: int) -> int:
    """Kernel memory charged to the BPF maps a process holds (memlock of each map fd)."""
    total = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:bpf-map":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        match = re.search(r"^memlock:\s+(\d+)", info, re.MULTILINE)
        total += int(match.group(1)) if match else 0
    return total


def part_caches(port: int, part: str = "agent") -> dict[str, float]:
    """A part's cache sizes from its /metrics (and, for the agent, its calls so far)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        match = re.match(rf'runtime_signals_{part}_cache_entries\{{cache="([^"]+)"\}} (\S+)', line)
        if match:
            found[match.group(1)] = float(match.group(2))
        elif line.startswith("runtime_signals_agent_calls_total "):
            found["calls_total"] = float(line.split()[1])
    return found


def distinct_binaries(workload: Path, count: int, directory: Path) -> list[Path]:
    """count copies of workload, each with bytes of its own appended (past the ELF's end:
    the loader ignores them), so each is a distinct file with a distinct digest."""
    binaries = []
    for index in range(count):
        copy = directory / f"soak-bin-{index:04d}"
        shutil.copyfile(workload, copy)
        with open(copy, "ab") as handle:
            handle.write(f"soak binary {index} {uuid.uuid4()}".encode())
        copy.chmod(0o755)
        binaries.append(copy)
    return binaries


class Containers:
    """Container cgroups under cgroup2, replaced every `every` processes; removed at close."""

    def __init__(self, every: int) -> None:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        mount = next((Path(f[1]) for f in mounts if len(f) > 2 and f[2] == "cgroup2"), None)
        name = f"rs-soak-{uuid.uuid4().hex[:8]}"
        self.base = None if mount is None or not os.access(mount, os.W_OK) else mount / name
        if self.base is not None:
            self.base.mkdir()
        self.every = every
        self._lock = threading.Lock()
        self._current: Path | None = None
        self._used = 0
        self._old: list[Path] = []
        self.created = 0

    def next(self) -> Path | None:
        if self.base is None:
            return None
        with self._lock:
            if self._current is None or self._used >= self.every:
                if self._current is not None:
                    self._old.append(self._current)
                self._current = self.base / f"docker-{uuid.uuid4().hex}{uuid.uuid4().hex}.scope"
                self._current.mkdir()
                self.created += 1
                self._used = 0
            self._used += 1
            self._remove_empty()
            return self._current

    def _remove_empty(self) -> None:
        for path in list(self._old):
            try:
                path.rmdir()
                self._old.remove(path)
            except OSError:
                pass  # a process of it is still exiting

    def close(self) -> None:
        if self.base is None:
            return
        for path in [*self._old, *([self._current] if self._current else [])]:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        try:
            self.base.rmdir()
        except OSError:
            pass


class Churn:
    def __init__(self, binaries: list[Path], containers: Containers, spawners: int, calls: tuple[int, int],
                 linger_ms: int = 300, max_live: int = 32) -> None:
        self.binaries, self.containers, self.calls = binaries, containers, calls
        self.linger_ms, self.max_live = linger_ms, max_live
        self.started = 0
        self.in_containers = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(spawners)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, seed: int) -> None:
        n = seed
        live: list[subprocess.Popen[bytes]] = []
        while not self._stop.is_set():
            live = [p for p in live if p.poll() is None]
            if len(live) >= self.max_live:
                time.sleep(0.005)
                continue
            binary = self.binaries[n % len(self.binaries)]
            # Each process lingers a little after its calls, as a request handler would, so
            # the agent can still read its maps (a process gone before the agent reads its
            # calls leaves unresolved frames, which is another test).
            argv = [str(binary), str(self.calls[0]), str(self.calls[1]), str(self.linger_ms)]
            cgroup = self.containers.next() if n % 3 == 0 else None
            if cgroup is not None:
                argv = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]
            live.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with self._lock:
                self.started += 1
                self.in_containers += cgroup is not None
            n += len(self._threads)
        for process in live:
            process.wait()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def slope_per_10min(samples: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of samples[key] over the second half of the run, per 10 minutes."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = [s["t_s"] for s in half]
    ys = [s[key] for s in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return 0.0 if not var else sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var * 600


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rs-soak-"))
    samples: list[dict[str, Any]] = []
    with dedicated_broker(args.bootstrap) as bootstrap:
        prefix = f"soak-{uuid.uuid4().hex[:8]}."
        pipeline_topics(bootstrap, prefix, 3)
        binaries = distinct_binaries(build_workload(work), args.binaries, work)
        probes = [a for b in binaries for a in ("--probe", f"{b}:{PROBED_SYMBOL}")]
        containers = Containers(args.container_every)
        processor_port, _ = free_port_pair()
        os.environ["SIGNALS_PROCESSOR__LATEST_STATES_IN_MEMORY"] = str(args.latest_in_memory)
        with Child("processor", signals_argv("processor", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                                             "--window-ms", "2000", "--allowed-lateness-ms", "500",
                                             "--metrics-port", str(processor_port),
                                             "--app-id", f"{prefix}processor"), work) as processor, \
             Child("agent", signals_argv("agent", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                                         "--metrics-port", "0", "--spool-dir", str(work / "spool"), *probes),
                   work) as agent, \
             Child("consumer", [sys.executable, "-c", CONSUMER_LOOP, bootstrap, prefix, "5"], work) as consumer:
            processor.wait_for("processor ready", 180)
            agent.wait_for("agent ready", 300)
            port = int(re.search(r"agent metrics on port (\d+)", agent.log()).group(1))  # type: ignore[union-attr]
            churn = Churn(binaries, containers, args.spawners, (3, 2))
            started = time.monotonic()
            churn.start()
            try:
                while (elapsed := time.monotonic() - started) < args.duration_s:
                    caches = part_caches(port)
                    sample = {"t_s": round(elapsed, 1), "processes": churn.started,
                              "in_containers": churn.in_containers, "containers": containers.created,
                              "agent_rss_mib": rss_bytes(agent.pid) / 2**20,
                              "bpf_maps_mib": bpf_map_bytes(agent.pid) / 2**20,
                              "processor_rss_mib": rss_bytes(processor.pid) / 2**20,
                              "consumer_rss_mib": rss_bytes(consumer.pid) / 2**20,
                              "agent_calls": caches.pop("calls_total", 0.0), "agent_caches": caches,
                              "processor_caches": part_caches(processor_port, "processor")}
                    samples.append(sample)
                    print(json.dumps(sample), flush=True)
                    time.sleep(args.sample_s)
            finally:
                churn.stop()
                containers.close()
    keys = ("agent_rss_mib", "bpf_maps_mib", "processor_rss_mib", "consumer_rss_mib")
    result = {"command": " ".join(sys.argv), "binaries": args.binaries, "duration_s": args.duration_s,
              "processes": samples[-1]["processes"] if samples else 0, "samples": samples,
              "slope_mib_per_10min_second_half": {k: round(slope_per_10min(samples, k), 2) for k in keys}}
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--binaries", type=int, default=200, help="distinct executables (default: %(default)s)")
    parser.add_argument("--spawners", type=int, default=2, help="threads starting processes (default: %(default)s)")
    parser.add_argument("--container-every", type=int, default=50,
                        help="processes per container before it is replaced (default: %(default)s)")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--latest-in-memory", type=int, default=ProcessorSection().latest_states_in_memory,
                        help="the processor's processor.latest_states_in_memory (default: %(default)s)")
    parser.add_argument("--bootstrap", help="use this broker instead of a dedicated one")
    parser.add_argument("--out", type=Path, help="write the samples and slopes as JSON here")
    args = parser.parse_args()
    result = run(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
