"""The shape of the house (../shared/STYLE.md), held by parsing the package with `ast`:
imports flow one way through named layers, whatever their form, and no function or
module grows past what a reader takes in at once."""

import ast
import os

import pytest
from conftest import ROOT

PACKAGE = os.path.join(ROOT, "jaxpipe")

# Lowest first. A module may import only modules of an earlier layer: the data flow
# load → plan → place → preprocess → compile → train → evaluate → save reads downwards.
LAYERS = [
    ("errors", {"_version", "errors"}),  # import nothing of ours
    # The one atomic writer and safe reader (issue 11); then the run directory's lock.
    ("files", {"files"}),
    ("run directory lock", {"rundir"}),
    ("stored executables", {"aot"}),  # compiled programs beside the compilation cache
    # The observer interface, process launching, console output, charts (written
    # through files), the progress-reporting step.
    ("foundation", {"events", "launch", "console", "charts", "progress"}),
    ("checkpoint helpers", {"cadence", "orbax_guard", "resumespec"}),  # orbax logs; resume diffs
    ("calibration", {"calibration"}),  # estimate vs measured peak from summary.json
    ("starter", {"starter"}),  # `jaxpipe init`: the shipped examples
    ("schema", {"schema"}),  # typed fields and the strict builder
    ("schema text", {"schema_text"}),  # TOML writer, JSON Schema, Markdown, locator
    ("spec sections", {"sections", "hwspec"}),
    ("sweep section", {"sweepspec"}),
    ("spec", {"spec"}),
    ("pure core", {"encoding", "preprocess", "losses", "metrics", "model", "optim", "evaluation"}),
    ("spec helpers", {"stopping", "hardware"}),  # early stopping, signals; device catalog
    ("readers", {"readers"}),  # csv / parquet / npz files into columns, for data
    # Out-of-core sources (issue 16): files and row groups, the rows' order, one-pass
    # statistics; then the training split that stays on disk.
    ("out-of-core sources", {"sources", "roworder", "streamstats", "fastrows"}),
    ("rows on disk", {"diskrows"}),
    ("data", {"data"}),  # stage load
    ("data in memory", {"frames"}),  # DataFrames, Tables, arrays as a file's columns
    ("step", {"step"}),  # TrainState, the train/eval steps, the scanned epoch
    (
        "plan state",
        {"planstate", "residuals", "fsdpunits"},
    ),  # the run's state as shapes, for the planner
    ("step users", {"stream", "checkpoint", "memory"}),
    ("restart", {"resume"}),
    ("plan fit", {"xlafit"}),  # the closed form fitted to XLA's one-device figure
    ("plan search", {"search", "plantypes"}),  # closed-form search; the plan's values
    ("plan options", {"options"}),  # ranked options, roofline times, recommendation
    ("planner", {"planner"}),
    ("sweep plan", {"sweepplan"}),  # a sweep group's trials × per-trial memory, in chunks
    ("verdict", {"verdict"}),  # format_plan: the plan as people read it
    ("sharding", {"sharding"}),  # planner ─▶ sharding ─▶ the run
    ("verify", {"verify"}),  # compiles a plan's layouts abstractly; api calls it
    ("stage plan", {"runplan"}),
    ("stage place", {"place"}),
    ("stage preprocess", {"fitted"}),
    ("stage compile", {"programs"}),
    ("trial programs", {"trials"}),  # the vmapped programs of a sweep group
    ("run directory", {"outdir"}),
    ("saved model", {"predict"}),
    ("trace", {"trace"}),  # one row through the layers; the run keeps rows for it
    ("model object", {"trained"}),  # fit's Model, load_model; Model.trace
    ("stage train", {"loop"}),
    ("stage save", {"summary"}),
    ("sweep group", {"sweeptrain"}),
    ("run", {"run"}),  # the composition of the stages
    ("trace view", {"trace_view"}),  # the trace as text and trace.png
    ("report", {"report"}),
    ("validate", {"validation"}),  # `validate` without the loop: spec, data, optim
    ("tracking", {"tracking"}),  # TensorBoard and MLflow observers
    ("sweep", {"sweep", "compare"}),  # many trials: trials.py programs, sweeptrain.py the shell
    ("api", {"api"}),
    ("invariants", {"invariants"}),  # resume / sharding / plan invariants over the API
    ("spec check", {"speccheck"}),  # `jaxpipe check`
    ("testing", {"testing", "pytest_plugin"}),  # hypothesis strategies; pytest plugin
    ("package", {"__init__"}),  # `from jaxpipe import X` is an import of this layer
    ("cli arguments", {"cli_args"}),  # the parsers; the package's version
    ("cli", {"cli"}),  # the public API only (and its own parsers)
    ("main", {"__main__"}),  # `python -m jaxpipe`: the cli
]
LAYER = {mod: i for i, (_, mods) in enumerate(LAYERS) for mod in mods}
NAME = {i: name for i, (name, _) in enumerate(LAYERS)}
NO_JAX = {"errors", "events", "schema", "schema_text", "sections", "hwspec", "spec"}
NO_JAX |= {"encoding", "cli", "cli_args", "evaluation", "frames", "__main__", "starter"}
NO_JAX |= {"sweepspec", "tracking", "compare"}
NO_JAX |= {"cadence", "orbax_guard", "resumespec"}
NO_JAX |= {"calibration"}
NO_JAX |= {"files", "rundir", "readers"}
NO_JAX |= {"sources", "roworder", "fastrows"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _sources():
    return {
        f[:-3]: open(os.path.join(PACKAGE, f)).read()
        for f in sorted(os.listdir(PACKAGE))
        if f.endswith(".py")
    }


def _targets(node, modules):
    """The package modules an import node reaches: `import jaxpipe.x`, `from jaxpipe.x
    import y`, `from jaxpipe import x` (a module) or `from jaxpipe import Name` (the
    package's __init__), and their relative forms."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "jaxpipe":
                yield parts[1] if len(parts) > 1 else "__init__"
        return
    if not isinstance(node, ast.ImportFrom):
        return
    mod = node.module or ""
    if node.level == 0 and mod != "jaxpipe" and not mod.startswith("jaxpipe."):
        return
    parts = mod.split(".")[1:] if node.level == 0 else [p for p in mod.split(".") if p]
    if parts:
        yield parts[0]
        return
    for alias in node.names:  # from jaxpipe import x / from . import x
        yield alias.name if alias.name in modules else "__init__"


def imports(sources):
    """{module: {(imported module, line)}} over every import statement, at any depth
    (inside functions and conditionals too)."""
    out = {}
    for name, text in sources.items():
        found = set()
        for node in ast.walk(ast.parse(text)):
            found |= {(t, node.lineno) for t in _targets(node, sources)}
        out[name] = found
    return out


def violations(sources):
    """Every import against the layers, as readable lines."""
    bad = []
    for name, deps in imports(sources).items():
        for dep, line in sorted(deps):
            if dep not in LAYER:
                bad.append(f"{name}.py:{line} imports {dep}, which is in no layer")
            elif LAYER[dep] >= LAYER[name]:
                bad.append(
                    f"{name}.py:{line} ({NAME[LAYER[name]]}) imports {dep} "
                    f"({NAME[LAYER[dep]]}): imports must go to an earlier layer"
                )
            elif name == "cli" and dep not in ("__init__", "_version", "cli_args"):
                bad.append(f"cli.py:{line} imports jaxpipe.{dep}; cli uses the public API only")
    return bad


def test_every_module_is_in_one_layer():
    files = set(_sources())
    assert files <= set(LAYER), f"add to a layer: {sorted(files - set(LAYER))}"
    seen = [m for _, mods in LAYERS for m in mods]
    assert len(seen) == len(set(seen)), "a module is in two layers"


def test_imports_flow_one_way():
    assert violations(_sources()) == []


@pytest.mark.parametrize(
    "module, planted",
    [
        ("spec", "from jaxpipe import run\n"),  # a submodule through the package
        ("spec", "from jaxpipe import Spec\n"),  # a name: the package's __init__
        ("data", "def f():\n    import jaxpipe.runner.loop\n"),  # inside a function
        ("step", "from jaxpipe.runner.programs import compile_programs\n"),
        ("schema", "from . import spec\n"),  # relative
        ("model", "if True:\n    from .report import format_table\n"),
    ],
)
def test_a_planted_cycle_is_caught(module, planted):
    sources = _sources()
    sources[module] += "\n" + planted
    found = violations(sources)
    assert len(found) == 1 and found[0].startswith(f"{module}.py:"), found


@pytest.mark.parametrize("name", sorted(NO_JAX))
def test_spec_side_imports_no_jax(name):
    for node in ast.walk(ast.parse(_sources()[name])):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        for mod in mods:
            assert mod.split(".")[0] not in {"jax", "flax", "optax"}, f"{name} imports {mod}"


def oversized(sources):
    """Modules over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES."""
    found = []
    for name, text in sources.items():
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}.py: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(
                        f"{name}.py:{node.lineno} {node.name}: {n} lines "
                        f"(at most {MAX_FUNCTION_LINES})"
                    )
    return found


def test_no_function_or_module_too_long():
    assert oversized(_sources()) == []


def test_the_size_check_names_offenders():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    long = f"def long():\n{body}"
    found = oversized({"planted": long + "\n" * (MAX_MODULE_LINES - 60)})
    assert found == [
        f"planted.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})",
        f"planted.py:1 long: {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})",
    ]
