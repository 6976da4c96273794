"""`jaxpipe calibration RUN_DIR...`: estimate beside measured peak per run, the error
distribution over the measured runs, unmeasured (CPU) runs listed as such, and a directory
that is not a finished run answered in one line (real CLI)."""

import json
import os
import subprocess
import sys

import pytest

import jaxpipe


def _run_dir(root, name, estimate, peak, device="NVIDIA H100 80GB HBM3"):
    d = root / name
    d.mkdir()
    plan = {
        "strategy": "single",
        "devices": 1,
        "device": device,
        "per_device_bytes": estimate,
        "measured_peak_bytes": peak,
    }
    (d / "summary.json").write_text(json.dumps({"status": "completed", "plan": plan}))
    return str(d)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "jaxpipe", "calibration", *args], capture_output=True, text=True
    )


def test_estimate_beside_measured_peak_and_the_distribution(tmp_path):
    dirs = [
        _run_dir(tmp_path, "a", 110 * 2**20, 100 * 2**20),
        _run_dir(tmp_path, "b", 90 * 2**20, 100 * 2**20),
        _run_dir(tmp_path, "cpu", 5 * 2**20, None, device="cpu"),
    ]
    rows = jaxpipe.read_calibration(dirs)
    assert [r.error for r in rows] == [pytest.approx(0.10), pytest.approx(-0.10), None]
    done = _cli(*dirs)
    assert done.returncode == 0, done.stderr
    assert "+10.0%" in done.stdout and "-10.0%" in done.stdout and "no measurement" in done.stdout
    assert "2 of 3 runs measured" in done.stdout and "1 under-estimate" in done.stdout
    out = json.loads(_cli(*dirs, "--json").stdout)
    assert [r["error"] for r in out["runs"]][2] is None


def test_a_cpu_only_set_says_it_cannot_calibrate(tmp_path):
    done = _cli(_run_dir(tmp_path, "cpu", 5 * 2**20, None, device="cpu"))
    assert done.returncode == 0 and "No run of 1 has a measured peak" in done.stdout


@pytest.mark.parametrize("case", ["missing", "no-summary", "not-json"])
def test_not_a_run_directory_exits_2_in_one_line(tmp_path, case):
    d = tmp_path / "r"
    if case != "missing":
        d.mkdir()
    if case == "not-json":
        (d / "summary.json").write_bytes(b"\x00\xff garbage")
    done = _cli(str(d))
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1 and str(d) in done.stderr


def test_a_real_run_records_the_estimate_and_a_null_peak_on_cpu(write_spec, tmp_path):
    from conftest import SMALL_SPEC

    out = tmp_path / "run"
    jaxpipe.run(jaxpipe.load_spec(write_spec(SMALL_SPEC)), out=str(out))
    (row,) = jaxpipe.read_calibration([str(out)])
    assert row.estimate_bytes > 0 and row.measured_peak_bytes is None and row.error is None
    assert os.path.isfile(out / "summary.json")
    # XLA's figure for the run's own compiled epoch (per device: this run is data × 8, a
    # figure summed over devices would be ~8 × larger) sits under the run's whole estimate.
    assert 0 < row.xla_epoch_bytes <= row.estimate_bytes
    done = _cli(str(out))
    assert "XLA epoch MiB" in done.stdout and f"{row.xla_epoch_bytes / 2**20:,.1f}" in done.stdout
