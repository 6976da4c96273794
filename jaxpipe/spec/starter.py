"""`jaxpipe init NAME`: a starter experiment (a spec and its data) written from the
package's own copy, so the examples are reachable after `pip install`. Imports no jax."""

from __future__ import annotations

import os
import re
from importlib import resources

from jaxpipe.errors import JaxpipeError
from jaxpipe.files import atomic_write, environment_problem

__all__ = ["EXAMPLES", "init_project"]

# example -> its data file (both shipped in jaxpipe/examples/, copies of experiments/)
EXAMPLES = {"penguins": "penguins.csv", "diabetes": "diabetes.csv"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def init_project(name: str, example: str = "penguins", parent: str = ".") -> list[str]:
    """Writes `parent/name/name.toml` (the example's spec, named `name`) and its data file
    next to it; returns the paths written. Refuses to overwrite anything."""
    if not _NAME.match(name):
        raise JaxpipeError(
            f"init {name!r}: a name of letters, digits, '.', '_' or '-' is expected "
            "(it names the folder, the spec file and the experiment)"
        )
    if example not in EXAMPLES:
        raise JaxpipeError(
            f"--example {example!r}: unknown; choose one of {', '.join(sorted(EXAMPLES))}"
        )
    folder = os.path.normpath(os.path.join(parent, name))
    spec_path = os.path.join(folder, f"{name}.toml")
    data_name = EXAMPLES[example]
    data_path = os.path.join(folder, data_name)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise JaxpipeError(
            f"{folder}: already exists and is not a folder; choose another NAME or remove it"
        )
    for path in (spec_path, data_path):
        if os.path.lexists(path):
            raise JaxpipeError(f"{path}: already exists; choose another NAME or remove it")
    shipped = resources.files("jaxpipe").joinpath("examples")
    text = shipped.joinpath(f"{example}.toml").read_text()
    text = re.sub(r'(?m)^name = "[^"]*"', f'name = "{name}"', text, count=1)
    text = re.sub(r'(?m)^path = "[^"]*"', f'path = "{data_name}"', text, count=1)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise environment_problem(folder, e, resume=False) or JaxpipeError(
            f"{folder}: cannot create the folder ({e.strerror}); run init in a writable directory"
        ) from None
    _write(data_path, shipped.joinpath(data_name).read_bytes())
    _write(spec_path, text.encode())  # the spec last: a spec always has its data
    return [spec_path, data_path]


def _write(path: str, data: bytes) -> None:
    atomic_write(path, data, resume=False)  # the one safe writer (jaxpipe/files.py)
