"""Runs choose and execute sharded layouts; a two-process `jaxpipe launch` rehearsal
learns what a one-process run on as many devices learns."""

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SMALL_SPEC

import jaxpipe

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

WIDE = """
[experiment]
name = "wide"
seed = 1

[data]
source = "synthetic"
validation = 32

[data.synthetic]
rows = 160
features = 8
classes = 3

[model]
hidden = [1024, 1024]

[training]
epochs = 1
batch_size = 32
"""


def test_auto_shards_with_fsdp_when_one_device_is_too_small(write_spec, tmp_path):
    spec = jaxpipe.load_spec(write_spec(WIDE))
    one = jaxpipe.plan(spec, devices=1)
    # The single-device program (donated): what the plan quotes less what a run keeping a
    # small state undonated holds beside it (runner.plan.undonated), which a run drops
    # (donating) before it gives up on one device.
    single = one.per_device_bytes - sum(
        one.breakdown.get(k, 0) for k in ("output state", "snapshots")
    )
    # A budget the single-device run cannot fit (usable = 0.75 of it, less the reserve).
    budget = jaxpipe.load_spec(write_spec(WIDE), [f'hardware.device_memory="{single}B"'])
    result = jaxpipe.run(budget, out=str(tmp_path / "r"))
    plan = result.summary["plan"]
    # Issue 12: auto takes the layout with the fewest devices that fit (ties: the least
    # bytes per device), FSDP or another.
    planned = jaxpipe.plan(budget)
    assert plan["strategy"] == planned.strategy != "single" and plan["devices"] > 1
    assert plan["mesh"] == planned.mesh and math.prod(plan["mesh"].values()) == plan["devices"]
    assert plan["devices"] == min(n for n in planned.min_devices.values() if n is not None)
    # What each device really holds, read back from the placed shards, fits the budget.
    assert plan["measured_per_device_bytes"] < plan["usable_bytes_per_device"] < single
    assert result.summary["status"] == "completed"


def test_bad_distributed_settings_are_exit_2(write_spec, capsys):
    from jaxpipe.cli.main import main

    spec = write_spec(SMALL_SPEC)
    assert main(["run", spec, "--coordinator", "127.0.0.1:1", "--out", "x"]) == 2
    assert "needs all of --coordinator" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                spec,
                "--coordinator",
                "127.0.0.1:1",
                "--num-processes",
                "2",
                "--process-id",
                "5",
                "--out",
                "x",
            ]
        )
        == 2
    )
    assert "--process-id 5" in capsys.readouterr().err
    assert main(["launch", "--processes", "0", spec]) == 2


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def test_two_process_launch_equals_one_process_on_four_devices(write_spec, tmp_path):
    spec = write_spec(SMALL_SPEC)
    one = jaxpipe.run(jaxpipe.load_spec(spec, ["hardware.devices=4"]), out=str(tmp_path / "one"))
    assert one.summary["plan"]["mesh"] == {"data": 4}
    env = os.environ | {"PYTHONPATH": ROOT}
    out = tmp_path / "two"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxpipe",
            "launch",
            "--processes",
            "2",
            "--cpu-devices-per-process",
            "2",
            spec,
            "--out",
            str(out),
            "--quiet",
            # A save every epoch: both processes' saves beside the next epoch's collectives
            # once hung the run after epoch 1.
            "--set",
            "checkpoint.every_epochs=1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"]["process_count"] == 2 and summary["plan"]["mesh"] == {"data": 4}
    two = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(two) == len(one.history)
    saved = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [r["epoch"] for r in two][-3:]  # every epoch saved, the newest 3 kept
    for a, b in zip(_strip(two), _strip(one.history)):
        for k in a:
            # Same program on the same 4-device mesh; gloo may sum in another order.
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_resume_on_another_device_count_and_strategy(write_spec, tmp_path):
    """Checkpointed on data × 2, resumed on fsdp × 4: orbax restores into the new
    shardings and training continues where it stopped."""
    path = write_spec(SMALL_SPEC)
    out = str(tmp_path / "r")
    first = ['hardware.strategy="data"', "hardware.devices=2", "training.epochs=2"]
    jaxpipe.run(jaxpipe.load_spec(path, first), out=out)
    later = ['hardware.strategy="fsdp"', "hardware.devices=4", "training.epochs=3"]
    resumed = jaxpipe.run(jaxpipe.load_spec(path, later), out=out, resume=True, force=True)
    assert resumed.summary["resumed_from"] == 2
    assert resumed.summary["plan"]["mesh"] == {"data": 4}
    straight = jaxpipe.run(jaxpipe.load_spec(path, later), out=str(tmp_path / "s"))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(_strip(resumed.history), _strip(straight.history)):
        for k in a:
            # Epochs 1-2 ran on another mesh: fp32 reduction order differs by a few ulps.
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
