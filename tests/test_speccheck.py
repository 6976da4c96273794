"""`jaxpipe check` and its pytest plugin as a team's CI runs them: the real CLI in a
subprocess, on the shipped experiments and on deliberately broken specs."""

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import EXPERIMENTS, ROOT, SMALL_SPEC, write_disk_set
from faults import fault_env

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

EXPERIMENT_FILES = sorted(glob.glob(os.path.join(EXPERIMENTS, "*.toml")))


def _jaxpipe(*args, env=None, cwd=ROOT):
    full = os.environ | {"PYTHONPATH": ROOT} | (env or {})
    cmd = [sys.executable, "-m", "jaxpipe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=cwd, timeout=900)


def _steps(report):
    return {
        os.path.basename(s["path"]): {step["name"]: step["status"] for step in s["steps"]}
        for s in report["specs"]
    }


def test_every_experiment_validates_reads_and_plans():
    p = _jaxpipe("check", *EXPERIMENT_FILES, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] and len(report["specs"]) == len(EXPERIMENT_FILES)
    for name, steps in _steps(report).items():
        assert steps == {"spec": "pass", "data": "pass", "plan": "pass"}, name
    too_big = next(s for s in report["specs"] if "too_big" in s["path"])
    assert "plan-only" in too_big["steps"][2]["detail"]  # not fitting here is declared


# `jaxpipe check experiments/*.toml --resume --sharding 2` trains 6 shrunk runs per
# experiment: ~90 s of CPU for the five trainable ones (README "Testing your
# experiments"), too much for the suite's budget. sharded.toml is the one whose shrunk run
# needs 4 simulated devices (its spec asks for FSDP over 4); the plan-only one is skipped.
# The slicing of a data file that penguins' shrunk run would use is tested in-process in
# test_testing.py.
CHEAP = ["sharded.toml", "too_big_for_16gb.toml"]


def test_check_resume_and_sharding_pass_on_shipped_experiments():
    files = [os.path.join(EXPERIMENTS, name) for name in CHEAP]
    p = _jaxpipe("check", *files, "--resume", "--sharding", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()[1:3]}
    assert rows[files[0]][:5] == ["ok"] * 5, p.stdout
    assert rows[files[1]][:5] == ["ok", "ok", "ok", "skip", "skip"], p.stdout
    assert p.stdout.splitlines()[-1] == "2 of 2 specs pass"


def test_an_inexact_resume_fails_with_the_difference(tmp_path):
    """The resume is made inexact on purpose (tests/faults.py's nudge-resume moves the
    resumed parameters): the check must say so, with the leaves that differ, and exit 1."""
    (tmp_path / "small.toml").write_text(SMALL_SPEC)
    env = fault_env("nudge-resume")
    p = _jaxpipe("check", "small.toml", "--resume", env=env, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAIL small.toml resume: resume after epoch 1 is not exact" in p.stdout
    assert "['hidden_0']['kernel']: 96 of 96 elements differ" in p.stdout
    assert p.stdout.splitlines()[-1] == "0 of 1 specs pass"


def test_a_spec_that_does_not_fit_the_named_card_or_is_invalid_fails(tmp_path):
    (tmp_path / "small.toml").write_text(SMALL_SPEC)
    (tmp_path / "typo.toml").write_text(SMALL_SPEC.replace("[training]", "[trainig]"))
    too_big = os.path.join(EXPERIMENTS, "too_big_for_16gb.toml")
    args = ["check", "small.toml", "typo.toml", too_big, "--gpu", "T4", "--devices", "1"]
    p = _jaxpipe(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()[1:4]}
    assert rows == {
        "small.toml": ["ok", "ok", "ok"],
        "typo.toml": ["FAIL", "-", "-"],
        too_big: ["ok", "ok", "FAIL"],
    }, p.stdout
    assert "FAIL typo.toml spec: " in p.stdout and "did you mean 'training'" in p.stdout
    assert f"FAIL {too_big} plan: on 1 × T4: does not fit" in p.stdout
    # Issue 12: the recommendation is the fewest devices that fit (tensor over 2 T4s).
    assert "would fit: tensor over 2" in p.stdout
    assert p.stdout.splitlines()[-1] == "1 of 3 specs pass"


def test_pytest_plugin_makes_one_test_per_spec(tmp_path):
    files = [os.path.join(EXPERIMENTS, n) for n in ("digits.toml", "too_big_for_16gb.toml")]
    cmd = [sys.executable, "-m", "pytest", "-p", "jaxpipe.pytest_plugin", "-p", "no:cacheprovider"]
    cmd += ["--jaxpipe-specs", files[0], "--jaxpipe-specs", files[1].replace("too_big", "too_*")]
    cmd += ["--jaxpipe-gpu", "T4", "--jaxpipe-devices", "1", "-q"]
    env = os.environ | {"PYTHONPATH": ROOT}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 failed, 1 passed" in p.stdout
    assert f"FAIL {files[1]} plan: on 1 × T4: does not fit" in p.stdout
    nothing = subprocess.run(
        [*cmd[:5], "--jaxpipe-specs", "nope/*.toml"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert nothing.returncode == 4 and "no file matches" in nothing.stderr


def test_sharding_check_skips_a_set_streamed_from_disk_and_says_why(tmp_path):
    """Streamed from disk, rows are dealt to one lane per device, so the order (and the
    metrics) depend on the device count: the sharding comparison is skipped, not failed."""
    write_disk_set(str(tmp_path))
    p = _jaxpipe("check", "disk.toml", "--sharding", "2", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    steps = {s["name"]: s for s in json.loads(p.stdout)["specs"][0]["steps"]}
    assert steps["data"]["status"] == "pass" and steps["plan"]["status"] == "pass"
    assert steps["sharding"]["status"] == "skip"
    reason = "streamed from disk: the row order depends on the device count"
    assert steps["sharding"]["detail"] == reason


def test_plugin_given_no_test_path_runs_only_the_spec_checks():
    """From the repository root (whose `testpaths` is tests/), --jaxpipe-specs alone
    collects the spec files only; with a test path named, both."""
    spec = "experiments/too_big_for_16gb.toml"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist"]
    cmd += ["--jaxpipe-specs", "experiments/too_*.toml", "--collect-only", "-q"]
    env = os.environ | {"PYTHONPATH": ROOT}
    alone = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    ids = [line for line in alone.stdout.splitlines() if "::" in line]
    assert ids == [f"{spec}::jaxpipe-check"], alone.stdout
    both = subprocess.run(
        [*cmd, "tests/test_docs.py"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    ids = [line for line in both.stdout.splitlines() if "::" in line]
    assert f"{spec}::jaxpipe-check" in ids and any(
        i.startswith("tests/test_docs.py::") for i in ids
    )
