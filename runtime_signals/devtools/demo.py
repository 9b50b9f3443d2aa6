"""`signals demo`: the whole pipeline on this machine against the bundled workload (runtime_signals/devtools/data/workload.c)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runtime_signals.consumer.summaries import format_table, latest_summaries, read_topic
from runtime_signals.devtools import localkafka
from runtime_signals.devtools.pipeline import LocalPipeline
from runtime_signals.devtools.workload import PROBED_SYMBOL, build_workload
from runtime_signals.kafka import admin
from runtime_signals.schemas.topics import TopicNames, topic_settings


def cache_dir() -> Path:
    return Path(os.environ.get("RUNTIME_SIGNALS_CACHE", Path.home() / ".cache" / "runtime-signals"))


def create_topics(bootstrap: str, names: TopicNames, partitions: int = 3) -> None:
    admin.ensure_topics(bootstrap, [
        admin.TopicSpec(t.name, t.partitions, t.config) for t in topic_settings(names, partitions)
    ])


def wait_for_summaries(bootstrap: str, topic: str, expected_calls: int,
                       timeout_s: float) -> list[dict[str, Any]]:
    """Poll the summary topic until its windows account for expected_calls calls."""
    deadline = time.monotonic() + timeout_s
    summaries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        summaries = latest_summaries(read_topic(bootstrap, topic, timeout_s=5))
        if sum(s["total_events"] for s in summaries) >= expected_calls:
            return summaries
        time.sleep(0.5)
    return summaries


def run_demo(uploads: int, previews: int, topic_prefix: str | None = None) -> int:
    """The pipeline against the bundled workload, on topics under ``topic_prefix`` (default:
    ``demo-<unix time>.``, so each run has its own)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or localkafka.up(localkafka.LocalKafkaConfig.from_env())
    # The configured prefix ($SIGNALS_CONFIG's, or SIGNALS_KAFKA__TOPIC_PREFIX) when no flag
    # gives one, so the commands run after the demo read the demo's topics.
    from runtime_signals.config import load_config

    configured = load_config().kafka.topic_prefix
    names = TopicNames().with_prefix(topic_prefix or configured or f"demo-{int(time.time())}.")
    prefix = names.raw.removesuffix(TopicNames().raw)
    create_topics(bootstrap, names)
    workload = build_workload(cache_dir() / "demo")
    log_dir = cache_dir() / "demo" / "logs" / prefix.rstrip(".")
    print(f"broker {bootstrap}; topics {names.raw}, {names.summaries}; logs in {log_dir}", file=sys.stderr)
    with LocalPipeline(bootstrap, [f"{workload}:{PROBED_SYMBOL}"], topic_prefix=prefix,
                       window_ms=2000, lateness_ms=500, log_dir=log_dir,
                       processor_app_id=f"{prefix}processor") as pipeline:
        pipeline.start_processor()
        pipeline.start_agent()
        subprocess.run([str(workload), str(uploads), str(previews)], check=True, stdout=subprocess.DEVNULL)
        summaries = wait_for_summaries(bootstrap, names.summaries, uploads + previews, timeout_s=60)
        pipeline.stop_agent()
        pipeline.stop_processor()
    print(format_table(summaries), end="")
    print(f"topics under prefix {prefix}: try `signals reachable --topic-prefix {prefix} --function "
          f"decode_image` or `signals export --topic-prefix {prefix} --format flamegraph -o paths.svg`",
          file=sys.stderr)
    got = sum(s["total_events"] for s in summaries)
    if got != uploads + previews:
        print(f"demo: expected {uploads + previews} calls in the summaries, found {got}; see {log_dir}",
              file=sys.stderr)
        return 1
    return 0
