"""The one-way flow of modules (../shared/STYLE.md), held by parsing imports."""

import ast
import os

import pytest
from conftest import ROOT

# A module may import only modules of a lower rank (or the same leaf utilities).
RANK = {
    "_version": 0,
    "errors": 0,
    "schema": 1,
    "starter": 1,  # `jaxpipe init`: the shipped examples; errors only
    "spec": 2,
    "encoding": 2,  # column encoding for data.py; needs only errors
    "data": 3,
    "preprocess": 3,
    "model": 4,
    "losses": 4,
    "metrics": 4,
    "optim": 4,
    "step": 5,
    "stopping": 5,  # early stopping, signal catching: spec only
    "checkpoint": 6,  # orbax store; loop saves through it, it never calls the loop
    "predict": 7,  # saved model + prediction: data, encoding, fitted, model; the run saves
    "trace": 7.1,  # one row through the layers: predict, model, preprocess; the run keeps rows
    "trace_view": 7.6,  # the trace as text and trace.png; report and the API show it
    "charts": 7.6,  # ASCII chart and curves.png for the report
    "console": 7.6,  # rich or plain output for the report
    "resume": 6.5,  # fresh start or checkpoint restore, over checkpoint and stopping
    "hardware": 6,
    "memory": 6,
    "planner": 6.5,  # imports hardware and memory; loop (7) imports it
    "sharding": 6.7,  # mesh + shardings from the plan; planner ─▶ sharding ─▶ loop
    "verify": 6.8,  # compiles a plan's layouts abstractly (sharding, step); api calls it
    "stream": 6,
    "progress": 5.5,  # a train step that reports progress to the host; programs wires it
    "validation": 7.5,  # `validate` without the loop: spec, data, optim (hardware if asked)
    "events": 1,  # the observer interface and stage record; imports nothing
    "runplan": 6.8,  # stage plan: planner's Plan + what executes (mesh, steps, chunks)
    "place": 6.85,  # stage place: host arrays onto the plan's mesh
    "fitted": 6.9,  # stage preprocess: the fitted Preprocessing record
    "programs": 6.95,  # stage compile
    "outdir": 6.5,  # the run directory before training
    "loop": 7,  # stage train
    "summary": 7.2,  # stage save: summary.json
    "run": 7.5,  # the composition of the stages
    "report": 8,
    "api": 9,
    "invariants": 9.3,  # resume / sharding / plan invariants over the public API
    "speccheck": 9.5,  # `jaxpipe check`: specs checked with the invariants
    "launch": 8.5,  # spawns `jaxpipe run` processes; imports nothing of jaxpipe
    "__init__": 10,
    "cli": 11,
    "cli_args": 10.5,  # the argument parsers; the package's version (lazy, no jax)
    "__main__": 12,  # `python -m jaxpipe`: the cli
    "testing": 10.5,  # public hypothesis strategies + the invariants (jaxpipe[testing])
    "pytest_plugin": 10.5,  # pytest --jaxpipe-specs: imports jaxpipe only inside its tests
}
NO_JAX = {"errors", "schema", "spec", "encoding", "cli", "cli_args", "__main__", "starter"}


def _imports(name):
    tree = ast.parse(open(os.path.join(ROOT, "jaxpipe", f"{name}.py")).read())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def test_every_module_is_ranked():
    files = {f[:-3] for f in os.listdir(os.path.join(ROOT, "jaxpipe")) if f.endswith(".py")}
    assert files <= set(RANK), files - set(RANK)


@pytest.mark.parametrize("name", sorted(RANK))
def test_imports_flow_one_way(name):
    if not os.path.exists(os.path.join(ROOT, "jaxpipe", f"{name}.py")):
        pytest.skip("not present")
    for mod in _imports(name):
        if mod.startswith("jaxpipe.") and name != "cli":
            dep = mod.split(".")[1]
            assert RANK[dep] < RANK[name] or (RANK[dep] == RANK[name] == 0), f"{name} → {dep}"
        if name == "cli":  # the public API only (and its own argument parser)
            assert not mod.startswith("jaxpipe.") or mod == "jaxpipe.cli_args", f"cli imports {mod}"
        if name in NO_JAX:
            assert mod.split(".")[0] not in {"jax", "flax", "optax"}, f"{name} imports {mod}"
