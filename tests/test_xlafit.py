"""xlafit.carried_scale: how the one-device fit's scale reaches each layout (pure
arithmetic, no compile); its measured effect is held by test_plan_error.py. And the fit's
and the layouts' compiled figures kept on disk: a plan made again compiles nothing and
prints the same plan; with the cache off nothing is read or written; a damaged entry is
compiled again."""

import json
import os
import shutil

import jax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxpipe
from jaxpipe.core import aot
from jaxpipe.planner import state, verify, xlafit
from jaxpipe.planner.xlafit import Fit, carried_scale

HIDDEN = st.lists(st.sampled_from([8, 64, 128, 256, 1024]), min_size=1, max_size=5)
SCALE = st.floats(0.125, 8.0)
LAYOUTS = [
    ("single", {"data": 1}),
    ("data", {"data": 4}),
    ("fsdp", {"data": 4}),
    ("tensor", {"model": 2}),
    ("data+tensor", {"data": 2, "model": 4}),
    ("fsdp+tensor", {"data": 2, "model": 2}),
]


@settings(max_examples=60)
@given(hidden=HIDDEN, scale=SCALE, layout=st.sampled_from(LAYOUTS))
def test_carried_scale_lies_between_one_and_the_fit(hidden, scale, layout):
    strategy, mesh = layout
    carried = carried_scale(scale, hidden, strategy, mesh)
    assert min(1.0, scale) <= carried <= max(1.0, scale)
    # Below 1 (the table over-counts) and without a model axis it is carried whole.
    if scale <= 1.0 or "tensor" not in strategy:
        assert carried == scale


@settings(max_examples=30)
@given(hidden=HIDDEN, scale=st.floats(1.0, 8.0), extra=st.sampled_from([64, 256]))
def test_a_wider_row_parallel_layer_carries_less_of_the_excess(hidden, scale, extra):
    # hidden_1, hidden_3, ... are row-parallel: widening one takes share from the
    # column-parallel layers, which alone run the one-device program.
    mesh = {"model": 2}
    wider = [*hidden[:1], hidden[1] + extra if len(hidden) > 1 else extra, *hidden[2:]]
    narrower = carried_scale(scale, hidden, "tensor", mesh)
    assert carried_scale(scale, wider, "tensor", mesh) <= narrower + 1e-12


def test_one_hidden_layer_is_all_column_parallel_and_carries_the_whole_scale():
    fit = Fit(1.2, 1000, 800, "closed form fitted to XLA's one-device figure")
    assert fit.for_layout([256], "tensor", {"model": 4}) == 1.2
    # [128, 256]: a third of the width is column-parallel.
    assert abs(fit.for_layout([128, 256], "tensor", {"model": 4}) - (1 + 0.2 / 3)) < 1e-12
    assert fit.for_layout([128, 256], "data", {"data": 4}) == 1.2


# The fit and the layouts' figures kept on disk (xlafit._program_figures, verify.measure,
# through core/aot's records): a plan made again reads them and gives the same plan.
SPEC = {
    "data": {
        "source": "synthetic",
        "validation": 64,
        "synthetic": {"rows": 320, "features": 6, "classes": 3},
    },
    "model": {"hidden": [16, 16]},
    "optimizer": {"name": "adam"},
    "training": {"batch_size": 32, "epochs": 1},
}


def _new_process(monkeypatch):
    """Forget what this process compiled, as a second `jaxpipe plan` would start."""
    monkeypatch.setattr(xlafit, "_FITS", {})
    monkeypatch.setattr(verify, "_MEASURED", {})
    monkeypatch.setattr(state, "_CACHE", {})
    monkeypatch.setattr(aot, "_NUMBERS", {})


def _cache_on(monkeypatch, folder) -> None:
    """jaxpipe's compilation cache on, in `folder`, as a fresh process would see it (the
    caller restores JAX's settings after: `_restore_jax`)."""
    import jax._src.compilation_cache as compilation_cache

    monkeypatch.setenv("JAXPIPE_COMPILATION_CACHE", "1")
    monkeypatch.setenv("JAXPIPE_CACHE_DIR", str(folder))
    compilation_cache.reset_cache()
    _new_process(monkeypatch)


