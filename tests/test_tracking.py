"""[logging] trackers, read back with the real readers: TensorBoard's event accumulator
and MLflow's client, on a file store and on MLflow's default SQLite store through the
CLI. A missing extra is exit 2 naming it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SMALL_SPEC

import jaxpipe
from jaxpipe.errors import JaxpipeError
from jaxpipe.report.tracking import MODEL_FILES, MlflowObserver, flat_params
from jaxpipe.spec.experiment import load_spec

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata  # noqa: E402

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store's opt-in
SWEEP = '[sweep]\n[sweep.values]\n"optimizer.learning_rate" = [1e-3, 1e-2]\n'


def _scalars(logdir: str) -> tuple[dict[str, list[tuple[int, float]]], EventAccumulator]:
    acc = EventAccumulator(logdir)
    acc.Reload()
    out = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return out, acc


def _rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _hparams(acc: EventAccumulator) -> dict:
    """The HParams plugin's session-start record: {name: value}."""
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = metadata.parse_session_start_info_plugin_data(content)
    return {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in info.hparams.items()
    }


def _assert_scalars_match(logdir: str, rows: list[dict]) -> EventAccumulator:
    scalars, acc = _scalars(logdir)
    assert set(scalars) == set(rows[0]) - {"epoch"}  # tags named as metrics.jsonl's columns
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [r["epoch"] for r in rows]
        assert [v for _, v in points] == pytest.approx([r[tag] for r in rows], rel=1e-6)
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    return acc


def _every_param(spec_path: str) -> dict[str, str]:
    """Every key of the spec, defaults included, as MLflow keeps params (text)."""
    return {k: str(v) for k, v in flat_params(load_spec(spec_path)).items()}


def test_run_logs_to_tensorboard_and_mlflow(write_spec, tmp_path):
    store = tmp_path / "mlruns"
    spec = write_spec(SMALL_SPEC + f'[logging]\ntensorboard = true\nmlflow = "{store}"\n')
    result = jaxpipe.run(spec, str(tmp_path / "run"), verbose=False)
    acc = _assert_scalars_match(os.path.join(result.run_dir, "tensorboard"), result.history)
    assert _hparams(acc)["experiment.seed"] == 3 and _hparams(acc)["model.hidden"] == "[16]"
    assert _hparams(acc)["optimizer.name"] == "adam"  # a default: every key, not the file's
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file://{store}")
    exp = client.get_experiment_by_name("small")
    (run,) = client.search_runs([exp.experiment_id])
    params = run.data.params
    assert {k: params[k] for k in _every_param(spec)} == _every_param(spec)
    plan = result.summary["plan"]  # what hardware.strategy = "auto" became
    assert (params["plan.strategy"], params["plan.devices"]) == (
        plan["strategy"],
        str(plan["devices"]),
    )
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [
        (r["epoch"], pytest.approx(r["val_loss"])) for r in result.history
    ]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "curves.png", "model"} <= names
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert model == {f"model/{n}" for n in MODEL_FILES}
    assert run.info.status == "FINISHED"


def test_the_logged_model_loads_and_predicts_as_the_run(write_spec, tmp_path):
    """The model artifact is the run's model: downloaded, `load_model` predicts the same."""
    store = tmp_path / "mlruns"
    spec = write_spec(SMALL_SPEC + f'[logging]\nmlflow = "{store}"\n')
    result = jaxpipe.run(spec, str(tmp_path / "run"), verbose=False)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file://{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("small").experiment_id])
    got = client.download_artifacts(run.info.run_id, "model", str(tmp_path / "down"))
    rows = np.random.default_rng(0).normal(size=(5, 6))  # SMALL_SPEC's 6 features
    want = jaxpipe.load_model(result.run_dir).predict(rows)
    assert (jaxpipe.load_model(got).predict(rows) == want).all()


