"""The shape of the house (../shared/STYLE.md, docs/architecture.md), held by parsing the
package with `ast`: topic folders import one way, whatever the import's form, a few
"never" rules hold, and no folder grows past what a reader takes in at once."""

import ast
import functools
import os

import pytest
from conftest import ROOT

PACKAGE = os.path.join(ROOT, "jaxpipe")

# The rooms, lowest first. A module may import its own room and earlier rooms only. The
# top-level modules belong to the foundation, the face or the entry points.
ROOMS = [
    (
        "foundation",
        {"_version", "errors", "files", "events", "settings", "rundir", "signals", "imports"},
    ),
    ("spec", None),  # the validated Spec and its sections; no jax
    ("core", None),  # pure, jittable: scaling, model, losses, metrics, optimizer, steps
    ("data", None),  # readers, encoders, sources, streaming statistics, rows in memory
    ("parallel", None),  # partition rules, meshes, FSDP hooks, processes
    ("planner", None),  # memory estimate, search, options, verify, calibration, catalog
    ("saved", None),  # a finished run as a model: predictor, trace, Model
    ("runner", None),  # the stages and the shell of one run
    ("sweep", None),  # many trials as one vmapped program
    ("report", None),  # console, charts, trackers, compare: every formatter
    ("face", {"__init__", "api", "sklearn"}),  # the public API; scikit-learn estimators
    ("check", None),  # `jaxpipe check`: invariants over the API
    ("testing", None),  # hypothesis strategies (jaxpipe.testing)
    ("cli", None),  # the command line, over the public API only
    ("entry", {"__main__", "pytest_plugin"}),  # `python -m jaxpipe`, pytest's entry point
]
ORDER = {name: i for i, (name, _) in enumerate(ROOMS)}
TOP = {mod: name for name, mods in ROOMS if mods for mod in mods}
FOLDERS = {name for name, mods in ROOMS if mods is None}

# Imports that the order alone would allow today, but that must never appear.
NEVER = [
    ("runner", "report", "the run tells its observers; it never formats"),
    ("sweep", "report", "a sweep hands its table and pictures to the observer"),
    ("core", "data", "the core is pure functions over arrays"),
    ("core", "planner", "the core is pure functions over arrays"),
    ("core", "runner", "the core is pure functions over arrays"),
]
# The one module below the face that reads the environment.
SETTINGS = "settings"
# Modules that import no jax, flax or optax at module level (`--help`, `schema`,
# `validate` stay fast): the whole spec room and these.
NO_JAX_ROOMS = {"spec"}
NO_JAX = {"errors", "events", "files", "rundir", "signals", "settings", "_version", "__init__"}
NO_JAX |= {"cli.main", "cli.args", "__main__", "core.evaluation", "data.encoding"}
NO_JAX |= {"data.frames", "data.readers", "data.sources", "data.roworder", "data.fastrows"}
NO_JAX |= {"runner.cadence", "runner.orbax_guard", "planner.calibration"}
NO_JAX |= {"report.tracking", "report.compare"}
MAX_FOLDER_MODULES = 15
MAX_FUNCTION_LINES = 60  # reported, not enforced (conftest prints the list)


def _sources():
    """{dotted module key: source}: "errors", "runner.loop", "spec" (a folder's
    __init__ is the folder's key)."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        rel = os.path.relpath(folder, PACKAGE)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            parts = [] if rel == "." else rel.split(os.sep)
            if f != "__init__.py" or not parts:
                parts.append(f[:-3])
            with open(os.path.join(folder, f)) as fh:
                out[".".join(parts)] = fh.read()
    return out


def room(key):
    """The room a module key belongs to."""
    head = key.split(".")[0]
    return head if head in FOLDERS else TOP.get(key)


def _package_of(key, sources):
    """The dotted package a module sits in (for relative imports)."""
    is_package = key in FOLDERS or key == "__init__"
    parts = [] if key == "__init__" else key.split(".")
    return parts if is_package else parts[:-1]


def _resolve(dotted, sources):
    """The longest module key that `dotted` (relative to jaxpipe) names."""
    parts = dotted
    while parts and ".".join(parts) not in sources:
        parts = parts[:-1]
    return ".".join(parts) if parts else "__init__"


def _targets(key, node, sources):
    """The module keys an import node reaches, in every form: `import jaxpipe.x.y`,
    `from jaxpipe.x import y` (a module or a name), `from jaxpipe import Name` (the face)
    and the relative forms."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "jaxpipe":
                yield _resolve(parts[1:], sources)
        return
    if not isinstance(node, ast.ImportFrom):
        return
    mod = [p for p in (node.module or "").split(".") if p]
    if node.level == 0:
        if not mod or mod[0] != "jaxpipe":
            return
        base = mod[1:]
    else:
        pkg = _package_of(key, sources)
        base = pkg[: len(pkg) - (node.level - 1)] + mod
    for alias in node.names:
        yield _resolve([*base, alias.name], sources)


@functools.cache
def _parse(text):
    return ast.parse(text)


