"""The machinery under the spec: typed fields with ranges and docs, and a strict
builder that turns a TOML table into frozen dataclasses. The same checks run whenever a
section is constructed (`Section.__post_init__`): from TOML, a dict, Python keyword
arguments or `dataclasses.replace`. With the TOML writer; the JSON Schema, the Markdown
reference and the line locator are in `schema_text.py`.

Kept apart from `spec.py` so that the spec reads as a list of sections and keys. Imports
no jax.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, get_args, get_origin

from jaxpipe.errors import SpecError

__all__ = [
    "field",
    "build",
    "to_dict",
    "dump_toml",
    "toml_value",
    "is_section",
    "Section",
    "section_paths",
]


def field(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    item_minimum: float | None = None,
    internal: bool = False,
) -> Any:
    """A spec key: its default, one line of documentation and its numeric range."""
    meta = {
        "doc": doc,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "exclusive_maximum": exclusive_maximum,
        "item_minimum": item_minimum,
        "internal": internal,
    }
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _fields(cls: type) -> tuple[tuple[dataclasses.Field, Any], ...]:
    """(field, its resolved annotation) per spec key; once per class (resolving the
    annotations is most of building a spec)."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (f, hints[f.name]) for f in dataclasses.fields(cls) if not f.metadata.get("internal")
    )


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if get_origin(tp) in (typing.Union, types.UnionType):
        return get_args(tp)
    return None


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "a boolean (true/false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "nothing"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0]).split(' ', 1)[1]}s"
    if is_section(tp):
        return "a table"
    args = _union_args(tp)
    if args:
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if get_origin(tp) in (dict, Mapping):
        return "a table"
    return str(tp)


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp`; returns it (lists as tuples)."""
    args = _union_args(tp)
    if args:
        real = [a for a in args if a is not type(None)]
        if len(real) == 1 and value is not None:  # `X | None`: X's own, precise error
            return _coerce(value, real[0], key)
        for arg in args:
            if is_section(arg) and isinstance(value, dict):
                # A table for an optional section: its own error (an unknown key, a bad
                # value) is the one to report, not "expected a table".
                return _coerce(value, arg, key)
            try:
                return _coerce(value, arg, key)
            except SpecError:
                continue
        raise SpecError(f"expected {_type_name(tp)}, found {_toml_type(value)}", key=key)
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise SpecError(f"expected a finite number, found {value}", key=key)
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif get_origin(tp) is Literal:
        if isinstance(value, str) and value in get_args(tp):
            return value
        if isinstance(value, str):
            choices = [str(a) for a in get_args(tp)]
            near = difflib.get_close_matches(value, choices, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SpecError(
                f"unknown value {value!r}{hint}; expected one of {', '.join(map(repr, choices))}",
                key=key,
            )
    elif get_origin(tp) in (list, tuple):
        if isinstance(value, (list, tuple)):
            (item,) = get_args(tp)[:1]
            return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    elif get_origin(tp) in (dict, Mapping):
        if isinstance(value, dict):
            return dict(value)
    elif is_section(tp):
        if isinstance(value, tp):  # validated when it was constructed
            return value
        if isinstance(value, dict):
            return build(tp, value, key)
    raise SpecError(f"expected {_type_name(tp)}, found {_toml_type(value)}", key=key)


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    values = value if isinstance(value, tuple) else (value,)
    lo, hi = meta.get("minimum"), meta.get("maximum")
    xlo, xhi = meta.get("exclusive_minimum"), meta.get("exclusive_maximum")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        where = key if not isinstance(value, tuple) else f"{key} entry {v}"
        if lo is not None and v < lo:
            raise SpecError(f"must be ≥ {lo}, found {v}", key=where)
        if hi is not None and v > hi:
            raise SpecError(f"must be ≤ {hi}, found {v}", key=where)
        if xlo is not None and v <= xlo:
            raise SpecError(f"must be > {xlo}, found {v}", key=where)
        if xhi is not None and v >= xhi:
            raise SpecError(f"must be < {xhi}, found {v}", key=where)
    item_lo = meta.get("item_minimum")
    if item_lo is not None and isinstance(value, tuple):
        for i, v in enumerate(value):
            if isinstance(v, (int, float)) and v < item_lo:
                raise SpecError(f"every entry must be ≥ {item_lo}, found {v}", key=f"{key}[{i}]")


def build(cls: type, table: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds the frozen section `cls` from a TOML table, rejecting unknown keys.

    A section with a class attribute `_extra = "name"` collects unknown keys into its
    mapping field `name` (the optimizer's keyword arguments, say) instead of rejecting
    them; the component that consumes them checks them against its own signature.
    """
    fields = _fields(cls)
    names = [f.name for f, _ in fields]
    extra_name = getattr(cls, "_extra", None)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in table.items():
        if not isinstance(name, str):  # a dict from Python, not TOML: {1: 2}
            raise SpecError(
                f"key {name!r} ({type(name).__name__}) is not text; spec keys are strings, "
                f"as in a TOML file; valid keys here: {', '.join(names)}",
                key=prefix or None,
            )
        key = f"{prefix}.{name}" if prefix else name
        if name not in names or name == extra_name:
            if extra_name:
                extra[name] = value
                continue
            near = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            # A key written outside its section (`epochs = 3` above [training]).
            homes = [
                f.name
                for f, tp in fields
                if is_section(tp) and name in [g.name for g, _ in _fields(tp)]
            ]
            if homes and not isinstance(value, dict):
                hint = f"it belongs in a section: [{homes[0]}] {name} = ...; "
            what = "section" if isinstance(value, dict) else "key"
            raise SpecError(
                f"unknown {what} {name!r}; {hint}valid keys here: {', '.join(names)}", key=key
            )
    for f, tp in fields:
        if f.name == extra_name or f.name not in table:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = _coerce(table[f.name], tp, key)
        _check_range(value, f.metadata, key)
        kwargs[f.name] = value
    if extra_name:
        kwargs[extra_name] = extra
    token = _PREFIX.set(prefix)  # the section's checks name keys under this prefix
    try:
        return cls(**kwargs)
    finally:
        _PREFIX.reset(token)


# The key path of the section being built from a table (see `build`); None when a
# section is constructed directly, which then uses its class's home path.
_PREFIX: contextvars.ContextVar[str | None] = contextvars.ContextVar("prefix", default=None)


def plain(value: Any) -> Any:
    """A Python value as TOML would give it (tuples as lists), so `_coerce` can check it."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


class Section:
    """Base of every spec section: its keys are type- and range-checked, and its own
    `_check(where)` run, whenever it is constructed, whatever the route (a TOML table, a
    dict, keyword arguments, `dataclasses.replace`). Errors name the key path."""

    _home: ClassVar[str] = ""  # where the section sits in a Spec; set by section_paths

    def __post_init__(self) -> None:
        prefix = _PREFIX.get()
        validate(self, self._home if prefix is None else prefix)


def validate(obj: Any, prefix: str) -> None:
    """Checks (and normalises: lists to tuples, ints to floats) a constructed section."""
    extra_name = getattr(type(obj), "_extra", None)
    for f, tp in _fields(type(obj)):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if f.name == extra_name:
            if not isinstance(value, Mapping):
                raise SpecError(f"expected a table, found {_toml_type(value)}", key=key)
            object.__setattr__(obj, f.name, dict(value))
            continue
        value = _coerce(plain(value), tp, key)
        _check_range(value, f.metadata, key)
        object.__setattr__(obj, f.name, value)  # frozen: normalised once, here
    check = getattr(obj, "_check", None)
    if check is not None:
        check(prefix)


def section_paths(root: type, prefix: str = "") -> None:
    """Records on each section class of `root` its key path ("training.early_stopping"),
    for the errors of a section constructed on its own."""
    for f, tp in _fields(root):
        inner = [a for a in (_union_args(tp) or (tp,)) if a is not type(None)]
        for sub in inner:
            if is_section(sub):
                path = f"{prefix}.{f.name}" if prefix else f.name
                sub._home = path
                section_paths(sub, path)


def to_dict(obj: Any) -> dict[str, Any]:
    """The spec as plain TOML-ready values (tuples as lists, `None` left out)."""
    out: dict[str, Any] = {}
    extra_name = getattr(type(obj), "_extra", None)
    for f, _ in _fields(type(obj)):
        value = getattr(obj, f.name)
        if f.name == extra_name:
            out.update(value)
        elif value is None:
            continue
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dump_toml(table: Mapping[str, Any], _prefix: str = "") -> str:
    """Writes nested dicts of TOML values as a TOML document, tables after scalars."""
    lines = [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    chunks = ["\n".join(lines)] if lines else []
    for k, v in table.items():
        if isinstance(v, dict):
            name = f"{_prefix}.{k}" if _prefix else k
            chunks.append(f"[{name}]\n" + dump_toml(v, name).strip())
    return "\n\n".join(c for c in chunks if c) + "\n"
