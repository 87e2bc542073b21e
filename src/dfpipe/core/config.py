"""Typed, frozen configuration read from ``params.yaml`` (pydantic v2 models).

Every config class derives from :class:`Config`: strict types (no ``true`` for an int, no
``"3"`` for a number), unknown keys refused, instances frozen. Range checks are ``Field``
constraints, cross-field checks are ``model_validator``\\ s. :func:`build` turns pydantic's
errors into one :class:`ConfigError` naming each offending dotted key (``runs.resnet_5.lr: ...``):
a typo in ``params.yaml`` must never fall back to a silent default.

``params.yaml`` is read with a YAML 1.2 loader, the dialect ``dvc exp run -S`` writes back
(ruamel.yaml): a bare ``off`` stays the string ``"off"`` instead of PyYAML's (YAML 1.1) ``False``.

``runs.<name>`` entries are deep-merged over the ``run_defaults:`` block (:func:`merged_entry`),
so each run states only what differs from the defaults.

Paths: fields typed :data:`RepoPath` hold paths relative to the repository root (the folder
holding the params file being loaded); an absolute path, or one that leaves the repository
(``..`` or a symlink resolving outside it), is a :class:`ConfigError` naming the key.

Names: every key or value that becomes one path component (entry keys of ``sources``, ``variants``,
``runs``, ``evaluations``, ``frank``, ``features.caches``; variant, run, source and method names)
passes :func:`safe_name` (fields typed :data:`SafeName`): letters, digits, ``_ - .``, not empty,
no separator, no leading ``.``. Stage scripts print a :class:`ConfigError` as one line
``ConfigError: <dotted.key>: <what is wrong>`` and exit 2 (:func:`dfpipe.core.cli.run_stage`).
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path, PurePath
from typing import Annotated, Any, TypeVar, cast, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)

T = TypeVar("T", bound=BaseModel)
#: What :func:`build` validates: a Config, or any type pydantic validates (``RepoPath``, containers).
V = TypeVar("V")

PARAMS_FILE = "params.yaml"
#: Sections whose entries are merged over a defaults block before validation.
DEFAULTS_BLOCKS = {"runs": "run_defaults"}


class ConfigError(ValueError):
    """A ``params.yaml`` value is missing, unknown or of the wrong type."""


class Config(BaseModel):
    """Base of every params section/entry: strict, ``extra="forbid"``, frozen."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, regex_engine="python-re")


# ------------------------------------------------------------------------------------------------
# Paths inside the repository


def _repo_path(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, (str, PurePath)):
        raise ValueError(f"expected a path string, got {_show(value)}")
    path = Path(value)
    if path.is_absolute():
        raise ValueError(f"absolute paths are not allowed ({value}); use a path relative to the repository")
    if os.path.normpath(path).split(os.sep)[0] == "..":
        raise ValueError(f"{value} escapes the repository (..)")
    root = (info.context or {}).get("root") if info is not None else None
    if root is not None:
        root = Path(root).resolve()
        target = (root / path).resolve()
        if target != root and root not in target.parents:
            raise ValueError(f"{value} resolves outside the repository (symlink to {target})")
    return path


#: A path relative to the repository root that stays inside it (see the module docstring).
RepoPath = Annotated[
    Path,
    PlainValidator(_repo_path),
    PlainSerializer(lambda p: p.as_posix(), return_type=str),
]


# ------------------------------------------------------------------------------------------------
# Names that become path components

#: What a name may hold: it becomes one folder or file name (``data/faces/<source>/``,
#: ``models/<run>/``, a DVC stage key ``preprocess@<source>``), so it must never climb out of its
#: folder (``..``), name another one (``a/b``, ``/abs``), hide (``.x``) or be empty.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a path component (a one-line reason), or None when it can."""
    if not isinstance(value, str):
        return f"expected a name string, got {_show(value)}"
    if _NAME.fullmatch(value):
        return None
    if not value:
        why = "it is empty"
    elif "/" in value or "\\" in value:
        why = "it contains a path separator"
    elif value.startswith("."):
        why = "it starts with '.'"
    else:
        why = f"it contains {_show(next(c for c in value if not re.fullmatch(r'[A-Za-z0-9_.-]', c)))}"
    return (
        f"{_show(value)} is not a plain name: {why} (allowed: letters, digits, '_', '-', '.'; "
        f"no path separator, no leading '.')"
    )


def safe_name(key: str, value: Any) -> str:
    """``value`` if it can be one path component, else a :class:`ConfigError` ``<key>: <why>``.

    The one check for every name that a stage or library function turns into a folder or file
    name; call it before anything is written or deleted. ``key`` is the dotted params key the name
    comes from (``sources.ffhq``, ``variants.v1.train.ffhq``).
    """
    problem = name_problem(value)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")
    return value


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A name that becomes a path component (see :func:`safe_name`): entry keys, variant, run, source
#: and method names. ``PlainName`` and ``SafeName`` are the same check under two historic names.
SafeName = Annotated[str, AfterValidator(_name)]
PlainName = SafeName


