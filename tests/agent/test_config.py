"""One configuration for every part: file, SIGNALS_* variables and flags; errors name the
setting and its source; secrets never printed; `signals agent --check` resolves targets
on this host without attaching."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runtime_signals.agent.config import budget_settings, probe_limits
from runtime_signals.config import SignalsConfig, load_config, reference_table, render
from runtime_signals.config.engine import SettingsError
from tests.agent.programs import compile_c

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "correct-horse-battery-staple"

CONFIG = """
[kafka]
bootstrap_servers = "kafka-0.kafka:9093,kafka-1.kafka:9093"
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "agent"
ssl_endpoint_identification_algorithm = "none"

[agent]
ringbuf_pages = 2048

[[agent.targets]]
binary = "z"
symbols = ["crc32", "inflate*"]
containers = ["host", "/kubepods.slice"]

[processor]
window_ms = 10000
"""


def _signals(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALS_")}
    return subprocess.run([sys.executable, "-m", "runtime_signals.cli", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=120)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "signals.toml"
    path.write_text(CONFIG)
    env = {"SIGNALS_KAFKA__SASL_PASSWORD": SECRET, "SIGNALS_AGENT__RINGBUF_PAGES": "4096",
           "SIGNALS_PROCESSOR__ALLOWED_LATENESS_MS": "2500"}
    config = load_config(path, env=env, flags={"agent.ringbuf_pages": 512, "kafka.topic_prefix": None})
    assert config.agent.ringbuf_pages == 512  # flag over environment over file
    assert config.processor.window_ms == 10_000 and config.processor.allowed_lateness_ms == 2500
    assert config.agent.targets[0].symbols == ["crc32", "inflate*"]
    assert config.kafka.librdkafka_config() == {
        "bootstrap.servers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "client.id": "runtime-signals",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "agent",
        "sasl.password": SECRET,
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert SECRET not in repr(config) and SECRET not in render(config)
    assert 'sasl_password = "***"' in render(config)
    # The rendering is itself a valid configuration file.
    again = tmp_path / "rendered.toml"
    again.write_text(render(config))
    assert load_config(again, env={"SIGNALS_KAFKA__SASL_PASSWORD": SECRET}).agent.ringbuf_pages == 512


def test_every_problem_names_its_setting_and_where_it_came_from(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "GSSAPI"\n'
                    '[agent]\nringbuf_pages = 3000\n[[agent.targets]]\nbinary = "c"\nsymbols = []\n'
                    'containers = ["not-an-id"]\n')
    with pytest.raises(SettingsError) as caught:
        load_config(path, env={})
    text = str(caught.value)
    for expected in (f"kafka.sasl_mechanism (from config file {path}): 'GSSAPI'",
                     "kafka.sasl_username: required", "kafka.sasl_password: required",
                     f"agent.ringbuf_pages (from config file {path}): 3000 is not a power of two",
                     "agent.targets[0].symbols", "agent.targets[0].containers[0]"):
        assert expected in text, text
    with pytest.raises(SettingsError, match=r"SIGNALS_AGENT__RINGBUF_PAGS: no setting agent.ringbuf_pags; "
                                            r"did you mean 'ringbuf_pages'"):
        load_config(None, env={"SIGNALS_AGENT__RINGBUF_PAGS": "8"})
    with pytest.raises(SettingsError, match=r"agent.watermark_interval_ms \(from environment variable "
                                            r"SIGNALS_AGENT__WATERMARK_INTERVAL_MS\): expected an integer"):
        load_config(None, env={"SIGNALS_AGENT__WATERMARK_INTERVAL_MS": "fast"})
    with pytest.raises(SettingsError, match=r"agent.targets\[0\].symbolz .*did you mean 'symbols'"):
        load_config(None, env={"SIGNALS_AGENT__TARGETS": '[{"binary": "c", "symbolz": ["malloc"]}]'})


def test_overhead_statistics_and_delivery_settings_come_from_file_environment_and_flags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting `signals agent` flags once held alone is in the schema: the agent's
    own argument parser, then load(), sees file < environment < flag."""
    from runtime_signals.cli import _parser
    from runtime_signals.cli import agent as agent_cli

    spool = tmp_path / "spool"
    path = tmp_path / "signals.toml"
    path.write_text(f'[agent]\ndedup = false\nrate_limit_per_s = 200\nbudget_quiet_s = 2.5\n'
                    f'metrics_port = 9100\nspool_dir = "{spool}"\nstatistics_interval_ms = 750\n')
    for name in [n for n in os.environ if n.startswith("SIGNALS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SIGNALS_AGENT__METRICS_PORT", "9200")
    monkeypatch.setenv("SIGNALS_AGENT__BUDGET", "off")
    monkeypatch.setenv("SIGNALS_AGENT__SPOOL_MAX_BYTES", "1048576")
    args = _parser().parse_args(["agent", "--config", str(path), "--metrics-port", "9300", "--rate-limit", "10",
                                 "--shutdown-flush-timeout-ms", "1500", "--probe", "c:malloc"])
    agent = agent_cli.load(args).agent
    assert agent.metrics_port == 9300 and agent.rate_limit_per_s == 10  # flag over environment over file
    assert agent.budget is False and agent.spool_max_bytes == 1 << 20  # environment over default
    assert agent.dedup is False and agent.spool_dir == str(spool) and agent.statistics_interval_ms == 750
    assert agent.shutdown_flush_timeout_ms == 1500 and agent.metrics_address == "0.0.0.0"
    # The objects the agent runs with carry the values.
    assert probe_limits(agent).dedup is False and probe_limits(agent).rate_per_cpu_s == 10
    assert budget_settings(agent).enabled is False and budget_settings(agent).quiet_ns == 2_500_000_000
    # A flag not given leaves the file's value; --no-dedup only ever turns dedup off.
    monkeypatch.delenv("SIGNALS_AGENT__METRICS_PORT")
    again = agent_cli.load(_parser().parse_args(["agent", "--config", str(path), "--no-budget"])).agent
    assert again.metrics_port == 9100 and again.dedup is False and again.budget is False


def test_agent_settings_are_validated_at_start_naming_the_setting_and_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "signals.toml"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    path.write_text(f'[agent]\nspool_dir = "{not_a_dir}"\nbudget_backoff_s = 30.0\nbudget_max_backoff_s = 10.0\n'
                    '[[agent.targets]]\nbinary = "z"\nsymbols = ["crc32"]\n')
    done = _signals("agent", "--check", str(path), "--dedup-entries", "0", "--metrics-port", "70000",
                    env={"SIGNALS_AGENT__PRODUCER_QUEUE_MAX_MESSAGES": "0", "SIGNALS_AGENT__DEDUP": "maybe"})
    assert done.returncode == 1
    assert ("agent.dedup (from environment variable SIGNALS_AGENT__DEDUP): expected true or false, got 'maybe'"
            in done.stderr), done.stderr
    done = _signals("agent", "--check", str(path), "--dedup-entries", "0", "--metrics-port", "70000",
                    env={"SIGNALS_AGENT__PRODUCER_QUEUE_MAX_MESSAGES": "0"})
    assert done.returncode == 1
    for expected in ("agent.dedup_entries (from command-line flag --dedup-entries): 0 is outside",
                     "agent.metrics_port (from command-line flag --metrics-port): 70000 is not a TCP port",
                     "agent.producer_queue_max_messages (from environment variable "
                     "SIGNALS_AGENT__PRODUCER_QUEUE_MAX_MESSAGES): 0 is outside",
                     f"agent.spool_dir (from config file {path}): {not_a_dir} exists and is not a directory",
                     f"agent.budget_max_backoff_s (from config file {path}): 10.0 is shorter than budget_backoff_s"):
        assert expected in done.stderr, done.stderr
    help_text = _signals("agent", "--help").stdout
    for flag, setting in (("--no-dedup", "agent.dedup"), ("--rate-limit", "agent.rate_limit_per_s"),
                          ("--spool-dir", "agent.spool_dir"), ("--metrics-port", "agent.metrics_port")):
        assert flag in help_text and setting in help_text, (flag, setting)


def test_signals_config_check_prints_the_effective_configuration_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "signals.toml"
    path.write_text(CONFIG)
    done = _signals("config", "check", "--config", str(path), env={"SIGNALS_KAFKA__SASL_PASSWORD": SECRET})
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert 'sasl_password = "***"' in done.stdout and "ringbuf_pages = 2048" in done.stdout
    shown = _signals("config", "check", env={"SIGNALS_AGENT__SPOOL_DIR": "/var/lib/runtime-signals/spool",
                                             "SIGNALS_AGENT__RATE_LIMIT_PER_S": "500"})
    assert shown.returncode == 0, shown.stderr
    assert 'spool_dir = "/var/lib/runtime-signals/spool"' in shown.stdout and "rate_limit_per_s = 500" in shown.stdout
    assert "dedup = true" in shown.stdout and "# metrics_port =" in shown.stdout  # defaults, and what is off
    failed = _signals("config", "check", "--config", str(path))  # SASL_SSL without a password
    assert failed.returncode == 1
    assert "kafka.sasl_password" in failed.stderr and "required with security_protocol SASL_SSL" in failed.stderr


def test_agent_check_resolves_targets_on_this_host_without_attaching(tmp_path: Path) -> None:
    program = compile_c("int handle_request(int x) { return x + 1; }\nint main(void) { return handle_request(1); }\n",
                        tmp_path / "app")
    good = tmp_path / "good.toml"
    good.write_text(f'[[agent.targets]]\nbinary = "{program}"\nsymbols = ["handle_*", "main"]\n'
                    '[[agent.targets]]\nbinary = "z"\nsymbols = ["crc32"]\n')
    done = _signals("agent", "--check", str(good))
    assert done.returncode == 0, done.stderr
    # 3 probes in the program and the node's libz; more where other processes map their own libz copy.
    attaching = re.search(r"(\d+) probe\(s\) would attach, 0 problem\(s\)", done.stdout)
    assert attaching is not None and int(attaching.group(1)) >= 3, done.stdout
    # Each file it resolved, with the functions found in it.
    assert f"agent.targets[0]: {program}: handle_request, main" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[agent.targets]]\nbinary = "{program}"\nsymbols = ["handle_request", "no_such_function"]\n'
                   '[[agent.targets]]\nbinary = "/opt/not-installed/server"\nsymbols = ["main"]\n'
                   '[[agent.targets]]\nbinary = "c"\nsymbols = ["*"]\n')
    done = _signals("agent", "--check", str(bad), "--probe", "z:no_such_zlib_function")
    assert done.returncode == 1
    assert f"agent.targets[0].symbols[1]: symbol 'no_such_function' not found in {program}" in done.stderr
    assert "agent.targets[1].binary: /opt/not-installed/server not found" in done.stderr
    assert "agent.targets[2].symbols[0]: '*' matches" in done.stderr and "max_symbols_per_pattern" in done.stderr
    assert "--probe z:no_such_zlib_function.symbols[0]: symbol 'no_such_zlib_function' not found" in done.stderr
    assert "agent.targets[0].symbols[0]" not in done.stderr  # handle_request was found
    problems = [line for line in done.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == len(set(problems)) == 4, done.stderr  # each problem once, nothing else logged
    assert _signals("agent", "--check", str(bad), "--ringbuf-pages", "3").returncode == 1


def test_the_readme_documents_every_setting() -> None:
    readme = README.read_text()
    table = reference_table()
    missing = [line for line in table.splitlines() if line not in readme]
    assert not missing, "README's settings table is stale; paste `signals config reference`:\n" + "\n".join(missing)
    assert SignalsConfig().kafka.security_protocol == "PLAINTEXT"


def test_the_processor_reads_the_same_configuration() -> None:
    done = _signals("processor", env={"SIGNALS_PROCESSOR__WINDOW_MS": "0"})
    assert done.returncode == 1
    assert "processor.window_ms (from environment variable SIGNALS_PROCESSOR__WINDOW_MS): must be positive" \
        in done.stderr


def test_the_config_file_variable_is_no_setting_and_names_the_file(tmp_path: Path) -> None:
    # SIGNALS_CONFIG shares the settings' prefix: it must name the file, not be refused as
    # an unknown setting "config" (every deployment sets it).
    config_file = tmp_path / "signals.toml"
    config_file.write_text('[kafka]\nbootstrap_servers = "kafka:19092"\n')
    config = load_config(None, env={"SIGNALS_CONFIG": str(config_file), "SIGNALS_KAFKA__CLIENT_ID": "x"})
    assert config.kafka.bootstrap_servers == "kafka:19092" and config.kafka.client_id == "x"
    with pytest.raises(SettingsError, match="SIGNALS_CONFIGG"):
        load_config(None, env={"SIGNALS_CONFIGG": str(config_file)})
