"""Typed configuration: dataclasses read from YAML, overridable with ``--set a.b=value``.

Validation happens before any heavy work; errors name the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type/range."""


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path`` (an error names the file when it is not a mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a","b","c"], value), the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``data`` with every ``key.sub=value`` override applied."""
    import copy

    data = copy.deepcopy(data)
    for ov in overrides or ():
        path, value = parse_override(ov)
        node = data
        for k in path[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {k!r} is not a section")
        node[path[-1]] = value
    return data


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{name}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name}: {value!r} matches none of {args}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=name + ".")
    if tp in (list, tuple) or origin in (list, tuple, Sequence):
        (inner,) = get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__}")
        return [_coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            return {k: _coerce(v, args[1], f"{name}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError as e:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from e
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from e
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and checking every type.

    After construction the dataclass's own ``validate()`` (if any) runs, for range checks.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(prefix + u for u in unknown)}; "
                          f"allowed: {sorted(prefix + f for f in fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required field {prefix + name!r}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


#: field metadata key: leave the field out of :func:`to_dict` while it holds its default (an opt-in
#: added later, e.g. ``few_shot``, so stage fingerprints and written configs made without it stay the same)
OMIT_AT_DEFAULT = "omit_at_default"


def to_dict(obj: Any) -> dict:
    """Dataclass → plain dict (for writing the resolved config and the stage records).

    Fields whose metadata sets :data:`OMIT_AT_DEFAULT` are left out while they equal their default."""
    d = dataclasses.asdict(obj)
    _omit_defaults(obj, d)
    return d


def _omit_defaults(obj: Any, d: Any) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and isinstance(d, dict):
        for f in dataclasses.fields(obj):
            if f.name not in d:
                continue
            value = getattr(obj, f.name)
            if f.metadata.get(OMIT_AT_DEFAULT) and f.default is not dataclasses.MISSING and value == f.default:
                del d[f.name]
            else:
                _omit_defaults(value, d[f.name])
    elif isinstance(obj, (list, tuple)) and isinstance(d, (list, tuple)):
        for a, b in zip(obj, d):
            _omit_defaults(a, b)
    elif isinstance(obj, dict) and isinstance(d, dict):
        for k, v in obj.items():
            if k in d:
                _omit_defaults(v, d[k])


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict | None = None) -> T:
    """Read ``path`` (YAML), layer it over ``base``, apply overrides, and build ``cls``."""
    data = dict(base or {})
    if path:
        data = _deep_merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    """Raise :class:`ConfigError` unless ``lo <= value <= hi``."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}: {value!r} is outside [{lo}, {hi}]")


def check_finite(name: str, value: Any) -> None:
    """Raise :class:`ConfigError` if ``value`` (a number, or numbers nested in mappings / lists) holds NaN or ±inf.

    The error names the field path, e.g. ``term_weights.forget_ga: nan is not a finite number``.
    """
    import math

    if isinstance(value, bool):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{name}: {value!r} is not a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_finite(f"{name}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(f"{name}[{i}]", v)