def _restore_jax(before: tuple) -> None:
    import jax._src.compilation_cache as compilation_cache

    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


def _jax_settings() -> tuple:
    return (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One plan of SPEC on an empty cache: its JSON and the folder it filled (copied
    by each test, so the module compiles the plan once)."""
    folder = tmp_path_factory.mktemp("cold") / "xla"
    before = _jax_settings()
    with pytest.MonkeyPatch.context() as mp:
        _cache_on(mp, folder)
        record = _plan_json()
    _restore_jax(before)
    return record, folder


@pytest.fixture
def plan_cache(cold, tmp_path, monkeypatch):
    """A copy of the cold plan's cache, on; JAX's settings as they were after."""
    record, folder = cold
    shutil.copytree(folder, tmp_path / "xla")
    before = _jax_settings()
    _cache_on(monkeypatch, tmp_path / "xla")
    yield record, tmp_path / "xla" / "jaxpipe-aot"
    _restore_jax(before)


def _compiles(monkeypatch) -> list[str]:
    """Watch the plan's compiles: the fit, the optimizer update's temporaries and the
    layouts (here or in a child process)."""
    calls: list[str] = []
    for module, name in [
        (xlafit, "single_program_bytes"),
        (state, "_update_temp"),
        (verify, "_measure_here"),
        (verify, "_measure_child"),
    ]:
        original = getattr(module, name)

        def watched(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, watched)
    return calls


def _plan_json() -> str:
    record = jaxpipe.plan(SPEC, gpu="T4").to_json()
    record.pop("host")  # the host's free memory, read afresh by every plan
    return json.dumps(record, indent=2)


def _kept(folder) -> dict[str, int]:
    names = os.listdir(folder)
    prefixes = ("xla-fit-", "layout-figures-", "update-temp-")
    return {p: sum(n.startswith(p) for n in names) for p in prefixes}


def test_a_plan_made_again_compiles_nothing_and_says_the_same(plan_cache, monkeypatch):
    cold, folder = plan_cache
    kept = _kept(folder)
    assert kept["xla-fit-"] == 1 and kept["layout-figures-"] >= 1 and kept["update-temp-"] >= 1
    calls = _compiles(monkeypatch)
    assert _plan_json() == cold  # byte for byte
    # Another spec with the same program (its name, seed and epochs differ) reads them too.
    other = SPEC | {"experiment": {"name": "other", "seed": 3}}
    other["training"] = SPEC["training"] | {"epochs": 4}
    _new_process(monkeypatch)
    assert jaxpipe.plan(other, gpu="T4").fit == json.loads(cold)["fit"]
    assert calls == []


def test_the_cache_off_reads_and_writes_nothing(plan_cache, monkeypatch):
    cold, folder = plan_cache
    names = sorted(os.listdir(folder))
    monkeypatch.setenv("JAXPIPE_COMPILATION_CACHE", "0")  # JAX's folder is still set
    calls = _compiles(monkeypatch)
    assert _plan_json() == cold
    assert {"single_program_bytes", "_update_temp"} <= set(calls)  # compiled, not read
    assert {"_measure_here", "_measure_child"} & set(calls)
    assert sorted(os.listdir(folder)) == names  # and nothing written


DAMAGE = [b"", b"{not json", b"[]", b'{"xla_bytes": -1, "step_ops": 3}', b"\xff", b"-4"]


def test_a_damaged_entry_is_computed_again(plan_cache, monkeypatch):
    cold, folder = plan_cache
    names = sorted(os.listdir(folder))
    for i, name in enumerate(names):  # each file a different damage
        (folder / name).write_bytes(DAMAGE[i % len(DAMAGE)])
    calls = _compiles(monkeypatch)
    assert _plan_json() == cold
    assert {"single_program_bytes", "_update_temp"} <= set(calls)
    for i, name in enumerate(names):  # stored again, whole
        assert (folder / name).read_bytes() != DAMAGE[i % len(DAMAGE)]