# ------------------------------------------------------------------------------------------------
# Loading


#: Parsed files of this process, keyed by what identifies one version of a file: a stage builds
#: several sections from params.yaml, and the pure-Python YAML 1.2 parse costs ~0.4 s each time.
_PARSED: dict[tuple, dict[str, Any]] = {}


def load_yaml(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read a YAML mapping with a safe YAML 1.2 loader (the dialect DVC writes back with ``-S``).

    Returns a fresh copy each call; the parse is reused while the file's (device, inode, size,
    mtime) stay the same, so a file rewritten in place (``-S``, a test) is read again.
    """
    from ruamel.yaml import YAML  # shipped with DVC; pure: the C loader follows YAML 1.1 booleans
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _PARSED:
        try:
            with path.open("r", encoding="utf-8") as fh:
                data = YAML(typ="safe", pure=True).load(fh)
        except YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
        if len(_PARSED) >= 8:  # a stage reads one or two files; tests write many
            del _PARSED[next(iter(_PARSED))]
        _PARSED[key] = data
    return copy.deepcopy(_PARSED[key])


#: The params.yaml section of keys that say how a stage runs, never what it computes (worker counts,
#: executors, launch, device of training, logging, resume state): ``runtime.<section>`` is merged
#: into ``<section>`` on loading, and no stage lists ``runtime`` as a param.
RUNTIME = "runtime"


def section_data(data: Mapping[str, Any], section: str, where: str = PARAMS_FILE) -> dict[str, Any]:
    """The mapping ``section`` of params ``data`` with its ``runtime.<section>`` keys merged in.

    A key in both is a :class:`ConfigError` (one place per key: results in ``<section>``, how it
    runs in ``runtime.<section>``).
    """
    if section not in data:
        raise ConfigError(f"{section}: missing section in {where}")
    body, extra = data[section], (data.get(RUNTIME) or {}).get(section) or {}
    if not isinstance(body, Mapping) or not isinstance(extra, Mapping):
        return body  # the config class reports the wrong type with its dotted key
    both = sorted(set(body) & set(extra))
    if both:
        raise ConfigError(f"{section}.{both[0]}: also set as {RUNTIME}.{section}.{both[0]}; keep one")
    return {**body, **extra}


def load_section(section: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Build ``cls`` from the top-level ``section`` of the parameters file (with its runtime keys;
    an error in one of those names it as ``runtime.<section>.<key>``)."""
    data = load_yaml(path)
    try:
        return build(cls, section_data(data, section, str(path)), where=section, root=Path(path).parent)
    except ConfigError as exc:
        message = str(exc)
        for key in (data.get(RUNTIME) or {}).get(section) or {}:
            message = re.sub(rf"(?<![\w.]){section}\.{re.escape(str(key))}\b", f"{RUNTIME}.{section}.{key}", message)
        raise ConfigError(message) from None


