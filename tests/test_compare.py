"""`jaxpipe compare`'s records and compare.png (report/compare.py): whole-epoch ticks, and
runs of different tasks on panels of their own. Run directories written by hand (the
files compare reads), so no training is needed; the CLI over real runs and a sweep is
tested in test_sweep."""

import json

from jaxpipe.report.compare import compare_runs, comparison_figure, write_comparison_plot


def _run_dir(path, task, losses):
    path.mkdir()
    summary = {"status": "completed", "task": task, "device": {"count": 1, "platform": "cpu"}}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "spec.toml").write_text(
        f'[model]\ntask = "{task}"\n[training]\nepochs = {len(losses)}\n'
    )
    rows = [{"epoch": e, "val_loss": v, "epoch_seconds": 0.1} for e, v in enumerate(losses, 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_compare_png_ticks_whole_epochs_and_gives_each_task_its_panel(tmp_path):
    dirs = [
        _run_dir(tmp_path / "c1", "classification", [1.2, 0.8, 0.6]),
        _run_dir(tmp_path / "c2", "classification", [1.1, 0.7, 0.65]),
        _run_dir(tmp_path / "r1", "regression", [0.09, 0.05, 0.04]),
    ]
    records = compare_runs(dirs)
    assert [r["task"] for r in records] == ["classification"] * 2 + ["regression"]
    fig = comparison_figure(records, "val_loss")
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == [
        "val_loss per run: classification",
        "val_loss per run: regression",
    ]
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 1]  # not one axis for both
    for ax in fig.axes:  # three epochs: ticks 1, 2, 3, never 1.5
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    one = comparison_figure(records[:2], "val_loss")
    assert len(one.axes) == 1 and one.axes[0].get_title() == "val_loss per run"
    write_comparison_plot(records, "val_loss", str(tmp_path / "compare.png"))
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
