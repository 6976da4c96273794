"""The experiment spec: the whole `Spec`, loaded from TOML, a dict or overrides and
validated once, whatever the route (each section checks itself on construction, so
`dataclasses.replace` is checked too). The sections are in `sections.py` and
`hwspec.py`; the text side (TOML writer, JSON Schema, Markdown) in `schema_text.py`.
Imports no jax.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jaxpipe.errors import SpecError
from jaxpipe.files import read_input_file
from jaxpipe.spec import schema
from jaxpipe.spec import text as schema_text
from jaxpipe.spec.hardware import HardwareSpec
from jaxpipe.spec.schema import Section, field
from jaxpipe.spec.sections import (
    CheckpointSpec,
    DataSpec,
    ExperimentSpec,
    ModelSpec,
    OptimizerSpec,
    PreprocessSpec,
    RuntimeSpec,
    TrainingSpec,
)
from jaxpipe.spec.sweep import LoggingSpec, SweepSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Spec",
    "load_spec",
    "parse_spec",
    "dump_spec",
    "spec_schema",
    "spec_markdown",
    "SpecOrigin",
    "path_from",
    "Overrides",
]

# Deeper nesting than any spec needs; a hostile file nested hundreds of levels deep would
# otherwise exhaust Python's recursion limit in the TOML parser or in our writers.
MAX_DEPTH = 16

Overrides = Mapping[str, Any] | Iterable[str]


@dataclass(frozen=True)
class Spec(Section):
    """A whole experiment."""

    experiment: ExperimentSpec = field(factory=ExperimentSpec)
    data: DataSpec = field(factory=DataSpec)
    preprocess: PreprocessSpec = field(factory=PreprocessSpec)
    model: ModelSpec = field(factory=ModelSpec)
    optimizer: OptimizerSpec = field(factory=OptimizerSpec)
    training: TrainingSpec = field(factory=TrainingSpec)
    checkpoint: CheckpointSpec = field(factory=CheckpointSpec)
    runtime: RuntimeSpec = field(factory=RuntimeSpec)
    hardware: HardwareSpec = field(factory=HardwareSpec)
    sweep: SweepSpec | None = field(None, "Many trials of this experiment (see sweepspec.py).")
    logging: LoggingSpec = field(factory=LoggingSpec)
    base_dir: str = field(".", internal=True)
    source: str | None = field(None, internal=True)
    # Where the spec came from, to place errors found after loading; not part of its value.
    overrides: tuple[str, ...] = dataclasses.field(
        default=(), compare=False, repr=False, metadata={"internal": True}
    )
    text: str | None = dataclasses.field(
        default=None, compare=False, repr=False, metadata={"internal": True}
    )
    # How errors name the overrides: "--set" (the CLI's strings) or "overrides" (a dict).
    override_label: str = dataclasses.field(
        default="--set", compare=False, repr=False, metadata={"internal": True}
    )

    def _check(self, where: str) -> None:
        if self.training.class_weight is not None and self.model.task == "regression":
            raise SpecError(
                'weighs classes; model.task = "regression" has none: remove it',
                key="training.class_weight",
            )
        data = self.data
        if data.folds is not None and self.sweep is not None:
            raise SpecError(
                "cross-validation runs one spec's folds as one program, and a [sweep] runs "
                "many specs; remove data.folds or the [sweep] section",
                key="data.folds",
            )
        if data.source == "synthetic" and data.folds is not None:
            self._check_synthetic_folds(data.synthetic.rows, data.folds)
        elif data.source == "synthetic":
            for key in ("features", "categorical"):
                if getattr(data, key):
                    raise SpecError(
                        "applies to columns of a data file; synthetic data has none",
                        key=f"data.{key}",
                    )
            rows = data.synthetic.rows
            val = data.validation
            n_val = val if isinstance(val, int) else int(round(rows * val))
            if n_val >= rows or n_val < 1:
                raise SpecError(
                    f"holds out {n_val} of {rows} rows; it must leave at least one row to "
                    "train on and hold out at least one",
                    key="data.validation",
                )
            if self.training.batch_size > rows - n_val:
                raise SpecError(
                    f"batch of {self.training.batch_size} is larger than the training split "
                    f"({rows - n_val} rows); lower it",
                    key="training.batch_size",
                )

    def _check_synthetic_folds(self, rows: int, folds: int) -> None:
        """Each fold holds out rows // folds rows (data/folds.py)."""
        held = rows // folds
        if held < 1:
            raise SpecError(
                f"{folds} folds of {rows} rows leave a fold no rows to hold out; use at "
                f"most {rows} folds",
                key="data.folds",
            )
        if self.training.batch_size > rows - held:
            raise SpecError(
                f"batch of {self.training.batch_size} is larger than a fold's training part "
                f"({rows - held} rows); lower it",
                key="training.batch_size",
            )

    def __repr__(self) -> str:
        """One line of what matters (the whole spec: `dump_spec(spec)`, the TOML)."""
        d, m, o, t = self.data, self.model, self.optimizer, self.training
        rows = (
            f"synthetic {d.synthetic.rows}×{d.synthetic.features}"
            if d.source == "synthetic"
            else f"{d.source} {d.path}"
            if d.path
            else (d.source or "no data given")
        )
        return (
            f"Spec({self.experiment.name!r}: {rows}; {m.task} MLP {list(m.hidden)} "
            f"{m.activation}; {o.name} lr {o.learning_rate:g}; {t.epochs} epochs × batch "
            f"{t.batch_size}{'; sweep' if self.sweep is not None else ''})"
        )

    def _repr_html_(self) -> str:
        """A notebook's view: the resolved spec as TOML."""
        import html

        return f"<pre>{html.escape(dump_spec(self))}</pre>"

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], *, base_dir: str = ".") -> Spec:
        """A spec from nested dicts as a TOML file would hold them (`{"training":
        {"epochs": 3}}`), checked exactly as a file is: a bad key or value raises
        SpecError naming its key path. Paths are relative to `base_dir`."""
        if not isinstance(table, Mapping):
            raise SpecError(f"expected a table (dict) of sections, found {type(table).__name__}")
        _check_depth(table, "the spec")
        return dataclasses.replace(schema.build(cls, dict(table)), base_dir=base_dir)

    @property
    def origin(self) -> SpecOrigin:
        """Where this spec came from, to place errors found after loading."""
        return SpecOrigin(self.source, self.text, self.overrides, self.override_label)

    def resolve_path(self, path: str) -> str:
        """A data path as the spec means it: relative to the spec file's folder."""
        return path_from(self.base_dir, path)

    def resolved(self) -> Spec:
        """The spec with its data and catalog paths made absolute, so a copy of it (a run
        directory's spec.toml) works from anywhere."""
        resolved = self
        if self.data.path is not None:
            val = self.data.validation
            data = dataclasses.replace(
                self.data,
                path=self.resolve_path(self.data.path),
                validation=self.resolve_path(val) if isinstance(val, str) else val,
            )
            resolved = dataclasses.replace(resolved, data=data)
        if isinstance(self.hardware.catalog, str):
            catalog = self.resolve_path(self.hardware.catalog)
            resolved = dataclasses.replace(
                resolved, hardware=dataclasses.replace(self.hardware, catalog=catalog)
            )
        return resolved


