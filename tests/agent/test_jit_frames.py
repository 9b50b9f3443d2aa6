"""JIT frames named from the runtime's perf map, on real runtimes: a Java program (HotSpot
JIT, -XX:+PreserveFramePointer) and a Node program (V8, --perf-basic-prof), each with two
managed call paths into a probed native function (zlib's deflate)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime_signals.agent.perfmap import (
    JitModule,
    PerfMap,
    PerfMaps,
    jit_digest,
    jvm_class_name,
    node_source_path,
)
from runtime_signals.agent.probes import CallTracer, ProbeSpec, RawCall
from runtime_signals.agent.processes import ProcessTable
from tests.bpf_support import bpf_unavailable_reason

JAVA = """
import java.util.zip.Deflater;

public class Zipper {
    static byte[] input = new byte[4096];
    static byte[] output = new byte[8192];

    static int compressA() { return compress(Deflater.DEFAULT_COMPRESSION); }
    static int compressB() { return compress(Deflater.BEST_SPEED); }

    static int compress(int level) {
        Deflater d = new Deflater(level);
        d.setInput(input);
        d.finish();
        int n = d.deflate(output);
        d.end();
        return n;
    }

    public static void main(String[] args) throws Exception {
        java.io.BufferedReader in = new java.io.BufferedReader(new java.io.InputStreamReader(System.in));
        for (int i = 0; i < 20000; i++) { compressA(); compressB(); }  // JIT-compile both paths
        System.out.println("ready");
        System.out.flush();
        in.readLine();
        for (int i = 0; i < Integer.parseInt(args[0]); i++) compressA();
        for (int i = 0; i < Integer.parseInt(args[1]); i++) compressB();
        System.out.println("done");
        System.out.flush();
        in.readLine();
    }
}
"""

NODE_PACKAGE = """
const zlib = require('zlib');
const input = Buffer.alloc(4096);
function compressA() { return zlib.deflateSync(input, { level: 6 }); }
function compressB() { return zlib.deflateSync(input, { level: 1 }); }
module.exports = { compressA, compressB };
"""

NODE_MAIN = """
const { compressA, compressB } = require('zipper');
for (let i = 0; i < 3000; i++) { compressA(); compressB(); }  // let V8 optimize both
const [a, b] = process.argv.slice(2).map(Number);
process.stdout.write('ready\\n');
process.stdin.once('data', () => {
  for (let i = 0; i < a; i++) compressA();
  for (let i = 0; i < b; i++) compressB();
  process.stdout.write('done\\n');
  process.stdin.once('data', () => process.exit(0));
});
"""


def test_perf_map_lines_are_read_as_they_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "perf-1.map"
    path.write_text("1000 10 first\n2000 20 sec")
    perf_map = PerfMap(path, "/tmp/perf-1.map", max_entries=10)
    assert perf_map.refresh()
    assert perf_map.lookup(0x1005).name == "first" and perf_map.lookup(0x2005) is None  # a half-written line
    with open(path, "a") as handle:
        handle.write("ond\n3000 8 third\n")
    assert perf_map.refresh()
    assert perf_map.lookup(0x2005).name == "second" and perf_map.lookup(0x3007).name == "third"
    assert perf_map.lookup(0x3008) is None
    path.write_text("5000 10 rewritten\n")  # the JVM writes its map anew on each request
    assert perf_map.refresh() and perf_map.lookup(0x1005) is None and perf_map.lookup(0x5000).name == "rewritten"


def test_names_of_managed_code() -> None:
    assert jvm_class_name("int java.util.zip.Deflater.deflate(byte[], int, int, int)") == "java.util.zip.Deflater"
    assert jvm_class_name("Interpreter") is None and jvm_class_name("StubRoutines (1)") is None
    assert node_source_path("JS:*compressA /srv/node_modules/zipper/index.js:4:19") == \
        "/srv/node_modules/zipper/index.js"
    assert jit_digest("x") == jit_digest("x") != jit_digest("y")


def _paths(calls: list[RawCall], pid: int, table: ProcessTable, names: dict[str, str]) -> Counter[tuple[str, ...]]:
    """observation counts by the path of JIT frame names (outermost first)."""
    paths: Counter[tuple[str, ...]] = Counter()
    for call in calls:
        if call.pid != pid:
            continue
        frames = table.resolve_frames(call.pid, call.frames)
        path = tuple(names[f.binary_digest] for f in reversed(frames) if f.binary_digest in names)
        paths[path] += call.count
    return paths


@pytest.fixture
def tracer() -> Iterator[CallTracer]:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    tracer = CallTracer()
    yield tracer
    tracer.close()


def _run(argv: list[str], cwd: Path, tracer: CallTracer, probe: ProbeSpec,
         check: Callable[[subprocess.Popen[bytes]], None]) -> None:
    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline() == b"ready\n"
        tracer.attach(probe)
        process.stdin.write(b"go\n")
        process.stdin.flush()
        assert process.stdout.readline() == b"done\n"
        tracer.collect()
        check(process)
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(not shutil.which("javac") or not shutil.which("jar"), reason="no JDK (javac, jar) installed")
def test_java_paths_into_libz_show_the_jit_compiled_methods_and_their_jar(tracer: CallTracer,
                                                                          tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Zipper.java").write_text(JAVA)
    classes = tmp_path / "classes"
    subprocess.run(["javac", "-d", str(classes), str(tmp_path / "src" / "Zipper.java")], check=True)
    pom = classes / "META-INF" / "maven" / "org.example" / "zipper"
    pom.mkdir(parents=True)
    (pom / "pom.properties").write_text("groupId=org.example\nartifactId=zipper\nversion=1.2.3\n")
    jar = tmp_path / "zipper-1.2.3.jar"
    subprocess.run(["jar", "cf", str(jar), "-C", str(classes), "."], check=True)
    calls: list[RawCall] = []
    tracer.on_event(calls.append)
    blobs: list[JitModule] = []

    def check(process: subprocess.Popen[bytes]) -> None:
        # The agent asks the JVM for its map (jcmd <pid> Compiler.perfmap) when it meets unnamed JIT frames.
        table = ProcessTable(perf_maps=PerfMaps(), on_jit_code=blobs.append)
        _paths(calls, process.pid, table, {})
        names = {jit_digest(b.name): b.name for b in blobs}
        paths = _paths(calls, process.pid, table, names)
        by_method = Counter()
        for path, count in paths.items():
            assert "int Zipper.compress(int)" in path, path
            caller = [n for n in path if n in ("int Zipper.compressA()", "int Zipper.compressB()")]
            by_method[tuple(caller)] += count
        assert by_method == {("int Zipper.compressA()",): 7, ("int Zipper.compressB()",): 5}, paths
        purls = {b.name: b.purl for b in blobs}
        assert purls["int Zipper.compressA()"] == "pkg:maven/org.example/zipper@1.2.3"
        deflater = [p for n, p in purls.items() if n.startswith("int java.util.zip.Deflater.deflate(")]
        assert deflater and all(p and p.startswith("pkg:deb/debian/openjdk-17") for p in deflater), purls

    _run(["java", "-XX:+PreserveFramePointer", "-cp", str(jar), "Zipper", "7", "5"], tmp_path, tracer,
         ProbeSpec("z", "deflate"), check)


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_paths_into_zlib_show_the_javascript_functions_and_their_package(tracer: CallTracer,
                                                                              tmp_path: Path) -> None:
    package = tmp_path / "node_modules" / "zipper"
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": "zipper", "version": "1.0.0", "main": "index.js"}))
    (package / "index.js").write_text(NODE_PACKAGE)
    (tmp_path / "main.js").write_text(NODE_MAIN)
    node = str(Path(shutil.which("node") or "node").resolve())
    calls: list[RawCall] = []
    tracer.on_event(calls.append)
    blobs: list[JitModule] = []

    def check(process: subprocess.Popen[bytes]) -> None:
        table = ProcessTable(perf_maps=PerfMaps(jcmd=None), on_jit_code=blobs.append)
        _paths(calls, process.pid, table, {})
        names = {jit_digest(b.name): b.name for b in blobs}
        paths = _paths(calls, process.pid, table, names)
        by_function: Counter[str] = Counter()
        for path, count in paths.items():
            callers = {n for n in path if "compressA" in n or "compressB" in n}
            assert len(callers) == 1, path
            by_function["compressA" if "compressA" in callers.pop() else "compressB"] += count
        assert by_function == {"compressA": 7, "compressB": 5}, paths
        purls = {b.purl for b in blobs if "compressA" in b.name or "compressB" in b.name}
        assert purls == {"pkg:npm/zipper@1.0.0"}, purls

    _run([node, "--perf-basic-prof", "--interpreted-frames-native-stack", "main.js", "7", "5"], tmp_path, tracer,
         ProbeSpec(node, "deflate"), check)


@pytest.mark.skipif(not shutil.which("javac") or not shutil.which("jar"), reason="no JDK (javac, jar) installed")
def test_summaries_name_the_java_methods_in_paths_into_libz(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Agent + processor through the broker: the processor names JIT frames from the symbol
    tables and module maps the agent publishes, as it does native frames."""
    import uuid

    from runtime_signals.devtools.demo import create_topics
    from runtime_signals.devtools.pipeline import LocalPipeline
    from runtime_signals.schemas.topics import TopicNames

    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Zipper.java").write_text(JAVA)
    subprocess.run(["javac", "-d", str(tmp_path / "classes"), str(tmp_path / "src" / "Zipper.java")], check=True)
    prefix = f"jit-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    _wait_for_topic(kafka_bootstrap, names.raw)
    java = subprocess.Popen(["java", "-XX:+PreserveFramePointer", "-cp", str(tmp_path / "classes"), "Zipper",
                             "7", "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert java.stdin is not None and java.stdout is not None
    try:
        assert java.stdout.readline() == b"ready\n"  # compiled before the probe: the paths are JIT code
        with LocalPipeline(kafka_bootstrap, ["z:deflate"], topic_prefix=prefix, window_ms=1000, lateness_ms=300,
                           log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
            # A JVM's libjvm.so table (48,000 symbols) can take tens of seconds on a loaded
            # machine; the JIT names must not be emitted before it.
            pipeline.start_processor(extra_args=["--symbol-wait-ms", "120000"])
            pipeline.start_agent()
            java.stdin.write(b"go\n")
            java.stdin.flush()
            assert java.stdout.readline() == b"done\n"
            by_caller = _java_callers(kafka_bootstrap, names.summaries, 12, timeout_s=180)
            assert pipeline.stop_agent() == 0, pipeline.log("agent")
            # Read again after the agent's last watermark: a double count would show.
            by_caller = _java_callers(kafka_bootstrap, names.summaries, 12, timeout_s=5)
            pipeline.stop_processor()
    finally:
        java.kill()
        java.wait()
    assert by_caller == {"int Zipper.compressA()": 7, "int Zipper.compressB()": 5}, \
        f"{dict(by_caller)}\n" + pipeline.log("agent")[-2000:] + pipeline.log("processor")[-2000:]


def _java_callers(bootstrap: str, topic: str, expected: int, timeout_s: float) -> Counter[str]:
    """Calls per Zipper caller in the summaries, polled until they add up to expected. Other
    processes on this machine call libz too: their paths are left out."""
    import time

    from runtime_signals.consumer.errors import TopicNotFoundError
    from runtime_signals.consumer.summaries import latest_summaries, read_topic

    deadline = time.monotonic() + timeout_s
    while True:
        by_caller: Counter[str] = Counter()
        try:
            records = read_topic(bootstrap, topic, timeout_s=5)
        except TopicNotFoundError:  # a new topic's metadata may lag on a busy broker
            records = []
        for summary in latest_summaries(records):
            for path in summary["call_paths"]:
                callers = [s for s in path["symbols"] if s in ("int Zipper.compressA()", "int Zipper.compressB()")]
                if callers:
                    assert len(callers) == 1 and "int Zipper.compress(int)" in path["symbols"], path["symbols"]
                    assert path["runtime_type"] == "JVM" and path["symbols"][-1] == "deflate", path
                    by_caller[callers[0]] += path["observation_count"]
        if sum(by_caller.values()) >= expected or time.monotonic() >= deadline:
            if not by_caller:
                print("paths seen:", [p["symbols"] for s in latest_summaries(records) for p in s["call_paths"]])
            return by_caller
        time.sleep(0.5)


def _wait_for_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    """A new topic can take seconds to show in a loaded broker's metadata; the agent refuses
    to start without it."""
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while topic not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {topic} not visible on {bootstrap} after {timeout_s:.0f}s"
        time.sleep(0.5)
