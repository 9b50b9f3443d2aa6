"""A settings tree of dataclasses, read from a TOML file, SIGNALS_* environment variables
and command-line flags, in that order of precedence (a later source wins).

The schema is plain dataclasses: each field's ``metadata`` holds its ``doc`` and, for
passwords, ``secret=True``. This module knows nothing of what the settings mean; it
converts, checks types, collects every problem with the dotted name of the setting
(``agent.targets[1].symbols``) and where its value came from, and renders the tree back
as TOML with secrets shown as ``***``.

Environment variables name a setting by its path in upper case with ``__`` between
levels: ``SIGNALS_KAFKA__BOOTSTRAP_SERVERS``. Lists and tables from the environment are
JSON (``SIGNALS_AGENT__TARGETS='[{"binary": "c", "symbols": ["malloc"]}]'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "SIGNALS_"
SECRET_MASK = "***"


class SettingsError(ValueError):
    """One or more settings are invalid; each line names the setting and says what to do."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class _FromText(str):
    """A value read as text (environment), to be parsed into the field's type."""

    origin: str


def _text(value: str, origin: str) -> _FromText:
    text = _FromText(value)
    text.origin = origin
    return text


def doc_of(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("doc", ""))


def is_secret(field: dataclasses.Field[Any]) -> bool:
    return bool(field.metadata.get("secret", False))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError([f"config file {path}: cannot be read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise SettingsError([f"config file {path}: not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files "
                             f"are UTF-8"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"config file {path}: not valid TOML: {exc}"]) from exc


def env_layer(root: type, env: Mapping[str, str], reserved: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The SIGNALS_* variables of env as a nested mapping; an unknown name is an error.
    reserved names share the prefix but are no setting (SIGNALS_CONFIG names the file the
    settings come from), so they are passed over rather than refused."""
    layer: dict[str, Any] = {}
    problems = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in reserved:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        cls: Any = root
        for depth, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
            if part not in fields:
                problems.append(f"environment variable {name}: no setting {'.'.join(parts[:depth + 1])}"
                                f"{_suggest(part, fields)}")
                break
            cls = typing.get_type_hints(cls)[part]
        else:
            target = layer
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = _text(env[name], f"environment variable {name}")
    if problems:
        raise SettingsError(problems)
    return layer


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """base updated by top, tables merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


class _Problems(list[str]):
    """Problems found so far, and where each setting's value came from."""

    def __init__(self, origins: Mapping[str, str]) -> None:
        super().__init__()
        self.origins = dict(origins)


def build(root: type, data: Mapping[str, Any], origin: str = "",
          origins: Mapping[str, str] | None = None) -> Any:
    """An instance of the dataclass root from data, checked; raises SettingsError listing
    every problem found (types first, then each dataclass's own ``problems()``).
    origin names the source of data (a file); origins names others per setting path."""
    problems = _Problems(origins or {})
    value = _convert_dataclass(root, data, "", origin, problems)
    if not problems:
        _collect_problems(value, "", problems)
    if problems:
        raise SettingsError(problems)
    return value


def _where(path: str, value: Any, origin: str) -> str:
    source = getattr(value, "origin", None) or origin
    return f"{path} (from {source})" if source else path


def _suggest(name: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(fields))}"


def _convert_dataclass(cls: type, data: Any, path: str, origin: str, problems: _Problems) -> Any:
    if isinstance(data, _FromText):
        origin = data.origin
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            problems.append(f"{_where(path, data, origin)}: expected a JSON object: {exc}")
            return None
    if not isinstance(data, Mapping):
        problems.append(f"{_where(path, data, origin)}: expected a table, got {data!r}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, raw in data.items():
        child = f"{path}.{key}" if path else key
        if key not in fields:
            problems.append(f"{_where(child, raw, origin)}: no such setting{_suggest(key, fields)}")
            continue
        kwargs[key] = _convert(hints[key], raw, child, origin, problems)
    for name, field in fields.items():
        if (name not in kwargs and field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING):
            child = f"{path}.{name}" if path else name
            problems.append(f"{_where(child, None, origin)}: required ({doc_of(field)})")
    try:
        return cls(**kwargs)
    except TypeError:
        # Only when a required setting is missing, which is already in problems.
        return None


def _convert(kind: Any, raw: Any, path: str, origin: str, problems: _Problems) -> Any:
    source = problems.origins.setdefault(path, getattr(raw, "origin", None) or origin)
    where = f"{path} (from {source})" if source else path
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, _FromText) and raw == ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], raw, path, origin, problems)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _convert_dataclass(kind, raw, path, origin, problems)
    if typing.get_origin(kind) is list:
        if isinstance(raw, _FromText):
            origin = raw.origin
            try:
                raw = json.loads(raw) if raw.strip().startswith("[") else [s for s in raw.split(",") if s]
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: expected a JSON list or comma-separated values: {exc}")
                return []
        if not isinstance(raw, list):
            problems.append(f"{where}: expected a list, got {raw!r}")
            return []
        return [_convert(args[0], item, f"{path}[{index}]", origin, problems) for index, item in enumerate(raw)]
    if typing.get_origin(kind) in (dict, typing.Mapping) or kind is dict:
        if isinstance(raw, _FromText):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: expected a JSON object: {exc}")
                return {}
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a table, got {raw!r}")
            return {}
        return {str(k): str(v) for k, v in raw.items()}
    return _scalar(kind, raw, where, problems)