@functools.cache
def _module_imports(key, text, modules):
    found = set()
    for node in ast.walk(_parse(text)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= {(t, node.lineno) for t in _targets(key, node, modules) if t != key}
    return frozenset(found)


def imports(sources):
    """{module: {(imported module, line)}} over every import statement, at any depth
    (inside functions and conditionals too)."""
    modules = frozenset(sources)
    return {key: _module_imports(key, text, modules) for key, text in sources.items()}


def _reads_environment(text):
    """Lines that read the environment: os.environ, os.getenv, environ imported."""
    lines = []
    for node in ast.walk(_parse(text)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "getenv") for a in node.names):
                lines.append(node.lineno)
    return lines


def violations(sources):
    """Every import against the rooms and the never-rules, as readable lines."""
    bad = []
    for key, deps in imports(sources).items():
        mine = room(key)
        for dep, line in sorted(deps):
            theirs = room(dep)
            where = f"jaxpipe/{key.replace('.', '/')}:{line}"
            if mine is None or theirs is None:
                bad.append(f"{where}: {key if mine is None else dep} is in no room")
            elif ORDER[theirs] > ORDER[mine]:
                bad.append(f"{where} ({mine}/) imports {dep} ({theirs}/): imports go down")
            elif mine == "cli" and theirs not in ("cli", "face", "foundation"):
                bad.append(f"{where} imports {dep}: cli/ uses the public API only")
            for a, b, why in NEVER:
                if mine == a and theirs == b:
                    bad.append(f"{where}: {a}/ never imports {b}/ ({why})")
    return bad


def environment_readers(sources):
    """Modules below the face, other than settings, that read os.environ."""
    bad = []
    for key, text in sources.items():
        r = room(key)
        if r is None or ORDER[r] >= ORDER["face"] or key == SETTINGS:
            continue
        bad += [
            f"jaxpipe/{key.replace('.', '/')}:{n} reads the environment"
            for n in _reads_environment(text)
        ]
    return bad


def cycles(sources):
    """Import cycles between modules (within a room: across rooms the order forbids
    them), each as a list of module keys."""
    graph = {k: {d for d, _ in deps} for k, deps in imports(sources).items()}
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A folder's __init__ importing its own modules is how a package loads, not a cycle.
    return [c for c in found if not any(k in FOLDERS for k in c)]


def test_every_module_is_in_a_room():
    homeless = [k for k in _sources() if room(k) is None]
    assert homeless == [], f"put these in a folder (or the foundation): {homeless}"


def test_folders_are_rooms_and_small():
    folders = {
        d for d in os.listdir(PACKAGE) if os.path.isfile(os.path.join(PACKAGE, d, "__init__.py"))
    }
    assert folders == FOLDERS
    for folder in FOLDERS:
        n = sum(1 for k in _sources() if k.startswith(folder + "."))
        assert n <= MAX_FOLDER_MODULES, f"{folder}/ has {n} modules: split the topic"


def test_imports_flow_one_way():
    assert violations(_sources()) == []


def test_no_import_cycles():
    assert cycles(_sources()) == []


def test_only_settings_reads_the_environment_below_the_face():
    assert environment_readers(_sources()) == []


@pytest.mark.parametrize(
    "module, planted",
    [
        ("spec.experiment", "from jaxpipe.runner import shell\n"),  # a module of a later room
        ("spec.schema", "from jaxpipe import Spec\n"),  # a name: the face
        ("data.load", "def f():\n    import jaxpipe.runner.loop\n"),  # inside a function
        ("core.step", "from jaxpipe.runner.programs import compile_programs\n"),
        ("runner.loop", "from ..report import observer\n"),  # relative, and a never-rule
        ("core.model", "if True:\n    from .. import api\n"),  # relative to the face
        ("cli.main", "from jaxpipe.runner.shell import run_experiment\n"),  # below the face
    ],
)
def test_a_planted_upward_import_is_caught(module, planted):
    sources = _sources()
    assert violations(sources) == []
    sources[module] += "\n" + planted
    found = violations(sources)
    where = f"jaxpipe/{module.replace('.', '/')}:"
    assert found and all(f.startswith(where) for f in found), found


def test_a_planted_environment_read_is_caught():
    sources = _sources()
    sources["core.aot"] += "\nimport os\nX = os.environ.get('X')\n"
    assert environment_readers(sources) == [
        "jaxpipe/core/aot:" + str(len(sources["core.aot"].splitlines())) + " reads the environment"
    ]


def test_a_planted_cycle_is_caught():
    sources = _sources()
    sources["core.losses"] += "\nfrom jaxpipe.core import step\n"
    assert any("core.losses" in c for c in cycles(sources))


@pytest.mark.parametrize(
    "name", sorted(NO_JAX | {k for k in _sources() if room(k) in NO_JAX_ROOMS})
)
def test_spec_side_imports_no_jax(name):
    for node in ast.parse(_sources()[name]).body:  # module level: functions may import
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        for mod in mods:
            assert mod.split(".")[0] not in {"jax", "flax", "optax"}, f"{name} imports {mod}"


def long_functions(sources):
    """Functions over MAX_FUNCTION_LINES lines: a sign of two stages in one."""
    found = []
    for key, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(
                        f"jaxpipe/{key.replace('.', '/')}:{node.lineno} {node.name}: {n} lines"
                    )
    return found


def test_the_long_function_report_names_offenders():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    found = long_functions({"planted": f"def long():\n{body}"})
    assert found == [f"jaxpipe/planted:1 long: {MAX_FUNCTION_LINES + 1} lines"]