def load_entry(section: str, key: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """Build entry ``key`` of the mapping ``section`` (e.g. ``sources.ffhq``, ``runs.resnet_5``).

    Foreach stages get their key on the command line; an unknown key is a :class:`ConfigError`
    listing the known ones, and so is a key of the section that cannot be a path component
    (:func:`merged_entry`). ``runs`` entries are merged over ``run_defaults`` first.
    """
    data = load_yaml(path)
    return build(
        cls, merged_entry(data, section, key, where=str(path)), where=f"{section}.{key}", root=Path(path).parent
    )


def merged_entry(data: Mapping[str, Any], section: str, key: str, where: str = PARAMS_FILE) -> Any:
    """Entry ``section.key`` of the params mapping ``data``, deep-merged over its defaults block.

    Every key of ``section`` names a foreach stage (``<stage>@<key>``) and its output folders, so
    ``key`` and then each key of the section must pass :func:`safe_name` first: one bad key stops
    every stage that reads the section, before anything is written.
    """
    safe_name(f"{section}.{key}", key)
    entries = data.get(section)
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{section}: must be a mapping of named entries ({where})")
    for name in entries:
        safe_name(f"{section}.{name}", name)
    if key not in entries:
        raise ConfigError(f"{section}.{key}: no such entry in {where} (known: {sorted(entries)})")
    entry = entries[key]
    block = DEFAULTS_BLOCKS.get(section)
    if block is None:
        return entry
    defaults = data.get(block, {})  # absent: every entry states every key itself
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{where}: '{block}' must be a mapping (merged into every {section} entry)")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{section}.{key}: expected a mapping, got {_show(entry)}")
    return deep_merge(defaults, entry)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``; nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(out.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


def build(cls: type[V], data: Any, where: str = "", root: str | Path | None = None) -> V:
    """Validate ``data`` (a YAML mapping) into ``cls``; a :class:`ConfigError` on any problem.

    ``where`` is the dotted path used in messages; ``root`` the repository root against which
    :data:`RepoPath` fields are resolved (None: checked lexically only).
    """
    where = where or getattr(cls, "__name__", str(cls))
    try:
        # a type object is hashable; mypy cannot tell for a TypeVar without a bound
        return _adapter(cast(Hashable, cls)).validate_python(_tuples(data), strict=True, context={"root": root})
    except ValidationError as exc:
        raise ConfigError("; ".join(_message(cls, where, err) for err in exc.errors())) from None


@functools.cache
def _adapter(cls: Any) -> TypeAdapter:
    """Validator of ``cls``: a :class:`Config` or a container of them (``dict[str, VariantConfig]``)."""
    return TypeAdapter(cls)


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`build` for logging and checkpoints: plain YAML types (lists, str paths)."""
    if isinstance(obj, BaseModel):
        return to_dict(obj.model_dump())
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, PurePath):
        return obj.as_posix()
    return obj


# ------------------------------------------------------------------------------------------------
# Errors


def _tuples(value: Any) -> Any:
    """YAML lists as tuples (config sequences are immutable tuples; strict mode takes no list)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    return value


_TYPE_MESSAGES = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true/false",
    "string_type": "expected a string",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
    "multiple_of": ("a multiple of", "multiple_of"),
    "too_short": ("at least this long:", "min_length"),
    "string_pattern_mismatch": ("a match of", "pattern"),
}


def _message(cls: Any, where: str, err: Mapping[str, Any]) -> str:
    loc, allowed = _untagged(cls, list(err["loc"]))
    if loc and loc[-1] == "[key]":  # pydantic's marker for a mapping key (not its value) being wrong
        loc.pop()
    kind = err["type"]
    value = err.get("input")
    if kind == "union_tag_invalid":  # a discriminated union (e.g. the model configs) without that tag
        text = f"{err['ctx']['tag']!r} is not one of [{err['ctx']['expected_tags']}]"
        loc.append(err["ctx"]["discriminator"].strip("'"))
    elif kind == "union_tag_not_found":
        text = f"missing required key {err['ctx']['discriminator']}"
    elif kind in ("extra_forbidden", "missing"):  # the dotted path below ends with the offending key
        key = loc[-1]
        fields = allowed
        if kind == "missing":
            text = f"missing required key '{key}'"
        else:
            text = "unknown key" + (f" (allowed: {fields})" if fields else "")
    elif kind in _TYPE_MESSAGES:
        text = f"{_TYPE_MESSAGES[kind]}, got {_show(value)}"
    elif kind == "literal_error":
        text = f"{_show(value)} is not one of [{err['ctx']['expected'].replace(' or ', ', ')}]"
    elif kind in ("value_error", "assertion_error"):
        text = str(err["ctx"]["error"])
    elif kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        text = f"must be {op} {err['ctx'][key]}, got {_show(value)}"
    else:  # Field constraints: "Input should be greater than 0" -> "should be greater than 0, got -1"
        msg = err["msg"]
        text = f"{msg[len('Input ') :] if msg.startswith('Input ') else msg}, got {_show(value)}"
    path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return f"{path}: {text}"


def _members(annotation: Any) -> list[Any]:
    """The model classes of a (possibly ``Annotated``, ``Optional`` or union) annotation."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [a for arg in get_args(annotation) for a in _members(arg)]


def _untagged(cls: Any, loc: list[Any]) -> tuple[list[Any], list[str]]:
    """``loc`` without the member tags pydantic inserts for a discriminated union (``model.f3net.x``
    -> ``model.x``), and the field names of the model that holds the last key of ``loc`` (the tagged
    member for a union), for "allowed:" lists."""
    out: list[Any] = []
    current: Any = cls
    holder: list[str] = []
    for part in loc:
        members = _members(current)
        tagged = [m for m in members if isinstance(part, str) and _tag_of(m) == part]
        if len(members) > 1 and tagged:
            current = tagged[0]
            continue
        holder = sorted(members[0].model_fields) if len(members) == 1 else []
        out.append(part)
        field = members[0].model_fields.get(part) if len(members) == 1 and isinstance(part, str) else None
        current = field.annotation if field is not None else None
    return out, holder


def _tag_of(model: Any) -> str | None:
    """The one value of a model's ``Literal`` ``name`` field (its discriminator tag), else None."""
    field = getattr(model, "model_fields", {}).get("name")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