def path_from(base_dir: str, path: str) -> str:
    """`path` relative to `base_dir` (a spec's folder) unless absolute (`Spec.resolve_path`)."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


schema.section_paths(Spec)  # errors of a section built on its own name its key path


def _check_depth(value: Any, where: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise SpecError(
            f"{where} nests tables or lists more than {MAX_DEPTH} levels deep; "
            "a spec needs a few at most"
        )
    items = value.values() if isinstance(value, Mapping) else value
    if isinstance(value, (Mapping, list, tuple)):
        for v in items:
            _check_depth(v, where, depth + 1)


def _toml_loads(text: str, file: str) -> dict[str, Any]:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise SpecError(
            f"invalid TOML: {e}", file=file, line=int(m.group(1)) if m else None
        ) from None
    except RecursionError:
        raise SpecError(
            f"nests tables or lists too deeply to read (a spec needs at most {MAX_DEPTH})",
            file=file,
        ) from None
    _check_depth(table, "the file")
    return table


def _override_value(key: str, text: str) -> Any:
    """The TOML value of `--set KEY=TEXT`. The whole text must be one value: anything
    after it (a second value, a comment, a newline and another key) is refused rather
    than silently dropped."""
    text = text.strip()
    try:
        table = tomllib.loads(f"v = {text}\n")
        wrapped = tomllib.loads(f"v = [{text}]\n")["v"]
    except tomllib.TOMLDecodeError:
        table = wrapped = None
    except RecursionError:
        raise SpecError("value nests too deeply", key=key, file="--set") from None
    if table is not None and list(table) == ["v"] and len(wrapped) == 1 and not text.endswith(","):
        return table["v"]
    # A bare word (`--set optimizer.name=adamw`) is what users type; take it as a string.
    if re.fullmatch(r"[A-Za-z_][\w.\-/]*", text):
        return text
    raise SpecError(
        f"value {text!r} is not a TOML value, or has text after the value (quote "
        'strings: key="text")',
        key=key,
        file="--set",
    )


_KEY = re.compile(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*")


def _parse_override(item: str) -> tuple[str, Any]:
    if not isinstance(item, str):
        raise SpecError(f"override {item!r} is not a KEY=VALUE string", file="--set")
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(
            f"override {item!r} is not KEY=VALUE (e.g. training.epochs=3)", file="--set"
        )
    if not _KEY.fullmatch(key):
        raise SpecError(
            f"override key {key!r} is not a dotted key such as training.epochs", file="--set"
        )
    value = _override_value(key, text)
    _check_depth(value, f"--set {key}")
    return key, value


def _merge(node: dict[str, Any], name: str, value: Any, key: str, label: str) -> None:
    """Sets node[name] = value; a table merges into the table already there, key by key,
    so `model={hidden=[8]}` changes model.hidden and keeps model.task."""
    old = node.get(name)
    if isinstance(value, Mapping) and isinstance(old, dict):
        for k, v in value.items():
            _merge(old, k, v, f"{key}.{k}", label)
        return
    if isinstance(old, dict) and not isinstance(value, Mapping):
        raise SpecError(
            f"{key} is a table in the spec; set its keys ({key}.NAME=VALUE), not the whole table",
            key=key,
            file=label,
        )
    node[name] = dict(value) if isinstance(value, Mapping) else value


def _apply_override(table: dict[str, Any], key: str, value: Any, label: str = "--set") -> None:
    parts = key.split(".")
    node = table
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(
                f"{'.'.join(parts[: i + 1])} is a value, not a table", key=key, file=label
            )
        node = child
    _merge(node, parts[-1], value, key, label)


def _override_items(overrides: Overrides | None) -> tuple[list[tuple[str, Any]], str]:
    """(key, value) pairs of `["k=v", ...]` (TOML values, as `--set` takes them) or of a
    dict `{"training.epochs": 3}` (Python values), and the label errors carry."""
    if overrides is None:
        return [], "--set"
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise SpecError(
                    f"override key {key!r} is not a dotted key such as training.epochs",
                    file="overrides",
                )
            _check_depth(value, f"overrides[{key!r}]")
            items.append((key, schema.plain(value)))
        return items, "overrides"
    return [_parse_override(item) for item in overrides], "--set"


def parse_spec(
    text: str,
    *,
    file: str = "<spec>",
    base_dir: str = ".",
    overrides: Overrides | None = (),
) -> Spec:
    """Parses and validates a spec from TOML text; errors name the file and line. A UTF-8
    byte-order mark at the start (Windows editors add one) is ignored."""
    text = text.removeprefix("\ufeff")
    table = _toml_loads(text, file)
    items, label = _override_items(overrides)
    overridden = set()
    for key, value in items:
        _apply_override(table, key, value, label)
        overridden.add(key)
    try:
        spec = schema.build(Spec, table)
        spec = dataclasses.replace(
            spec,
            base_dir=base_dir,
            source=file,
            overrides=tuple(overridden),
            text=text,
            override_label=label,
        )
    except SpecError as e:
        if e.file is not None:
            raise
        raise _placed(e, text, file, overridden, label) from None
    return spec


def _placed(
    e: SpecError, text: str, file: str, overridden: Iterable[str], label: str = "--set"
) -> SpecError:
    key = re.sub(r"(\[\d+\])+$", "", e.key or "")  # model.hidden[1] is model.hidden's
    # An error at the override's key, inside it, or at a table it created (a misspelt
    # section) belongs to --set.
    from_set = any(
        key == k or key.startswith(k + ".") or (key and k.startswith(key + ".")) for k in overridden
    )
    return SpecError(
        e.detail,
        key=e.key,
        file=label if from_set else file,
        line=None if from_set else schema_text.locate(text, key),
    )


@dataclass(frozen=True)
class SpecOrigin:
    """Where a spec came from (`Spec.origin`): its file, text and overrides, what a
    check after loading needs to place its error as the loader places one."""

    source: str | None = None
    text: str | None = None
    overrides: tuple[str, ...] = ()
    override_label: str = "--set"

    def place(self, e: SpecError) -> SpecError:
        """A SpecError found after loading (by a check that needs optax, say) with the
        spec file and line, or `--set`, added as the loader adds them."""
        if e.file is not None or self.source is None:
            return e
        return _placed(e, self.text or "", self.source, self.overrides, self.override_label)


def load_spec(path: str | os.PathLike[str], overrides: Overrides | None = ()) -> Spec:
    """Loads the TOML spec at `path`, applies overrides (`{"training.epochs": 3}` or
    `["training.epochs=3", ...]`) and validates it."""
    path = os.fspath(path)
    try:  # a regular file of bounded size: /dev/zero or a FIFO fail at once
        raw = read_input_file(path, "spec file")
    except FileNotFoundError:
        raise SpecError("spec file not found; check the path", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("spec file is not UTF-8 text", file=path) from None
    base = os.path.dirname(os.path.abspath(path))
    return parse_spec(text, file=path, base_dir=base, overrides=overrides)


def spec_markdown() -> str:
    """The spec reference (docs/spec.md), generated from the same fields the loader checks."""
    return schema_text.markdown_reference(
        Spec,
        title="jaxpipe experiment spec",
        intro=(
            "Generated from `jaxpipe/spec/experiment.py` by `jaxpipe schema --format markdown`; "
            "`tests/test_docs.py` fails if this file and the schema differ.\n\n"
            "An experiment is one TOML file. Every section and key is optional (the defaults "
            "are listed); unknown sections and keys are errors. Paths are relative to the "
            "spec file. `--set KEY=VALUE` overrides any key (the value is TOML) and is "
            "checked like the file."
        ),
    )


def dump_spec(spec: Spec) -> str:
    """The resolved spec as TOML; `parse_spec(dump_spec(s))` gives `s` back."""
    return schema.dump_toml(schema.to_dict(spec))


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file."""
    return schema_text.json_schema(Spec, title="jaxpipe experiment")