def test_sweep_logs_one_run_per_trial(write_spec, tmp_path):
    store = tmp_path / "mlruns"
    text = SMALL_SPEC + SWEEP + f'[logging]\ntensorboard = true\nmlflow = "{store}"\n'
    spec = write_spec(text)
    result = jaxpipe.run(spec, str(tmp_path / "sweep"), verbose=False)
    for k in (0, 1):
        logdir = os.path.join(result.run_dir, "tensorboard", f"trial-{k}")
        acc = _assert_scalars_match(logdir, _rows(os.path.join(result.run_dir, "trials", str(k))))
        hp = _hparams(acc)
        assert hp["optimizer.learning_rate"] == pytest.approx((1e-3, 1e-2)[k])
        assert hp["model.hidden"] == "[16]" and hp["experiment.seed"] == 3  # not only the swept
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file://{store}")
    exp = client.get_experiment_by_name("small")
    runs = client.search_runs([exp.experiment_id])
    trials = {r.data.tags.get("mlflow.runName"): r for r in runs if "trial" in r.info.run_name}
    assert set(trials) == {"trial-0", "trial-1"}
    every = _every_param(spec)
    for k, lr in ((0, "0.001"), (1, "0.01")):
        params = trials[f"trial-{k}"].data.params
        assert {key: params[key] for key in every} == every | {"optimizer.learning_rate": lr}
        assert params["sweep.trial"] == str(k)
    parent = [r for r in runs if "trial" not in r.info.run_name]
    assert len(parent) == 1
    assert parent[0].data.params["sweep.values.optimizer.learning_rate"] == "[0.001, 0.01]"
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in trials.values())
    model = {a.path for a in client.list_artifacts(parent[0].info.run_id, "model")}
    assert "model/model.msgpack" in model  # the best trial's model, as the sweep directory's


def test_cli_logs_to_mlflow_default_store_and_says_where(write_spec, tmp_path):
    """`jaxpipe run` with MLflow's default store (a SQLite URI, relative to the working
    directory) and TensorBoard: the console's last lines name the run, its experiment and
    the store, and the TensorBoard folder; the real readers find what the lines name."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    spec = write_spec(
        SMALL_SPEC + '[logging]\ntensorboard = true\nmlflow = "sqlite:///mlflow.db"\n'
    )
    out = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", spec, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    mlf = [line.strip() for line in lines if line.strip().startswith("Logged to MLflow: run ")]
    assert len(mlf) == 1, p.stdout
    run_id = mlf[0].split()[4]
    assert mlf[0].endswith("in experiment 'small' at sqlite:///mlflow.db"), mlf[0]
    logdir = os.path.join(out, "tensorboard")
    tb = f"Logged to TensorBoard: {logdir} (view: tensorboard --logdir {logdir})"
    assert tb in [line.strip() for line in lines], p.stdout
    assert "INFO" not in p.stderr and "alembic" not in p.stderr, p.stderr
    _assert_scalars_match(logdir, _rows(str(out)))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert {k: run.data.params[k] for k in _every_param(spec)} == _every_param(spec)
    rows = _rows(str(out))
    history = client.get_metric_history(run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [
        (r["epoch"], pytest.approx(r["val_accuracy"])) for r in rows
    ]
    model = {a.path for a in client.list_artifacts(run_id, "model")}
    assert model == {f"model/{n}" for n in MODEL_FILES}


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("sqlite:///{tmp}/no/such/folder/m.db", "does not exist"),
        ("sqlite:///{tmp}", "is a directory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_a_sqlite_store_that_cannot_be_logged_to_is_refused_first(tmp_path, uri, why):
    """Refused before any work, and nothing written (`jaxpipe validate` asks this too)."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    with pytest.raises(JaxpipeError, match=why) as e:
        MlflowObserver(uri.format(tmp=tmp_path))
    assert "[logging] mlflow" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", ["tensorboard", "mlflow"])
def test_missing_extra_is_exit_2_naming_it(write_spec, tmp_path, extra):
    fake = tmp_path / "fake"
    (fake / extra).mkdir(parents=True)
    (fake / extra / "__init__.py").write_text("raise ImportError('not installed')\n")
    value = "true" if extra == "tensorboard" else '"mlruns"'
    spec = write_spec(SMALL_SPEC + f"[logging]\n{extra} = {value}\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(fake), ROOT])}
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", spec, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and f"jaxpipe[{extra}]" in p.stderr, p.stderr
    assert not out.exists()
