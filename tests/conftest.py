"""Shared fixtures. Eight simulated CPU devices, set before jax is imported, so sharding
is tested on any machine; compilation cache off so tests never touch the user's cache."""

import os
import secrets
import shlex
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAXPIPE_COMPILATION_CACHE", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite starts hundreds of child processes (the CLI as a user runs it). Where the
# environment says PYTHONDONTWRITEBYTECODE, each would compile jaxpipe's sources again
# (~0.1 s of CPU a process); they share one bytecode folder for the session instead,
# outside the tree (removed at the end), as an installed package's processes would.
PYCACHE = tempfile.mkdtemp(prefix="jaxpipe-test-pycache-")
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ["PYTHONPYCACHEPREFIX"] = PYCACHE

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from jaxpipe.testing import register_profiles  # noqa: E402

# dev (small) by default, ci when CI is set, thorough on request (HYPOTHESIS_PROFILE).
register_profiles()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


def assert_trees_close(a, b, *, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """The one tree comparison: same structure, shapes, dtypes, values within tolerance."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# One compilation cache per test process (each xdist worker its own, so no two workers
# write one entry at once), for the `jaxpipe` subprocesses that opt in with
# `cached_env(env)`: the suite runs the same small specs in many processes, and a cached
# executable is the compiled one (as test_resume and `jaxpipe check` rely on). Opt-in,
# not global: tests of compilation itself (test_loop's cache test, the SIGINT trials that
# must land inside a compile) keep compiling from scratch, and the user's cache is never
# touched. Removed when the session ends.
XLA_CACHE = tempfile.mkdtemp(prefix="jaxpipe-test-xla-")


def cached_env(env: dict) -> dict:
    """`env` with jaxpipe's compilation cache on, in this test process's own folder."""
    return env | {"JAXPIPE_COMPILATION_CACHE": "1", "JAXPIPE_CACHE_DIR": XLA_CACHE}


@pytest.fixture(scope="module")
def compile_once():
    """jaxpipe's compilation cache on for a module's in-process runs (and the
    subprocesses they start), in XLA_CACHE; off again after the module, so modules that
    do not ask compile from scratch."""
    import jax._src.compilation_cache as compilation_cache

    mp = pytest.MonkeyPatch()
    mp.setenv("JAXPIPE_COMPILATION_CACHE", "1")
    mp.setenv("JAXPIPE_CACHE_DIR", XLA_CACHE)
    compilation_cache.reset_cache()  # earlier tests may have started jax without one
    yield XLA_CACHE
    mp.undo()
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


def pytest_unconfigure(config):
    shutil.rmtree(XLA_CACHE, ignore_errors=True)
    shutil.rmtree(PYCACHE, ignore_errors=True)


@pytest.fixture
def write_spec(tmp_path):
    """Writes TOML text to a spec file in tmp_path; returns its path."""

    def write(text: str, name: str = "spec.toml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


SMALL_SPEC = """
[experiment]
name = "small"
seed = 3

[data]
source = "synthetic"
validation = 100

[data.synthetic]
rows = 500
features = 6
classes = 3

[model]
hidden = [16]

[training]
epochs = 2
batch_size = 32
"""

# A set that streams from disk under `host_memory = "8KiB"`: four Parquet files of 100
# rows (features a-d, an integer label) in `folder`/parts, and a spec training on it.
DISK_SET_SPEC = (
    '[experiment]\nname = "disk"\n[data]\nsource = "parquet"\npath = "parts"\n'
    'label = "label"\nvalidation = 40\nhost_memory = "8KiB"\n'
    "[model]\nhidden = [8]\n[training]\nepochs = 1\nbatch_size = 16\n"
)


def write_disk_set(folder, extra: str = "") -> str:
    """Writes the parts and `disk.toml` (DISK_SET_SPEC + `extra`) under `folder`; returns
    the spec's path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, "parts"), exist_ok=True)
    for i in range(4):
        x = rng.normal(size=(100, 4)).astype("float32")
        cols = {c: x[:, j] for j, c in enumerate("abcd")} | {"label": (x[:, 0] > 0) * 1}
        pq.write_table(pa.table(cols), os.path.join(folder, "parts", f"part{i}.parquet"))
    path = os.path.join(folder, "disk.toml")
    with open(path, "w") as f:
        f.write(DISK_SET_SPEC + extra)
    return path


# The longest files first: with `-n 2 --dist loadfile` each file runs on one worker, and
# a long file collected last (alphabetically) would run alone at the end while the other
# worker idles. Order only; every test still runs.
_LONG_FIRST = [
    "test_reliability.py",
    "test_step.py",
    "test_checkpoint_defects.py",
    "test_verify.py",
    "test_sweep.py",
    "test_speccheck.py",
    "test_planner.py",
]


# Every run draws its hypothesis examples from one seed, printed first and last, so any
# failing draw (CI's too: its profile is not derandomized) can be replayed with
# HYPOTHESIS_SEED=N. `--hypothesis-seed N` wins, then HYPOTHESIS_SEED, else a fresh seed;
# HYPOTHESIS_SEED=none leaves hypothesis unseeded (with its example database).
# pytest-xdist workers take the controller's seed (pytest_configure_node), so every
# worker draws as the controller printed. A seeded run neither reads nor writes the
# database in .hypothesis/ (hypothesis' rule for a forced seed).
def _hypothesis_seed(config) -> str | None:
    given = config.getoption("hypothesis_seed", None)
    if given is not None:
        return str(given)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller's choice
        return config.workerinput.get("jaxpipe_hypothesis_seed")
    env = os.environ.get("HYPOTHESIS_SEED", "").strip()
    if env.lower() == "none":
        return None
    return env or str(secrets.randbelow(2**32))


@pytest.hookimpl(tryfirst=True)  # before hypothesis' plugin reads --hypothesis-seed
def pytest_configure(config):
    config.jaxpipe_hypothesis_seed = seed = _hypothesis_seed(config)
    # The profile as HYPOTHESIS_PROFILE named it (hypothesis' plugin derives others later).
    config.jaxpipe_hypothesis_profile = settings.get_current_profile_name()
    if seed is not None:
        config.option.hypothesis_seed = seed
    # pytest-xdist >= 3.6 re-sorts loadfile's files by their number of tests
    # (--loadscope-reorder, on by default), which undoes the order above: the long
    # few-test files (the SIGINT trials) were handed out last and ran alone at the end.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["jaxpipe_hypothesis_seed"] = node.config.jaxpipe_hypothesis_seed


def _seed_line(config) -> str:
    seed = config.jaxpipe_hypothesis_seed
    if seed is None:
        return "hypothesis seed: none (HYPOTHESIS_SEED=none: unseeded, example database on)"
    env, profile = f"HYPOTHESIS_SEED={seed}", config.jaxpipe_hypothesis_profile
    if profile != "dev":  # the same number of examples too
        env = f"HYPOTHESIS_PROFILE={profile} {env}"
    args = shlex.join(["python", "-m", "pytest", *config.invocation_params.args])
    return f"hypothesis seed: {seed} (replay: {env} {args})"


def pytest_report_header(config):
    return _seed_line(config)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The functions past ~60 lines (tests/test_layout.py: a habit to keep, not a test),
    then the hypothesis seed to replay this run's draws."""
    from test_layout import _sources, long_functions

    found = long_functions(_sources())
    if found:
        terminalreporter.write_sep(
            "-", f"{len(found)} functions over 60 lines (consider splitting)"
        )
        for line in found:
            terminalreporter.write_line(line)
    terminalreporter.write_line(_seed_line(config))
