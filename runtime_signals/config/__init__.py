"""The one configuration of runtime-signals: Kafka, agent and processor settings.

Sources, later ones winning: the defaults below, a TOML file (``--config``, or
``$SIGNALS_CONFIG``), ``SIGNALS_<SECTION>__<SETTING>`` environment variables, then
command-line flags. ``KAFKA_BOOTSTRAP_SERVERS`` is still honoured as the bootstrap
default. Everything is checked at start; an error names the setting and its source.
``signals config check`` prints the effective configuration with secrets as ``***``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from runtime_signals.agent.config import AgentSettings

from runtime_signals.config.engine import SettingsError, build, env_layer, merge, read_toml, reference_rows, render_toml

CONFIG_ENV = "SIGNALS_CONFIG"
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _doc(text: str, secret: bool = False) -> dict[str, Any]:
    return {"doc": text, "secret": secret}


@dataclass
class KafkaSettings:
    """How every part connects to Kafka. The security settings map one to one onto
    librdkafka's (security.protocol, sasl.*, ssl.*)."""

    bootstrap_servers: str = field(default="127.0.0.1:19092", metadata=_doc(
        "comma-separated host:port list; default also from $KAFKA_BOOTSTRAP_SERVERS"))
    topic_prefix: str = field(default="", metadata=_doc("prefix of every topic name (several pipelines, one cluster)"))
    client_id: str = field(default="runtime-signals", metadata=_doc("client.id, shown in broker logs and quotas"))
    security_protocol: str = field(default="PLAINTEXT", metadata=_doc(
        "security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))
    sasl_mechanism: str | None = field(default=None, metadata=_doc(
        "sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)"))
    sasl_username: str | None = field(default=None, metadata=_doc("sasl.username"))
    sasl_password: str | None = field(default=None, repr=False, metadata=_doc(
        "sasl.password; prefer SIGNALS_KAFKA__SASL_PASSWORD from a Secret", secret=True))
    ssl_ca_location: str | None = field(default=None, metadata=_doc(
        "ssl.ca.location: PEM file of the CA that signed the brokers' certificates"))
    ssl_certificate_location: str | None = field(default=None, metadata=_doc(
        "ssl.certificate.location: this client's PEM certificate (mutual TLS)"))
    ssl_key_location: str | None = field(default=None, metadata=_doc(
        "ssl.key.location: this client's PEM private key (mutual TLS)"))
    ssl_key_password: str | None = field(default=None, repr=False, metadata=_doc(
        "ssl.key.password, when the private key is encrypted", secret=True))
    ssl_endpoint_identification_algorithm: str = field(default="https", metadata=_doc(
        "ssl.endpoint.identification.algorithm: 'https' checks the broker's host name, 'none' does not"))
    # Same default as schemas/topics.py OUTPUT_RETENTION_MS (tests/schemas checks they agree).
    output_retention_ms: int = field(default=30 * 24 * 3600 * 1000, metadata=_doc(
        "retention.ms of the summaries, paths and latest-state topics (compact,delete): windows "
        "older than this are deleted; applied by `signals kafka topics`"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.bootstrap_servers.strip():
            found.append(("bootstrap_servers", "empty: give host:port of at least one broker"))
        if self.output_retention_ms <= 0:
            found.append(("output_retention_ms", f"{self.output_retention_ms}: must be a positive number of "
                          "milliseconds"))
        if self.security_protocol not in _PROTOCOLS:
            found.append(("security_protocol", f"{self.security_protocol!r} is not one of {', '.join(_PROTOCOLS)}"))
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            if self.sasl_mechanism not in _MECHANISMS:
                found.append(("sasl_mechanism", f"{self.sasl_mechanism!r}: with {self.security_protocol} "
                              f"give one of {', '.join(_MECHANISMS)}"))
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    found.append((name, f"required with security_protocol {self.security_protocol}"))
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            found.append(("security_protocol", f"{self.security_protocol} does not use SASL, but sasl_* "
                          "settings are given: use SASL_SSL (or SASL_PLAINTEXT)"))
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                found.append((name, f"{path} is not a readable file"))
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            found.append(("ssl_key_location", "mutual TLS needs both ssl_certificate_location and ssl_key_location"))
        if self.ssl_endpoint_identification_algorithm not in ("https", "none"):
            found.append(("ssl_endpoint_identification_algorithm", "must be 'https' or 'none'"))
        return found

    def librdkafka_config(self) -> dict[str, str]:
        """The connection settings as librdkafka keys (bootstrap, identity, security)."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        config.update({key: value for key, value in optional.items() if value})
        if "SSL" in self.security_protocol:
            config["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification_algorithm
        return config


@dataclass
class ProcessorSection:
    """One processor worker."""

    window_ms: int = field(default=60_000, metadata=_doc("tumbling window length in event time"))
    allowed_lateness_ms: int = field(default=5_000, metadata=_doc(
        "how long after its end a window still takes calls"))
    app_id: str = field(default="runtime-signals-processor", metadata=_doc(
        "consumer group and faust app id, also in the checkpoint topic's name; workers with the same id share "
        "the partitions"))
    loglevel: str = field(default="info", metadata=_doc("debug, info, warning or error"))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.window_ms <= 0:
            found.append(("window_ms", f"must be positive, got {self.window_ms}"))
        if self.allowed_lateness_ms < 0:
            found.append(("allowed_lateness_ms", f"must not be negative, got {self.allowed_lateness_ms}"))
        if self.loglevel not in ("debug", "info", "warning", "error"):
            found.append(("loglevel", f"{self.loglevel!r} is not debug, info, warning or error"))
        return found


@dataclass
class SignalsConfig:
    """Root of the configuration file."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings, metadata=_doc("Kafka connection"))
    agent: AgentSettings = field(default_factory=AgentSettings, metadata=_doc("the node agent"))
    processor: ProcessorSection = field(default_factory=ProcessorSection, metadata=_doc("processor workers"))


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                flags: Mapping[str, Any] | None = None,
                flag_names: Mapping[str, str] | None = None) -> SignalsConfig:
    """The effective configuration; raises SettingsError naming every bad setting.

    flags maps dotted setting names to command-line values; None values are ignored, so
    argparse defaults of None leave the file and environment in charge. flag_names maps
    a dotted setting to the flag that set it, so an error names the flag too."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        data = {"kafka": {"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]}}
    origin = ""
    if path:
        data = merge(data, read_toml(Path(path)))
        origin = f"config file {path}"
    data = merge(data, env_layer(SignalsConfig, env))
    given = {dotted: value for dotted, value in (flags or {}).items() if value is not None}
    for dotted, value in given.items():
        _set_path(data, dotted, value)
    names = flag_names or {}
    return build(SignalsConfig, data, origin,
                 {dotted: " ".join(("command-line flag", names.get(dotted, ""))).strip() for dotted in given})


def render(config: SignalsConfig) -> str:
    """The effective configuration as TOML, secrets as ***."""
    return render_toml(config)


def reference_table() -> str:
    """The settings reference as a Markdown table (the README's)."""
    lines = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, env, default, doc in reference_rows(SignalsConfig):
        env_cell = f"`{env}`" if env else ""
        lines.append(f"| `{name}` | {env_cell} | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


EPILOG = """\
examples:
  signals config check --config /etc/runtime-signals/signals.toml
  SIGNALS_KAFKA__SASL_PASSWORD=... signals config check     # secrets print as ***
  signals config reference                                  # the settings table (Markdown)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check", "reference"],
                        help="check: validate and print the effective configuration; reference: the settings table")
    parser.add_argument("--config", help=f"TOML configuration file (default: ${CONFIG_ENV})")


def run(args: argparse.Namespace) -> int:
    """`signals config check|reference`; exit 0 when valid, 1 with the problems when not."""
    if args.action == "reference":
        print(reference_table(), end="")
        return 0
    try:
        config = load_config(args.config)
    except SettingsError as exc:
        print(f"signals config check: {exc}", file=sys.stderr)
        return 1
    print(render(config), end="")
    return 0
