"""The machinery under the spec: typed fields with ranges and docs, a strict builder
that turns a TOML table into frozen dataclasses, a JSON Schema writer and a TOML writer.

Kept apart from `spec.py` so that the spec reads as a list of sections and keys. Imports
no jax.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from jaxpipe.errors import SpecError

__all__ = [
    "field",
    "build",
    "json_schema",
    "markdown_reference",
    "to_dict",
    "dump_toml",
    "locate",
    "is_section",
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


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


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
        if isinstance(value, list):
            (item,) = get_args(tp)[:1]
            return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    elif get_origin(tp) in (dict, Mapping):
        if isinstance(value, dict):
            return dict(value)
    elif is_section(tp):
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
    obj = cls(**kwargs)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(prefix)
    return obj


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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dump_toml(table: Mapping[str, Any], _prefix: str = "") -> str:
    """Writes nested dicts of TOML values as a TOML document, tables after scalars."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    chunks = ["\n".join(lines)] if lines else []
    for k, v in table.items():
        if isinstance(v, dict):
            name = f"{_prefix}.{k}" if _prefix else k
            chunks.append(f"[{name}]\n" + dump_toml(v, name).strip())
    return "\n\n".join(c for c in chunks if c) + "\n"


def json_schema(cls: type, title: str | None = None) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the section `cls`, from the same fields the
    builder checks, so the two cannot drift."""
    props: dict[str, Any] = {}
    for f, tp in _fields(cls):
        if f.name == getattr(cls, "_extra", None):
            continue
        prop = _json_type(tp)
        meta = f.metadata
        if meta.get("doc"):
            prop["description"] = meta["doc"]
        for k in ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum"):
            if meta.get(k) is not None:
                prop[re.sub(r"_(\w)", lambda m: m.group(1).upper(), k)] = meta[k]
        if meta.get("item_minimum") is not None and prop.get("type") == "array":
            prop["items"]["minimum"] = meta["item_minimum"]
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if dataclasses.is_dataclass(default):
            default = to_dict(default)
        elif isinstance(default, tuple):
            default = list(default)
        if default is not dataclasses.MISSING and default is not None:
            prop["default"] = default
        props[f.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "additionalProperties": bool(getattr(cls, "_extra", None)),
    }
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    if doc:
        schema["description"] = " ".join(doc.split())
    if title:
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
        } | schema
    return schema


def _json_type(tp: Any) -> dict[str, Any]:
    args = _union_args(tp)
    if args:
        opts = [_json_type(a) for a in args if a is not type(None)]
        return opts[0] if len(opts) == 1 else {"anyOf": opts}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if get_origin(tp) is Literal:
        return {"type": "string", "enum": list(get_args(tp))}
    if get_origin(tp) in (list, tuple):
        return {"type": "array", "items": _json_type(get_args(tp)[0])}
    if get_origin(tp) in (dict, Mapping):
        return {"type": "object"}
    if is_section(tp):
        return json_schema(tp)
    raise TypeError(f"no JSON Schema for {tp}")


def _md_type(tp: Any) -> str:
    args = _union_args(tp)
    if args:
        return " or ".join(_md_type(a) for a in args if a is not type(None))
    if get_origin(tp) is Literal:
        return " \\| ".join(f'`"{a}"`' for a in get_args(tp))
    if get_origin(tp) in (list, tuple):
        return f"list of {_md_type(get_args(tp)[0])}s"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names.get(tp, "table")


def _md_range(meta: Mapping[str, Any]) -> str:
    parts = []
    for k, sym in (
        ("minimum", "≥"),
        ("exclusive_minimum", ">"),
        ("maximum", "≤"),
        ("exclusive_maximum", "<"),
    ):
        if meta.get(k) is not None:
            parts.append(f"{sym} {meta[k]}")
    if meta.get("item_minimum") is not None:
        parts.append(f"each ≥ {meta['item_minimum']}")
    return ", ".join(parts)


def _md_default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    else:
        value = f.default_factory()  # type: ignore[misc]
    if value is None:
        return "unset"
    if isinstance(value, Mapping) and not value:
        return ""
    return f"`{_toml_value(value)}`"


def markdown_reference(cls: type, title: str, intro: str = "") -> str:
    """A Markdown reference of the section `cls` and its subsections: one table per
    section (key, type, default, range, meaning), from the same fields the builder checks."""
    out = [f"# {title}", ""]
    if intro:
        out += [intro, ""]

    def section(sub: type, path: str) -> None:
        doc = " ".join((sub.__doc__ or "").split())
        out.extend([f"## `[{path}]`", "", doc, ""])
        rows, nested = [], []
        extra_name = getattr(sub, "_extra", None)
        for f, tp in _fields(sub):
            inner = [a for a in (_union_args(tp) or (tp,)) if a is not type(None)]
            if len(inner) == 1 and is_section(inner[0]):
                nested.append((f.name, inner[0]))
                continue
            if f.name == extra_name:
                continue
            doc_cell = f.metadata.get("doc", "").replace("|", "\\|")
            cells = [f"`{f.name}`", _md_type(tp), _md_default(f), _md_range(f.metadata), doc_cell]
            rows.append("| " + " | ".join(cells) + " |")
        if rows:
            out.extend(["| key | type | default | range | meaning |", "|---|---|---|---|---|"])
            out.extend(rows)
            out.append("")
        if extra_name:
            out.extend(
                [
                    "Any other key here is passed to the optax function as a keyword "
                    "argument and checked against its signature.",
                    "",
                ]
            )
        for name, sub_cls in nested:
            section(sub_cls, f"{path}.{name}")

    for f, tp in _fields(cls):
        if is_section(tp):
            section(tp, f.name)
    return "\n".join(out).rstrip() + "\n"


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*$")
_ASSIGN = re.compile(
    r"^((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in text.split("."))


def locate(text: str, key: str) -> int | None:
    """The 1-based line where the dotted `key` (or, failing that, its table) is set."""
    path = _split_key(re.sub(r"\[\d+\]$", "", key))
    table: tuple[str, ...] = ()
    best: int | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            if table == path:
                return number
            if path[: len(table)] == table and table:
                best = number
            continue
        assign = _ASSIGN.match(line)
        if assign:
            full = table + _split_key(assign.group(1))
            if full == path:
                return number
            if path[: len(full)] == full:
                best = number
    return best
