"""Runs whose training split streams from disk (issue 16): every strategy, resume at an
epoch boundary, and a two-process run where each process reads its own row groups."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, assert_trees_close
from test_stream_sources import write_parts

import jaxpipe

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

DISK_SPEC = """
[experiment]
name = "disk"
seed = 5

[data]
source = "parquet"
path = "d/*.parquet"
label = "y"
validation = 0.25
host_memory = "24KiB"

[model]
hidden = [16]

[training]
epochs = 2
batch_size = 16
"""


def _strip(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


def _close(a, b, rel=1e-5):
    assert len(a) == len(b)
    for ra, rb in zip(_strip(a), _strip(b)):
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=rel, abs=1e-6), k


def _run(path, out, *overrides, **kw):
    return jaxpipe.run(jaxpipe.load_spec(path, list(overrides)), out=str(out), verbose=False, **kw)


@pytest.fixture
def disk_spec(tmp_path, write_spec):
    write_parts(tmp_path / "d", parts=4, rows=60, group=15)
    return write_spec(DISK_SPEC)


def test_streamed_data_and_fsdp_runs_equal_and_resume_exactly(disk_spec, tmp_path):
    four = ["hardware.devices=4"]
    data = _run(disk_spec, tmp_path / "data", 'hardware.strategy="data"', *four)
    assert data.summary["data"]["streamed_from_disk"] and data.summary["chunk_steps"]
    assert data.summary["plan"]["mesh"] == {"data": 4}
    load = next(s for s in data.stages if s.name == "load").output
    assert "(on disk, read as it streams) + validation" in load, load  # it said "(host)"
    # Interrupted after epoch 1 (a one-epoch run), resumed to two under fsdp.
    fsdp = ['hardware.strategy="fsdp"', *four]
    _run(disk_spec, tmp_path / "f", *fsdp, "training.epochs=1")
    resumed = _run(disk_spec, tmp_path / "f", *fsdp, resume=True, force=True)
    assert resumed.summary["resumed_from"] == 1
    # The same batches in the same order: equal within fp32 (another split of the sums).
    _close(data.history, resumed.history)
    assert_trees_close(data.params, resumed.params, rtol=1e-5, atol=1e-6)


def test_two_processes_read_disjoint_halves_and_equal_one_process(disk_spec, tmp_path):
    one = _run(disk_spec, tmp_path / "one", 'hardware.strategy="data"', "hardware.devices=4")
    env = os.environ | {"PYTHONPATH": ROOT}
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "jaxpipe", "launch", "--processes", "2"]
    cmd += ["--cpu-devices-per-process", "2", disk_spec, "--out", str(out), "--quiet"]
    cmd += ["--set", 'hardware.strategy="data"']
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"]["process_count"] == 2 and summary["plan"]["mesh"] == {"data": 4}
    two = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    _close(two, one.history)
    # Each process read its own lanes' row groups: together exactly what one process read.
    per = summary["data"]["bytes_read_per_process"]
    assert len(per) == 2 and sum(per) == one.summary["data"]["bytes_read_per_process"][0]
    assert min(per) > 0.3 * sum(per)
