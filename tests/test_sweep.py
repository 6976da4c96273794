"""Sweeps: each trial of the one vmapped program equals the same spec run alone; a
diverged trial leaves the others alone; bad sweeps fail naming the key, before any work."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, assert_trees_close, write_disk_set
from flax import serialization

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.errors import SpecError
from jaxpipe.runner.shell import run_experiment
from jaxpipe.spec.experiment import load_spec
from jaxpipe.spec.sweep import MAX_TRIALS, SweepSpec, expand_trials
from jaxpipe.sweep.shell import plan_trials, run_sweep, trial_spec

# Runs here repeat a few small specs: each program compiles once per test process
# (conftest.compile_once; a cached executable is the compiled one).
pytestmark = pytest.mark.usefixtures("compile_once")

BASE = """
[experiment]
name = "sw"
seed = 1
[data]
source = "synthetic"
validation = 64
[data.synthetic]
rows = 320
features = 5
classes = 3
[model]
hidden = [8]
task = "{task}"
dropout = {dropout}
[optimizer]
name = "{optimizer}"
[training]
epochs = 2
batch_size = 64
[hardware]
devices = {devices}
"""

# vmapped matmuls and reductions may round differently from the unbatched ones: fp32
# rounding, compounded over 10 optimizer steps, stays well inside this.
RTOL, ATOL = 2e-4, 2e-5


def _spec(write_spec, values: str, task="classification", dropout=0.0, devices=1, opt="adam"):
    text = BASE.format(task=task, dropout=dropout, devices=devices, optimizer=opt)
    return load_spec(write_spec(text + "[sweep]\n[sweep.values]\n" + values))


def _params(run_dir: str):
    with open(os.path.join(run_dir, "model.msgpack"), "rb") as f:
        return serialization.msgpack_restore(f.read())


def _rows(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


def _assert_equals_alone(spec, result, tmp_path, trials=(0, 3)):
    # Trials 0 and 3 differ from each other in every swept key; the others are mixtures
    # of the same values (a single run compiles for seconds on the shared test machine).
    for t in [result.trials[k] for k in trials]:
        alone = run_experiment(trial_spec(spec, t.values), str(tmp_path / f"alone{t.index}"))
        got, want = _rows(t.history), _rows(alone.history)
        assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=RTOL, atol=ATOL)
        trial_dir = os.path.join(result.run_dir, "trials", str(t.index))
        assert_trees_close(_params(trial_dir), jax.device_get(alone.params), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "task, dropout, devices, opt, values",
    [
        (
            "classification",
            0.2,
            1,
            "adam",
            '"experiment.seed" = [1, 2]\n"optimizer.learning_rate" = [1e-3, 1e-2]\n',
        ),
        (
            "regression",
            0.1,
            4,
            "adamw",
            '"model.dropout" = [0.0, 0.3]\n"optimizer.weight_decay" = [0.0, 0.1]\n',
        ),
    ],
    ids=["classification-1-device", "regression-4-devices"],
)
def test_each_trial_equals_its_run_alone(write_spec, tmp_path, task, dropout, devices, opt, values):
    spec = _spec(write_spec, values, task, dropout, devices, opt)
    groups, inputs = plan_trials(spec)
    assert len(groups) == 1 and len(groups[0]) == 4  # one program for the four trials
    result = run_sweep(spec, str(tmp_path / "sweep"))
    assert result.summary["programs"][0]["devices"] == min(devices, 4)
    _assert_equals_alone(spec, result, tmp_path)
    lines = open(os.path.join(result.run_dir, "sweep.jsonl")).read().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(r["trial"] for r in rows) == [0, 1, 2, 3]
    best = rows[0]
    assert best["best"]["val_loss"] == min(r["best"]["val_loss"] for r in rows)
    assert result.summary["best_trial"] == best["trial"]
    best_dir = os.path.join(result.run_dir, "trials", str(best["trial"]))
    assert_trees_close(_params(result.run_dir), _params(best_dir))  # the best model on top


def test_a_diverged_trial_does_not_disturb_the_others(write_spec, tmp_path):
    spec = _spec(write_spec, '"optimizer.learning_rate" = [1e-2, 1e30]\n', opt="sgd", devices=2)
    result = run_sweep(spec, str(tmp_path / "sweep"))
    good, bad = result.trials
    assert bad.status == "diverged" and good.status == "completed"
    bad_summary = json.load(open(os.path.join(result.run_dir, "trials", "1", "summary.json")))
    assert bad_summary["status"] == "diverged" and "loss is" in bad_summary["stop"]["reason"]
    assert result.table[-1]["trial"] == 1 and result.summary["best_trial"] == 0
    assert not os.path.exists(os.path.join(result.run_dir, "trials", "1", "model.msgpack"))
    alone = run_experiment(trial_spec(spec, good.values), str(tmp_path / "alone"))
    for g, w in zip(_rows(good.history), _rows(alone.history), strict=True):
        np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=RTOL, atol=ATOL)


def test_grid_and_random_expansion():
    grid = SweepSpec(values={"experiment.seed": [0, 1], "optimizer.learning_rate": [0.1, 0.2]})
    assert expand_trials(grid) == [
        {"experiment.seed": s, "optimizer.learning_rate": lr} for s in (0, 1) for lr in (0.1, 0.2)
    ]
    rnd = SweepSpec(
        method="random",
        trials=5,
        values={
            "optimizer.learning_rate": {"log_uniform": [1e-4, 1e-1]},
            "model.dropout": [0.0, 0.5],
        },
    )
    draws = expand_trials(rnd)
    assert draws == expand_trials(rnd) and len(draws) == 5  # seeded by sweep.seed
    assert all(1e-4 <= d["optimizer.learning_rate"] <= 1e-1 for d in draws)
    big = SweepSpec(values={"experiment.seed": list(range(MAX_TRIALS + 1))})
    with pytest.raises(SpecError, match="--force"):
        expand_trials(big)
    assert len(expand_trials(big, force=True)) == MAX_TRIALS + 1


def test_shape_changing_values_form_their_own_groups(write_spec):
    spec = _spec(write_spec, '"model.hidden" = [[4], [8]]\n"experiment.seed" = [0, 1, 2]\n')
    groups, inputs = plan_trials(spec)
    assert inputs == {"experiment.seed"}
    assert sorted(len(g) for g in groups) == [3, 3]


@pytest.mark.parametrize(
    "values, key",
    [
        ('"model.widths" = [1, 2]\n', 'sweep.values."model.widths"'),
        ('"optimizer.learning_rate" = ["fast"]\n', 'sweep.values."optimizer.learning_rate"'),
        ('"experiment.seed" = []\n', 'sweep.values."experiment.seed"'),
        ('"data.path" = ["a.csv"]\n', 'sweep.values."data.path"'),
        (f'"experiment.seed" = {list(range(MAX_TRIALS + 1))}\n', "sweep.values"),
    ],
    ids=["unknown-key", "wrong-type", "empty-list", "not-sweepable", "too-many"],
)
def test_bad_sweeps_exit_2_naming_the_key(write_spec, tmp_path, capsys, values, key):
    text = BASE.format(task="classification", dropout=0.0, devices=1, optimizer="adam")
    path = write_spec(text + "[sweep]\n[sweep.values]\n" + values)
    out = tmp_path / "out"
    argv = ["run", path, "--out", str(out)]
    if key.endswith('widths"'):  # once through a real process; the rest in this one
        p = subprocess.run(
            [sys.executable, "-m", "jaxpipe", *argv], capture_output=True, text=True, cwd=ROOT
        )
        code, err = p.returncode, p.stderr
    else:
        code, err = main(argv), capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], err
    assert not out.exists()  # nothing half-written


def test_compare_cli_lists_runs_and_sweep_trials(write_spec, tmp_path):
    spec = _spec(write_spec, '"optimizer.learning_rate" = [1e-3, 1e-2]\n')
    sweep = run_sweep(spec, str(tmp_path / "sweep"))
    alone = run_experiment(trial_spec(spec, {"optimizer.learning_rate": 0.1}), str(tmp_path / "a"))
    plot = tmp_path / "compare.png"
    argv = ["compare", sweep.run_dir, alone.run_dir, "--json", "--plot", str(plot)]
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    records = json.loads(p.stdout)
    assert [r["run"] for r in records] == [
        os.path.join(sweep.run_dir, "trials", "0"),
        os.path.join(sweep.run_dir, "trials", "1"),
        alone.run_dir,
    ]
    assert [r["differences"] for r in records] == [
        {"optimizer.learning_rate": lr} for lr in (1e-3, 1e-2, 0.1)
    ]
    assert records[2]["final"] == alone.history[-1]["val_loss"]
    assert records[0]["best"] == min(r["val_loss"] for r in sweep.trials[0].history)
    assert plot.stat().st_size > 0
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "compare", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "nope" in p.stderr


def test_fit_on_a_sweep_returns_the_best_model_and_the_table(write_spec, tmp_path):
    spec = _spec(write_spec, '"optimizer.learning_rate" = [1e-3, 3e-2]\n')
    model = jaxpipe.fit(spec, out=str(tmp_path / "sweep"))
    losses = [r["best"]["val_loss"] for r in model.sweep]
    assert sorted(r["trial"] for r in model.sweep) == [0, 1] and losses == sorted(losses)
    assert model.summary["best_trial"] == model.sweep[0]["trial"]
    assert model.final == model.sweep[0]["final"]
    loaded = jaxpipe.load_model(str(tmp_path / "sweep"))  # the sweep directory's best model
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_early_stopping_is_per_trial(write_spec, tmp_path):
    # A slow and a fast learning rate under a demanding min_delta: each trial stops when
    # its own run alone stops (or not), with the same rows.
    values = '"optimizer.learning_rate" = [1e-4, 3e-2]\n'
    text = BASE.format(task="classification", dropout=0.0, devices=2, optimizer="adam")
    text = text.replace("epochs = 2", "epochs = 4")
    text = text.replace(
        "batch_size = 64\n",
        "batch_size = 64\n[training.early_stopping]\npatience = 1\nmin_delta = 0.02\n",
    )
    spec = load_spec(write_spec(text + "[sweep]\n[sweep.values]\n" + values))
    result = run_sweep(spec, str(tmp_path / "sweep"))
    for t in result.trials:
        alone = run_experiment(trial_spec(spec, t.values), str(tmp_path / f"alone{t.index}"))
        assert len(t.history) == len(alone.history)
        assert t.stop == alone.summary["stop"]
        for g, w in zip(_rows(t.history), _rows(alone.history), strict=True):
            np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=RTOL, atol=ATOL)


def test_a_sweep_over_a_set_streamed_from_disk_names_host_memory(tmp_path, capsys):
    """A sweep keeps the data on the device: a set larger than the host budget is refused
    in one line naming data.host_memory (not data.chunk_rows, which the spec never set)."""
    sweep = '[sweep]\n[sweep.values]\n"optimizer.learning_rate" = [1e-3, 1e-2]\n'
    spec = write_disk_set(str(tmp_path), sweep)
    out = tmp_path / "out"
    code, err = main(["run", str(spec), "--out", str(out)]), capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "data.host_memory" in lines[0]
    # Refused before training: the sweep folder holds its spec only, nothing that looks
    # finished (no summary.json, no trials/).
    assert sorted(os.listdir(out)) == [".lock", "spec.toml"]  # the lock file, emptied


def test_a_sweep_ranks_trials_by_an_optional_metric(write_spec, tmp_path):
    # Swept seeds give each trial its own validation labels (the [trials, rows] path).
    text = BASE.format(task="classification", dropout=0.0, devices=2, optimizer="adam")
    text = text.replace("batch_size = 64\n", 'batch_size = 64\nmetrics = ["val_f1_macro"]\n')
    values = '"experiment.seed" = [1, 2]\n"optimizer.learning_rate" = [1e-3, 1e-2]\n'
    sweep = '[sweep]\nmetric = "val_roc_auc"\n[sweep.values]\n'
    spec = load_spec(write_spec(text + sweep + values))
    result = run_sweep(spec, str(tmp_path / "sweep"))
    for t in result.trials:
        assert {"val_roc_auc", "val_f1_macro"} <= set(t.history[-1])
    best = max(result.trials, key=lambda t: t.history[-1]["val_roc_auc"])
    assert result.summary["best_trial"] == best.index
    t = result.trials[3]
    alone = run_experiment(trial_spec(spec, t.values), str(tmp_path / "alone"))
    for g, w in zip(_rows(t.history), _rows(alone.history), strict=True):
        assert g.keys() == w.keys()
        # A rank-based AUC moves by 1 / (positives × negatives) if fp32 rounding swaps
        # two rows' order; the rest agree as the other columns do.
        np.testing.assert_allclose(g.pop("val_roc_auc"), w.pop("val_roc_auc"), atol=2e-3)
        np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=RTOL, atol=ATOL)