def _scalar(kind: Any, raw: Any, where: str, problems: list[str]) -> Any:
    from_text = isinstance(raw, _FromText)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if from_text and raw.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return raw.lower() in ("true", "1", "yes", "on")
        problems.append(f"{where}: expected true or false, got {raw!r}")
        return False
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if from_text:
            try:
                return int(raw.replace("_", ""))
            except ValueError:
                pass
        problems.append(f"{where}: expected an integer, got {raw!r}")
        return 0
    if kind is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_text:
            try:
                return float(raw)
            except ValueError:
                pass
        problems.append(f"{where}: expected a number, got {raw!r}")
        return 0.0
    if kind is str:
        if isinstance(raw, str):
            return str(raw)
        problems.append(f"{where}: expected a string, got {raw!r}")
        return ""
    raise TypeError(f"settings type {kind!r} at {where} is not supported")


def _collect_problems(value: Any, path: str, problems: _Problems) -> None:
    """Each dataclass may define problems() -> list[(field, message)]: field is relative
    to it ('' for the object itself)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _collect_problems(item, f"{path}[{index}]", problems)
        return
    if not dataclasses.is_dataclass(value):
        return
    for field in dataclasses.fields(value):
        child = f"{path}.{field.name}" if path else field.name
        _collect_problems(getattr(value, field.name), child, problems)
    check = getattr(value, "problems", None)
    if callable(check):
        for name, message in check():
            where = ".".join(p for p in (path, name) if p) or "<root>"
            source = problems.origins.get(where)
            problems.append(f"{where} (from {source}): {message}" if source else f"{where}: {message}")


def render_toml(value: Any, path: str = "") -> str:
    """The tree as TOML, secrets masked, each setting preceded by its doc as a comment."""
    lines: list[str] = []
    _render_table(value, path, lines)
    return "\n".join(lines).strip() + "\n"


def _render_table(value: Any, path: str, lines: list[str], array_item: bool = False) -> None:
    scalars: list[tuple[dataclasses.Field[Any], Any]] = []
    tables: list[tuple[dataclasses.Field[Any], Any]] = []
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if dataclasses.is_dataclass(item) or (isinstance(item, list) and item and all(dataclasses.is_dataclass(i) for i in item)):
            tables.append((field, item))
        else:
            scalars.append((field, item))
    if path:
        lines.append("")
        lines.append(f"[[{path}]]" if array_item else f"[{path}]")
    for field, item in scalars:
        if item is None:
            lines.append(f"# {field.name} =   # not set: {doc_of(field)}")
            continue
        shown = SECRET_MASK if is_secret(field) else item
        lines.append(f"{field.name} = {_toml_value(shown)}")
    for field, item in tables:
        child = f"{path}.{field.name}" if path else field.name
        if isinstance(item, list):
            for element in item:
                _render_table(element, child, lines, array_item=True)
        else:
            _render_table(item, child, lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def reference_rows(root: type, path: str = "") -> list[tuple[str, str, str, str]]:
    """(setting, environment variable, default, doc) for every leaf setting of root."""
    rows = []
    hints = typing.get_type_hints(root)
    for field in dataclasses.fields(root):
        child = f"{path}.{field.name}" if path else field.name
        kind = hints[field.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            rows.extend(reference_rows(kind, child))
            continue
        element = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
        if isinstance(element, type) and dataclasses.is_dataclass(element):
            rows.append((child, ENV_PREFIX + child.upper().replace(".", "__"), "[]", doc_of(field)))
            rows.extend(reference_rows(element, f"{child}[]"))
            continue
        if field.default is not dataclasses.MISSING:
            default = "(secret)" if is_secret(field) and field.default else _toml_value(field.default) \
                if field.default is not None else "unset"
        elif field.default_factory is not dataclasses.MISSING:
            default = _toml_value(field.default_factory())
        else:
            default = "required"
        env = "" if "[]" in child else ENV_PREFIX + child.upper().replace(".", "__")
        rows.append((child, env, default, doc_of(field)))
    return rows
