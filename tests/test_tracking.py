"""[logging] trackers, read back with the real readers: TensorBoard's event accumulator
and MLflow's client on a file store. A missing extra is exit 2 naming it."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SMALL_SPEC

import jaxpipe

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata  # noqa: E402

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


def test_run_logs_to_tensorboard_and_mlflow(write_spec, tmp_path):
    store = tmp_path / "mlruns"
    spec = write_spec(SMALL_SPEC + f'[logging]\ntensorboard = true\nmlflow = "{store}"\n')
    result = jaxpipe.run(spec, str(tmp_path / "run"), verbose=False)
    acc = _assert_scalars_match(os.path.join(result.run_dir, "tensorboard"), result.history)
    assert _hparams(acc)["experiment.seed"] == 3 and _hparams(acc)["model.hidden"] == "[16]"
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file://{store}")
    exp = client.get_experiment_by_name("small")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["experiment.seed"] == "3"
    assert run.data.params["model.hidden"] == "[16]"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [
        (r["epoch"], pytest.approx(r["val_loss"])) for r in result.history
    ]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "curves.png"} <= names
    assert run.info.status == "FINISHED"


def test_sweep_logs_one_run_per_trial(write_spec, tmp_path):
    store = tmp_path / "mlruns"
    text = SMALL_SPEC + SWEEP + f'[logging]\ntensorboard = true\nmlflow = "{store}"\n'
    result = jaxpipe.run(write_spec(text), str(tmp_path / "sweep"), verbose=False)
    for k in (0, 1):
        logdir = os.path.join(result.run_dir, "tensorboard", f"trial-{k}")
        acc = _assert_scalars_match(logdir, _rows(os.path.join(result.run_dir, "trials", str(k))))
        assert _hparams(acc) == {"optimizer.learning_rate": pytest.approx((1e-3, 1e-2)[k])}
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file://{store}")
    exp = client.get_experiment_by_name("small")
    runs = client.search_runs([exp.experiment_id])
    trials = {r.data.tags.get("mlflow.runName"): r for r in runs if "trial" in r.info.run_name}
    assert set(trials) == {"trial-0", "trial-1"}
    assert trials["trial-1"].data.params["optimizer.learning_rate"] == "0.01"
    parent = [r for r in runs if "trial" not in r.info.run_name]
    assert len(parent) == 1
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in trials.values())


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
