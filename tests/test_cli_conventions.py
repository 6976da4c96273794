"""CLI conventions: `python -m jaxpipe`, bare `jaxpipe`, -q/-v everywhere, help with an
example, lazy imports (checked in `sys.modules` of a fresh process, never by timing)."""

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, SMALL_SPEC
from faults import fault_env

import jaxpipe
from jaxpipe.cli.args import build_parser
from jaxpipe.cli.main import main

HEAVY = ("jax", "flax", "orbax", "optax", "matplotlib", "pyarrow")
SUBCOMMANDS = ("run", "launch", "validate", "schema", "predict", "plan", "devices", "check")


def _imported_after(*argv: str, watch: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    """Runs the CLI's main(argv) in a fresh interpreter; returns its exit status and the
    modules of `watch` (the heavy top-level packages) it left in sys.modules."""
    code = (
        "import json, sys\n"
        "from jaxpipe.cli.main import main\n"
        "try:\n"
        f"    rc = main({list(argv)!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        f"heavy = sorted(m for m in {watch!r} if m in sys.modules)\n"
        "print(json.dumps([rc, heavy]), file=sys.stderr)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=120,
    )
    rc, heavy = json.loads(p.stderr.strip().splitlines()[-1])
    return rc, heavy


def _last_json(code: str) -> Any:
    """Runs `code` in a fresh interpreter (this tree on its path) and returns the JSON of
    its last line of output."""
    env = os.environ | {"PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], [], ["schema"], ["run", "--help"], ["plan", "--help"]]
)
def test_help_version_and_schema_import_no_heavy_library(argv):
    rc, heavy = _imported_after(*argv)
    assert rc in (0, None) and heavy == [], (argv, rc, heavy)


def test_validate_of_a_synthetic_spec_imports_no_flax_orbax_matplotlib_pyarrow(write_spec):
    rc, heavy = _imported_after("validate", write_spec(SMALL_SPEC))
    # jax comes in with optax: the optimizer check runs one optax update on purpose.
    assert rc == 0 and not set(heavy) & {"flax", "orbax", "matplotlib", "pyarrow"}, heavy


# What a plain run never uses: the sweep and cross-validation rooms, the planner's
# verification and calibration, the other commands' formatters, the serving export.
NOT_A_RUN = ("jaxpipe.sweep", "jaxpipe.data.folds", "jaxpipe.planner.verify")
NOT_A_RUN += ("jaxpipe.planner.profiles", "jaxpipe.report.compare", "jaxpipe.report.launch")
NOT_A_RUN += ("jaxpipe.report.verdict", "jaxpipe.saved.export", "jaxpipe.parallel.launch")


def test_the_api_module_imports_each_room_when_a_function_needs_it():
    code = (
        "import json, sys, jaxpipe.api\n"
        "rooms = ('jaxpipe.runner', 'jaxpipe.planner', 'jaxpipe.sweep', 'jaxpipe.report', "
        "'jaxpipe.saved', 'jaxpipe.core.')\n"
        "heavy = ('jax', 'flax', 'optax', 'orbax', 'matplotlib')\n"
        "found = [m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(rooms)]\n"
        "print(json.dumps(sorted(found)))\n"
    )
    env = os.environ | {"PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []


def test_fit_without_out_imports_neither_orbax_nor_matplotlib():
    """No checkpoint is written and no picture drawn into fit's temporary folder."""
    code = (
        "import atexit, json, sys\n"
        "import numpy as np\n"
        "import jaxpipe\n"
        "x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)\n"
        "jaxpipe.fit({'training': {'epochs': 1, 'batch_size': 16}}, x, (x[:, 0] > 0).astype(int))\n"
        # at exit, after every thread (an import on a thread, had one started) has ended
        "loaded = lambda: {m.split('.')[0] for m in sys.modules} & {'orbax', 'matplotlib'}\n"
        "atexit.register(lambda: print(json.dumps(sorted(loaded()))))\n"
    )
    assert _last_json(code) == []


def test_a_run_imports_no_sweep_verification_or_other_commands_formatters(tmp_path, write_spec):
    out = str(tmp_path / "run")
    rc, loaded = _imported_after("run", write_spec(SMALL_SPEC), "--out", out, "-q", watch=NOT_A_RUN)
    assert rc == 0 and loaded == [], loaded


def test_a_plan_made_again_imports_no_flax(tmp_path, write_spec, monkeypatch):
    """The plan's fitted figures are kept beside the compilation cache: a spec planned
    before builds no model, so flax stays out of `jaxpipe plan`."""
    monkeypatch.setenv("JAXPIPE_COMPILATION_CACHE", "1")
    monkeypatch.setenv("JAXPIPE_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(SMALL_SPEC)
    (rc, first), (again_rc, again) = (_imported_after("plan", spec, "-q") for _ in range(2))
    assert rc == again_rc == 0
    assert "flax" in first and "jax" in again and "flax" not in again, (first, again)


def test_a_run_on_a_warm_cache_imports_no_flax(tmp_path, write_spec, monkeypatch):
    """Its programs come from the stored executables and model.msgpack is written and
    read by jaxpipe's own codec: no flax module is built, so flax is never imported."""
    monkeypatch.setenv("JAXPIPE_COMPILATION_CACHE", "1")
    monkeypatch.setenv("JAXPIPE_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(SMALL_SPEC)
    runs = [
        _imported_after("run", spec, "--out", str(tmp_path / f"run{i}"), "-q", watch=("flax",))
        for i in range(2)
    ]
    assert runs == [(0, ["flax"]), (0, [])], runs


def test_flax_and_orbax_are_imported_one_thread_at_a_time():
    """A run imports orbax on its checkpoint thread while the main thread may import flax
    to trace the model; both import jax.extend, and two threads importing overlapping
    modules can deadlock (CI saw `_DeadlockError` once). While one thread holds
    `import_heavy`'s lock, neither a model's first init (flax) nor the checkpoint's
    orbax import can proceed; once it is released, both do. In a fresh interpreter, so
    neither library is imported yet."""
    code = (
        "import json, threading\n"
        "import numpy as np\n"
        "from jaxpipe import imports\n"
        "from jaxpipe.core.model import make_model\n"
        "from jaxpipe.runner import checkpoint\n"
        "from jaxpipe.spec.sections import ModelSpec\n"
        "import jax\n"
        "model = make_model(ModelSpec(hidden=(4,)), 2)\n"
        "jobs = {'flax': lambda: model.init(jax.random.key(0), np.zeros((1, 3), np.float32)),\n"
        "        'orbax': checkpoint._ocp}\n"
        "done = {k: threading.Event() for k in jobs}\n"
        "threads = [threading.Thread(target=lambda k=k: (jobs[k](), done[k].set())) for k in jobs]\n"
        "with imports._LOCK:\n"
        "    for t in threads: t.start()\n"
        "    blocked = {k: not e.wait(5.0) for k, e in done.items()}\n"
        "finished = {k: e.wait(120) for k, e in done.items()}\n"
        "print(json.dumps([blocked, finished]))\n"
    )
    blocked, finished = _last_json(code)
    assert blocked == {"flax": True, "orbax": True}, blocked
    assert finished == {"flax": True, "orbax": True}, finished


def test_compare_and_devices_import_no_jax_or_no_flax(tmp_path):
    dirs = []
    for name, losses in (("a", [1.0, 0.5]), ("b", [0.9, 0.6])):  # the files compare reads
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(
            json.dumps({"status": "completed", "task": "classification"})
        )
        (d / "spec.toml").write_text("[training]\nepochs = 2\n")
        rows = [{"epoch": e, "val_loss": v} for e, v in enumerate(losses, 1)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        dirs.append(str(d))
    rc, heavy = _imported_after("compare", *dirs, "--plot", str(tmp_path / "c.png"), "-q")
    assert rc == 0 and heavy == ["matplotlib"], heavy
    rc, heavy = _imported_after("devices", "-q")
    assert rc == 0 and heavy == ["jax"], heavy


def test_python_dash_m_jaxpipe_and_bare_jaxpipe_print_help():
    env = os.environ | {"PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe"], capture_output=True, text=True, env=env, timeout=60
    )
    assert p.returncode == 0 and p.stdout.startswith("usage: jaxpipe"), p.stderr
    for name in SUBCOMMANDS:
        assert name in p.stdout, name
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0 and p.stdout.strip() == f"jaxpipe {jaxpipe.__version__}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_quiet_verbose_and_an_example(name, capsys):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[name]
    flags = {s for a in sub._actions for s in a.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= flags
    for action in sub._actions:  # every option and argument says what it is for
        assert action.help, (name, action.dest)
    assert "example:\n  jaxpipe " + name in sub.format_help()


def test_gpu_help_lists_the_catalog():
    parser = build_parser()
    text = parser._subparsers._group_actions[0].choices["plan"].format_help()
    for card in ("T4", "A100-40GB", "H100"):
        assert card in text


def test_quiet_run_prints_only_the_run_directory(tmp_path, write_spec):
    out = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", write_spec(SMALL_SPEC), "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [str(out)]


def test_every_public_name_resolves_and_submodules_do_not_shadow_functions():
    import jaxpipe.parallel.launch  # noqa: F401  (the submodules named like exported functions)
    import jaxpipe.saved.predict  # noqa: F401

    for name in jaxpipe.__all__:
        assert getattr(jaxpipe, name) is not None, name
    assert callable(jaxpipe.predict) and not isinstance(jaxpipe.predict, type(jaxpipe))
    assert callable(jaxpipe.launch) and not isinstance(jaxpipe.launch, type(jaxpipe))
    assert set(jaxpipe.__all__) <= set(dir(jaxpipe))


def test_resume_hint_after_sigterm_names_the_real_spec(tmp_path, write_spec):
    spec, out = write_spec(SMALL_SPEC), str(tmp_path / "run")
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", spec, "--out", out, "--set", "training.epochs=3"],
        capture_output=True,
        text=True,
        env=os.environ | fault_env("term-epoch:1"),
        timeout=300,
    )
    assert p.returncode == 143, p.stderr
    hint = f"jaxpipe run {spec} --set training.epochs=3 --out {out} --resume"
    assert hint in p.stderr and "SPEC" not in p.stderr, p.stderr


def test_init_writes_a_starter_that_validates_and_refuses_to_overwrite(tmp_path, capsys):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["init", "demo"]) == 0
        assert "jaxpipe run demo/demo.toml" in capsys.readouterr().out
        spec = jaxpipe.load_spec("demo/demo.toml")
        assert spec.experiment.name == "demo" and os.path.isfile("demo/penguins.csv")
        assert main(["validate", "demo/demo.toml", "-q"]) == 0
        assert main(["init", "demo"]) == 2
        assert "already exists" in capsys.readouterr().err
        assert main(["init", "reg", "--example", "diabetes", "-q"]) == 0
        assert capsys.readouterr().out.strip() == os.path.join("reg", "reg.toml")
        assert jaxpipe.load_spec("reg/reg.toml").model.task == "regression"
        assert main(["init", "../bad name"]) == 2
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("name", ["penguins", "diabetes"])
def test_shipped_examples_are_the_experiments(name):
    shipped = os.path.join(ROOT, "jaxpipe", "examples")
    for a, b in ((f"{name}.toml", f"{name}.toml"), (f"{name}.csv", f"data/{name}.csv")):
        with (
            open(os.path.join(shipped, a), "rb") as f,
            open(os.path.join(ROOT, "experiments", b), "rb") as g,
        ):
            assert f.read() == g.read(), f"jaxpipe/examples/{a} differs from experiments/{b}"


def test_launch_drops_collective_chatter(tmp_path, capfd):
    from jaxpipe.parallel.launch import _forward

    src = tmp_path / "child.txt"
    src.write_bytes(b"Data flow\n[Gloo] Rank 0 is connected to 1 peer ranks.\n  load  ok\n")

    class Sink:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    sink = Sink()
    with open(src, "rb") as f:
        _forward(f, sink, keep_chatter=False)
    assert sink.text == "Data flow\n  load  ok\n"
