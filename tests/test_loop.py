"""The shell's performance switches: XLA options, the compilation cache across runs."""

import json
import os
import subprocess
import sys

from conftest import ROOT, SMALL_SPEC

from jaxpipe.core.aot import compiler_options
from jaxpipe.runner.plan import chunk_steps as _chunk_steps


def test_small_cpu_steps_compile_single_threaded(monkeypatch):
    monkeypatch.delenv("JAXPIPE_CPU_THREADING", raising=False)
    seed = compiler_options("cpu", 23_556, 128)  # experiments/seed.toml: 18 MFLOP a step
    assert seed == {"xla_cpu_multi_thread_eigen": False}
    assert compiler_options("cpu", 290_820, 256) == {}  # benchmarks/large.toml
    assert compiler_options("gpu", 23_556, 128) == {} == compiler_options("tpu", 10, 1)
    monkeypatch.setenv("JAXPIPE_CPU_THREADING", "multi")
    assert compiler_options("cpu", 23_556, 128) == {}
    monkeypatch.setenv("JAXPIPE_CPU_THREADING", "single")
    assert compiler_options("cpu", 290_820, 256) == {"xla_cpu_multi_thread_eigen": False}


def test_chunk_steps_resident_unless_chunks_split_the_epoch():
    assert _chunk_steps("auto", 32, 13) == 0
    assert _chunk_steps(96, 32, 13) == 3
    assert _chunk_steps(13 * 32, 32, 13) == 0  # one chunk holding everything is resident


def _run(spec, out, cache):
    env = os.environ | {
        "PYTHONPATH": ROOT,
        "JAXPIPE_CACHE_DIR": str(cache),
        "JAXPIPE_COMPILATION_CACHE": "1",
    }
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", spec, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    return json.loads((out / "summary.json").read_text())


def test_second_run_of_a_spec_loads_every_program_from_the_cache(tmp_path, write_spec):
    spec = write_spec(SMALL_SPEC)
    cache = tmp_path / "cache"

    def programs():  # compiled executables the cache holds, with their write times
        return {f: os.stat(cache / f).st_mtime_ns for f in os.listdir(cache) if "atime" not in f}

    first = _run(spec, tmp_path / "a", cache)
    stored = programs()
    assert first["compilation_cache"] == str(cache) and stored
    second = _run(spec, tmp_path / "b", cache)
    # Nothing compiled or written again: every program of the second run was a cache hit.
    assert programs() == stored
    assert second["final"] == {**first["final"], "epoch_seconds": second["final"]["epoch_seconds"]}


def test_epochs_take_the_gil_back_promptly_and_leave_the_interval_as_it_was():
    # While the epochs run, a thread importing orbax or matplotlib would hold the GIL for
    # up to the switch interval each time the loop comes back from the device.
    import numpy as np
    import pytest

    import jaxpipe
    from jaxpipe.runner.loop import _HANDOFF_S

    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    seen = []

    class Watch:
        def on_epoch_end(self, row, epochs):
            seen.append(sys.getswitchinterval())

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.02)
    try:
        spec = {"model": {"hidden": [4]}, "training": {"epochs": 2, "batch_size": 16}}
        jaxpipe.fit(spec, x, (x[:, 0] > 0).astype(int), callbacks=[Watch()])
        assert sys.getswitchinterval() == 0.02
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(_HANDOFF_S)] * 2  # CPython keeps whole microseconds
