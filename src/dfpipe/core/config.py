"""Typed, frozen configuration read from ``params.yaml``.

Every stage reads its section of ``params.yaml`` into a frozen dataclass with :func:`build`.
An unknown key, a missing key or a value of the wrong type is a :class:`ConfigError` naming the
dotted path of the offending key: a typo in ``params.yaml`` must never fall back to a silent default.

Dataclass fields may be annotated with: ``int``, ``float``, ``str``, ``bool``, ``Path``,
``Optional[X]`` / ``X | None``, ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, X]`` and nested dataclasses. Fields with a default may be omitted from the YAML.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

import yaml

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A ``params.yaml`` value is missing, unknown or of the wrong type."""


def load_yaml(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (never the unsafe loader)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    with path.open("r", encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_section(section: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Build ``cls`` from the top-level ``section`` of the parameters file."""
    data = load_yaml(path)
    if section not in data:
        raise ConfigError(f"{path}: missing section '{section}'")
    return build(cls, data[section], where=section)


def load_entry(section: str, key: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Build entry ``key`` of the mapping ``section`` (e.g. ``sources.ffhq``, ``runs.resnet_5``).

    Foreach stages get their key on the command line; an unknown key is a :class:`ConfigError`
    listing the known ones.
    """
    data = load_yaml(path)
    entries = data.get(section)
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{path}: section '{section}' must be a mapping of named entries")
    if key not in entries:
        raise ConfigError(f"{path}: no entry '{key}' under '{section}' (known: {sorted(entries)})")
    return build(cls, entries[key], where=f"{section}.{key}")


def build(cls: type[T], data: Any, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, strictly.

    Raises :class:`ConfigError` on unknown keys, missing required keys and type mismatches.
    ``where`` is the dotted path used in error messages.
    """
    return _convert(cls, data, where or cls.__name__)


def _convert(tp: Any, value: Any, where: str) -> Any:  # noqa: C901 - one branch per type form
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}"
            )
        kwargs = {}
        for name, field in fields.items():
            if name in value:
                kwargs[name] = _convert(hints[name], value[name], f"{where}.{name}")
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required key '{name}'")
        obj = tp(**kwargs)
        check = getattr(obj, "validate", None)
        if callable(check):
            try:
                check()
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        return obj

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {_show(value)} matches none of {args}: {errors}")

    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {_show(value)} is not one of {list(args)}")
        return value

    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))

    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        key_t, val_t = args if args else (str, Any)
        return {
            _convert(key_t, k, f"{where}.<key>"): _convert(val_t, v, f"{where}.{k}")
            for k, v in value.items()
        }

    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {_show(value)}")
        path = Path(value)
        if path.is_absolute():
            raise ConfigError(f"{where}: absolute paths are not allowed ({value}); use a path relative to the repository")
        return path
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`build` for logging and checkpoints: dataclasses to plain YAML types."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj
