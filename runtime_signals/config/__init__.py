"""The one configuration of runtime-signals: Kafka, agent and processor settings.

Sources, later ones winning: the schema's defaults (runtime_signals.config.schema), a TOML file (``--config``, or
``$SIGNALS_CONFIG``), ``SIGNALS_<SECTION>__<SETTING>`` environment variables, then
command-line flags. ``KAFKA_BOOTSTRAP_SERVERS`` is still honoured as the bootstrap
default. Everything is checked at start; an error names the setting and its source.
``signals config check`` prints the effective configuration with secrets as ``***``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from runtime_signals.config.engine import SettingsError, build, env_layer, merge, read_toml, reference_rows, render_toml
from runtime_signals.config.schema import AgentSettings, KafkaSettings, ProcessorSection, SignalsConfig, TargetSettings

__all__ = ["CONFIG_ENV", "AgentSettings", "KafkaSettings", "ProcessorSection", "SettingsError", "SignalsConfig",
           "TargetSettings", "load_config", "reference_table", "render"]

CONFIG_ENV = "SIGNALS_CONFIG"


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
    data = merge(data, env_layer(SignalsConfig, env, reserved=frozenset({CONFIG_ENV})))
    given = {dotted: value for dotted, value in (flags or {}).items() if value is not None}
    for dotted, value in given.items():
        _set_path(data, dotted, value)
    names = flag_names or {}
    return cast(SignalsConfig, build(SignalsConfig, data, origin,
                 {dotted: " ".join(("command-line flag", names.get(dotted, ""))).strip() for dotted in given}))


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
