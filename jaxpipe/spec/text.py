"""The spec as text: the JSON Schema and Markdown reference (from the
same fields the builder checks, so they cannot drift) and the line locator that places
an error in the spec file. Imports no jax.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from jaxpipe.spec.schema import _fields, _union_args, is_section, to_dict, toml_value

__all__ = ["json_schema", "markdown_reference", "locate"]


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
    return f"`{toml_value(value)}`"


def _md_text(text: str) -> str:
    """Prose for a Markdown page: `|` escaped for the table, and `<` `>` outside code
    spans as entities (a bare `<run>` is an HTML tag to Markdown, hidden on the page)."""
    parts = re.split(r"(`[^`]*`)", text.replace("|", "\\|"))
    return "".join(
        p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts
    )


def markdown_reference(cls: type, title: str, intro: str = "") -> str:
    """A Markdown reference of the section `cls` and its subsections: one table per
    section (key, type, default, range, meaning), from the same fields the builder checks."""
    out = [f"# {title}", ""]
    if intro:
        out += [intro, ""]

    def section(sub: type, path: str) -> None:
        doc = _md_text(" ".join((sub.__doc__ or "").split()))
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
            doc_cell = _md_text(f.metadata.get("doc", ""))
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
        inner = [a for a in (_union_args(tp) or (tp,)) if a is not type(None)]
        if len(inner) == 1 and is_section(inner[0]):  # an optional section ([sweep]) too
            section(inner[0], f.name)
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
