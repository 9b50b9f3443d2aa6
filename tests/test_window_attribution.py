"""Calls count in the window holding their own time (issue 13, point 5), for real: a paced
workload under a real agent (uprobe, in-kernel folding) and processor.

Every call of the workload takes the same stack, so the kernel folds them into few records.
Before, a record ran from one flush to the next whatever the windows, and was counted wholly
in its first call's window; now the program keys its folds by the agent's flush interval on
the wall clock, so each window's count is the workload's own count for it."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from runtime_signals.devtools.demo import create_topics, wait_for_summaries
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.schemas.topics import TopicNames
from tests.bpf_support import bpf_unavailable_reason

pytestmark = [pytest.mark.bpf, pytest.mark.broker]

WINDOW_MS = 1000
# The workload keeps this far from window boundaries: its clock and the kernel's stamp of
# the same call differ by microseconds, which must not decide a call's window here.
GUARD_US = 3000
CALLS = 1500

PACED = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) int paced_target(int x) { __asm__ volatile("" ::: "memory"); return x + 1; }

static long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    int calls = atoi(argv[1]);
    long long window_us = atoll(argv[2]), guard_us = atoll(argv[3]);
    struct timespec pause = {0, 2000000};
    int sum = 0;
    for (int i = 0; i < calls; i++) {
        long long before = now_us();
        long long into = before % window_us;
        if (into < guard_us || into > window_us - guard_us) { i--; nanosleep(&pause, NULL); continue; }
        sum += paced_target(i);
        printf("%lld\n", before);
        nanosleep(&pause, NULL);
    }
    return sum == 0;
}
"""


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the paced workload")
    directory = tmp_path_factory.mktemp("paced")
    source = directory / "paced.c"
    source.write_text(PACED)
    binary = directory / "paced"
    subprocess.run([compiler, "-O1", "-fno-omit-frame-pointer", "-fno-inline", "-o", str(binary), str(source)],
                   check=True)
    return binary


def test_per_window_counts_follow_each_calls_own_time(kafka_bootstrap: str, paced: Path, tmp_path: Path) -> None:
    reason = bpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"attr-{uuid.uuid4().hex[:8]}."
    names = TopicNames().with_prefix(prefix)
    create_topics(kafka_bootstrap, names)
    with LocalPipeline(kafka_bootstrap, [f"{paced}:paced_target"], topic_prefix=prefix, window_ms=WINDOW_MS,
                       lateness_ms=300, log_dir=tmp_path, processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor()
        pipeline.start_agent()
        done = subprocess.run([str(paced), str(CALLS), str(WINDOW_MS * 1000), str(GUARD_US)], check=True,
                              capture_output=True, text=True)
        summaries = wait_for_summaries(kafka_bootstrap, names.summaries, CALLS, timeout_s=90)
        assert pipeline.stop_agent() == 0, pipeline.log("agent")
        summaries = wait_for_summaries(kafka_bootstrap, names.summaries, CALLS, timeout_s=10)
        pipeline.stop_processor()
    logs = f"agent log:\n{pipeline.log('agent')[-2000:]}\nprocessor log:\n{pipeline.log('processor')[-2000:]}"

    own = Counter(int(line) // (WINDOW_MS * 1000) * WINDOW_MS * 1000 for line in done.stdout.split())
    assert sum(own.values()) == CALLS and len(own) >= 3  # the calls cross window boundaries
    mine = [s for s in summaries if any(p["symbols"][-1] == "paced_target" for p in s["call_paths"])]
    observed = Counter({s["started_at_us"]: s["total_events"] for s in mine})
    assert sum(observed.values()) == CALLS, logs
    # The kernel folded calls (fewer records than calls), yet no window got another's calls.
    assert sum(s["raw_records"] for s in mine) < CALLS
    assert observed == own, logs
