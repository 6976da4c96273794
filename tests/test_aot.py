"""Programs kept on disk beside the compilation cache (jaxpipe/core/aot.py): a stored program
loads and computes what a fresh compile does; a damaged file compiles instead; an
executable that JAX's own cache handed back is never the one stored."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpipe.core import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cache_dir(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    aot._MEMO.clear()
    yield tmp_path / "jaxpipe-aot"
    aot._MEMO.clear()
    jax.config.update("jax_compilation_cache_dir", before)


def _f(x, y):
    return jnp.tanh(x @ y).sum(axis=0), x * 2  # x * 2 can reuse the donated x


def _lower(*args):
    return jax.jit(_f, donate_argnums=0).lower(*args)


def _args():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32))


def test_a_stored_program_loads_and_matches_a_fresh_compile(cache_dir):
    x, y = _args()
    first = aot.cached_compile("f", _lower, (x, y), {}, "test")
    stored = os.listdir(cache_dir)
    assert len(stored) == 1 and stored[0].startswith("f-")
    aot._MEMO.clear()  # as a new process would: from the file
    loaded = aot.cached_compile("f", _lower, (x, y), {}, "test")
    assert loaded is not first
    fresh = _lower(x, y).compile()
    for got in (first(x, y), loaded(x, y)):
        for a, b in zip(got, fresh(x, y)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Another description or other shapes: another program.
    aot.cached_compile("f", _lower, (x, y), {}, "other")
    aot.cached_compile("f", _lower, (x[:4], y), {}, "test")
    assert len(os.listdir(cache_dir)) == 3


def test_a_damaged_file_compiles_instead(cache_dir):
    x, y = _args()
    aot.cached_compile("f", _lower, (x, y), {}, "test")
    (path,) = [cache_dir / n for n in os.listdir(cache_dir)]
    path.write_bytes(b"not a program")
    aot._MEMO.clear()
    got = aot.cached_compile("f", _lower, (x, y), {}, "test")
    np.testing.assert_array_equal(
        np.asarray(got(x, y)[0]), np.asarray(_lower(x, y).compile()(x, y)[0])
    )
    assert path.read_bytes() != b"not a program"  # compiled and stored again


def test_a_number_is_computed_once(cache_dir):
    calls = []
    assert aot.cached_number("n", "k", lambda: calls.append(1) or 42) == 42
    assert aot.cached_number("n", "k", lambda: calls.append(1) or 7) == 42
    assert calls == [1]


_AFTER_JAX_CACHE = """
import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
from jaxpipe.core import aot
f = lambda x: (jnp.sin(x) @ x.T).sum()
lower = lambda x: jax.jit(f).lower(x)
x = np.ones((16, 16), np.float32)
if sys.argv[2] == "prime":
    jax.jit(f).lower(x).compile()  # an entry in JAX's own cache
elif sys.argv[2] == "store":
    aot.cached_compile("g", lower, (x,), {}, "t")  # JAX's entry must not be what is stored
else:
    print(float(aot.cached_compile("g", lower, (x,), {}, "t")(x)))  # from the file
"""


def test_an_executable_from_jax_cache_is_never_stored(tmp_path):
    """XLA:CPU cannot run an executable that was reloaded from JAX's cache and serialized
    again ("Function ... not found"): a miss here compiles afresh."""
    env = os.environ | {"PYTHONPATH": ROOT}
    for step in ("prime", "store", "load"):
        p = subprocess.run(
            [sys.executable, "-c", _AFTER_JAX_CACHE, str(tmp_path), step],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
    assert len(os.listdir(tmp_path / "jaxpipe-aot")) == 1
    x = np.ones((16, 16), np.float32)
    assert float(p.stdout) == pytest.approx(float((np.sin(x) @ x.T).sum()), rel=1e-5)


@pytest.fixture
def records(cache_dir, monkeypatch):
    """The folder of numbers and records, with the compilation cache on."""
    monkeypatch.setenv("JAXPIPE_COMPILATION_CACHE", "1")
    return cache_dir


def test_a_record_round_trips_in_its_order(records):
    value = {"z": 3, "a": None, "m": 1.5}
    aot.store_record("r", "k", value)
    got = aot.stored_record("r", "k")
    assert got == value and list(got) == list(value)  # the plan's JSON keeps its order
    assert aot.stored_record("r", "other") is None and aot.stored_record("q", "k") is None


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "\xff\xfe", "null"])
def test_a_damaged_record_reads_as_none(records, text):
    aot.store_record("r", "k", {"a": 1})
    (path,) = [records / n for n in os.listdir(records)]
    path.write_bytes(text.encode("latin-1"))
    assert aot.stored_record("r", "k") is None


@pytest.mark.parametrize("text", ["", "12abc", "-5", "1e3"])
def test_a_damaged_number_reads_as_none(records, text):
    aot.store_number("n", "k", 7)
    (path,) = [records / n for n in os.listdir(records)]
    path.write_text(text)
    assert aot.stored_number("n", "k") is None


def test_numbers_and_records_are_not_kept_while_the_cache_is_off(records, monkeypatch):
    aot.store_record("r", "k", {"a": 1})
    monkeypatch.setenv("JAXPIPE_COMPILATION_CACHE", "0")  # JAX's folder is still set
    assert aot.stored_record("r", "k") is None
    aot.store_record("r", "k2", {"a": 1})
    aot.store_number("n", "k", 1)
    assert len(os.listdir(records)) == 1


_SMALL_RUN = """
[experiment]
name = "warm"
seed = 0
[data]
source = "synthetic"
[data.synthetic]
rows = 300
features = 5
classes = 3
[model]
hidden = [8]
[training]
epochs = 2
batch_size = 32
[hardware]
devices = 1
"""


def test_a_warm_run_compiles_nothing_not_even_for_its_report(tmp_path):
    """A run on a warm cache loads every program it runs, the trace's and the saved
    model's check included: an eager `jnp.zeros` or `jax.random.key` there compiled
    small programs of their own in every fresh process (~80 ms each run). One device, as
    on a one-card machine (over several, orbax's save slices each replica itself)."""
    spec = tmp_path / "spec.toml"
    spec.write_text(_SMALL_RUN)
    env = os.environ | {
        "PYTHONPATH": ROOT,
        "JAXPIPE_COMPILATION_CACHE": "1",
        "JAXPIPE_CACHE_DIR": str(tmp_path / "cache"),
        "JAX_LOG_COMPILES": "1",
    }
    logs = []
    for name in ("cold", "warm"):  # the second process finds everything stored
        p = subprocess.run(
            [sys.executable, "-m", "jaxpipe", "run", str(spec), "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        assert os.path.isfile(tmp_path / name / "trace.png")  # the report ran
        logs.append([line for line in p.stderr.splitlines() if "Compiling " in line])
    assert logs[0]  # the cold run compiled (the log is on)
    assert logs[1] == []
