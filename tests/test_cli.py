import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, SMALL_SPEC

import jaxpipe
from jaxpipe.cli.main import main

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")


def _cli(*args, cwd=None):
    """Runs `jaxpipe ...` as a real process (exit code, stdout, stderr)."""
    env = os.environ | {"PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    return p.returncode, p.stdout, p.stderr


def test_run_writes_the_run_directory(tmp_path, write_spec):
    out = tmp_path / "run"
    code, stdout, stderr = _cli(
        "run", write_spec(SMALL_SPEC), "--out", str(out), "--set", "training.epochs=3"
    )
    assert code == 0, stderr
    for name in ("spec.toml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_accuracy", "epoch_seconds"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final"] == rows[-1]
    assert [s["name"] for s in summary["stages"]][:3] == ["load", "transfer", "preprocess"]
    assert summary["device"]["platform"] == "cpu" and summary["seed"] == 3
    assert "epochs = 3" in (out / "spec.toml").read_text()
    for text in ("Data flow", "Model", "Training", "Loss", "Final (epoch 3)", "rows × 6 columns"):
        assert text in stdout, text
    # Each epoch once, as it ends (a run of <= 12 epochs has no second table: issue 27).
    assert [line.split()[1] for line in stdout.splitlines() if line.startswith("  epoch ")] == [
        "1/3",
        "2/3",
        "3/3",
    ]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_same_spec_and_seed_give_identical_metrics(tmp_path, write_spec):
    spec = jaxpipe.load_spec(write_spec(SMALL_SPEC))
    a = jaxpipe.run(spec, out=str(tmp_path / "a"))
    b = jaxpipe.run(spec, out=str(tmp_path / "b"))
    strip = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in b.history]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "missing.toml"], "missing.toml: spec file not found"),
        (["run", "{spec}", "--set", "training.epochs=0"], "--set: training.epochs: must be ≥ 1"),
        (["run", "{spec}", "--set", "training"], "not KEY=VALUE"),
        (["run", "{spec}", "--set", "optimizer.name=adamm"], "did you mean 'adam'"),
        (["run", "{spec}", "--set", "optimizer.beta9=0.9"], "no argument 'beta9'"),
        (["run"], "the following arguments are required: spec"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, write_spec, capsys, args, needle):
    spec = write_spec(SMALL_SPEC)
    out = tmp_path / "never"
    argv = [a.replace("{spec}", spec) for a in args]
    if argv[0] == "run" and len(argv) > 1:
        argv += ["--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (out / "summary.json").exists()


def test_refuses_to_overwrite_a_finished_run(tmp_path, write_spec, capsys):
    spec = write_spec(SMALL_SPEC)
    out = str(tmp_path / "r")
    assert main(["run", spec, "--out", out, "--quiet"]) == 0
    assert main(["run", spec, "--out", out, "--quiet"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def test_validate_and_schema(write_spec, capsys):
    assert main(["validate", write_spec(SMALL_SPEC)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "training" in schema["properties"]


def test_validate_reads_real_data_and_schema_markdown(capsys):
    assert main(["validate", os.path.join(ROOT, "experiments", "penguins.toml")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "3 classes (Adelie, Chinstrap, Gentoo)" in out
    assert "275 training + 69 validation rows" in out
    assert main(["schema", "--format", "markdown"]) == 0
    assert capsys.readouterr().out == jaxpipe.spec_markdown()


def test_plan_and_the_runs_header_state_one_figure_for_the_seed_spec(tmp_path):
    """Issue 27: `jaxpipe plan experiments/seed.toml` said 3.0 MiB (the donated program)
    where the run's header said 4.1 MiB (the run keeps its small state undonated, with
    snapshots). The verdict, the chosen option, the candidate row and the recommendation
    now say the run's figure, and the estimate line says what the run adds."""
    seed = os.path.join(ROOT, "experiments", "seed.toml")
    code, plan, err = _cli("plan", seed)
    assert code == 0, err
    code, run, err = _cli("run", seed, "--set", "training.epochs=1", "--out", str(tmp_path / "r"))
    assert code == 0, err
    header = next(x for x in run.splitlines() if x.startswith("  plan "))
    # "  plan       data over 8 cpu devices, mesh data=8; 4.0 MiB per device ..." (the
    # suite's 8 host devices) or "single over 1 cpu device, mesh data=1; 4.1 MiB ..."
    strategy, devices, mesh, need = re.search(
        r"plan +(\S+) over (\d+) .*, mesh (\S+); ([\d.]+ [KMG]iB) per device", header
    ).groups()
    lines = plan.splitlines()
    assert re.match(rf"FITS .*: needs {need} \(estimate\)", lines[0]), (need, lines[0])
    where = "one cpu" if strategy == "single" else f"{strategy} over {devices} × cpu"
    chosen = [x for x in lines if re.match(rf"  \d+\. {where}, yours: ", x)]
    assert all(f"yours: {need} (est.)" in x for x in chosen), chosen  # where it is an option
    assert re.search(rf"^  {strategy} +{devices} +{mesh} +{need} ", plan, re.M), plan
    assert re.search(rf"^Recommendation: fits .*: needs {need} of", plan, re.M), plan
    assert re.search(r"the run adds [\d.]+ [KMG]iB beside the program", " ".join(plan.split()))
