"""The real faust worker over SASL_SSL (SCRAM-SHA-512, a private CA) with the processor's own
principal and ACLs (deploy/k8s/overlays/strimzi/kafkausers.yaml): the settings of
runtime_signals.config reach faust's consumer, producer and the side readers alike."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from runtime_signals.devtools import localkafka
from runtime_signals.devtools.pipeline import signals_command
from runtime_signals.processor.checkpoint import checkpoint_topic
from runtime_signals.schemas.topics import TopicNames
from tests.processor.harness import produce, read_all, wait_until
from tests.secure_kafka import PROCESSOR, secure_kafka

pytestmark = pytest.mark.broker

NAMES = TopicNames()  # the production names: the broker is this test's alone


def test_the_faust_worker_consumes_and_writes_over_sasl_ssl(tmp_path: Path) -> None:
    try:
        context = secure_kafka(tmp_path / "secure-kafka")
        kafka = context.__enter__()
    except (localkafka.ToolNotFoundError, localkafka.ProvisionError) as exc:
        pytest.skip(f"the local broker cannot run here: {exc}")
    try:
        # Written over the admin's PLAINTEXT listener: a record the worker must dead-letter.
        produce(kafka.admin_bootstrap, NAMES.raw, [(b"container-1", b"not avro", 0)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALS_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update(kafka.client_env(PROCESSOR), PYTHONUNBUFFERED="1")
        log_path = tmp_path / "processor.log"
        with log_path.open("wb") as log_file:
            worker = subprocess.Popen(signals_command("processor", "--config", str(kafka.config_file(PROCESSOR)),
                                                      "--checkpoint-interval-ms", "300"),
                                      env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Consumed through the group (faust's aiokafka consumer), written by faust's
            # producer: the dead-lettered record and the partition's checkpoint.
            dlq = wait_until(lambda: read_all(kafka.admin_bootstrap, NAMES.dlq, timeout_s=2), 120,
                             "the record dead-lettered")
            checkpoints = wait_until(lambda: read_all(kafka.admin_bootstrap, checkpoint_topic(NAMES.raw, PROCESSOR),
                                                      timeout_s=2), 30, "a checkpoint written")
            worker.send_signal(signal.SIGTERM)
            status = worker.wait(60)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        log = log_path.read_text(errors="replace")
        assert status == 0, log[-4000:]
        assert [record.value for record in dlq] == [b"not avro"], log[-4000:]
        assert checkpoints and "processor stopped" in log, log[-4000:]
    finally:
        context.__exit__(None, None, None)
