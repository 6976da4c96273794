"""Issue 12, Done-when 1: the estimate `jaxpipe plan` quotes without --verify (the closed
form, its per-layer units fitted to XLA's one-device compile: xlafit.py) is held within
10 % of XLA's compiled per-device figure for jaxpipe's own epoch, over MLPs drawn across
what the spec accepts (activations, dropout, LayerNorm, precision, every optimizer the
docs list, both tasks) and the layouts at 1, 2, 4 and 8 simulated devices. FSDP's
layouts are not held (search.UNVERIFIED, see benchmarks/RESULTS.md): `jaxpipe plan`
compiles them and quotes XLA's figure, and says so, which the last test holds. Shapes come from small buckets (one
compile each, ~1-3 s), sized so that activations, weights and optimizer state all weigh
in the figure; the full table is `python benchmarks/plan_error.py`."""

from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

import jaxpipe
from jaxpipe.core.model import ACTIVATION_FNS
from jaxpipe.data.shapes import data_shapes
from jaxpipe.planner import memory, search, state, verify, xlafit
from jaxpipe.planner.values import Workload
from jaxpipe.report.verdict import format_plan
from jaxpipe.spec.experiment import parse_spec

# Every optimizer README lists.
OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "lion", "adafactor", "lamb"]
LAYOUTS = [
    ("single", {"data": 1}),
    ("data", {"data": 2}),
    ("data", {"data": 4}),
    ("data", {"data": 8}),
    ("tensor", {"model": 2}),
    ("tensor", {"model": 4}),
    ("data+tensor", {"data": 2, "model": 2}),
    ("data+tensor", {"data": 4, "model": 2}),
]


def _spec(hidden, batch, activation, opt, task, dropout, layer_norm, precision):
    return parse_spec(
        f"""
[data]
source = "synthetic"
validation = 32
[data.synthetic]
rows = {2 * batch + 32}
features = 24
classes = 10
[model]
task = "{task}"
hidden = {hidden}
activation = "{activation}"
dropout = {dropout}
layer_norm = {str(layer_norm).lower()}
[optimizer]
name = "{opt}"
[training]
batch_size = {batch}
precision = "{precision}"
"""
    )


# Misses random draws once found at small per-device batches (+22 % and +21 % before the
# estimate counted LayerNorm's statistics that XLA fuses away in small layers and the
# buffers a hidden layer frees before its weight gradient is written, see
# residuals.backward_peak), held as explicit examples of the property below.
DATA_8, DATA_TENSOR_4X2 = ("data", {"data": 8}), ("data+tensor", {"data": 4, "model": 2})
TENSOR_4 = ("tensor", {"model": 4})
FOUND = [
    # 16 rows per device.
    ([256], 64, "relu", "rmsprop", "classification", 0.0, True, "float32", DATA_TENSOR_4X2),
    # 32 rows per device, SGD (no optimizer state).
    ([128, 256], 256, "sigmoid", "sgd", "regression", 0.0, True, "float32", DATA_8),
    # +15 % before the one-device fit's excess over 1 was carried to a model axis only by
    # the column-parallel layers (xlafit.carried_scale): the single program's heap slack.
    ([128, 256], 64, "sigmoid", "adafactor", "classification", 0.2, False, "float32", TENSOR_4),
]
NAMES = ["hidden", "batch", "activation", "opt", "task", "dropout", "layer_norm", "precision"]


def _with_found(test):
    for args in FOUND:
        test = example(**dict(zip([*NAMES, "layout"], args)))(test)
    return test


# No shrinking: each example is a compile, and a failure's draw is printed as it is.
# Derandomized: the suite runs the same draws every time, after the FOUND examples.
@settings(max_examples=8, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@_with_found
@given(
    hidden=st.sampled_from([[256], [128, 256], [256, 64, 128]]),
    batch=st.sampled_from([64, 256]),
    activation=st.sampled_from(sorted(ACTIVATION_FNS)),
    opt=st.sampled_from(OPTIMIZERS),
    task=st.sampled_from(["classification", "regression"]),
    dropout=st.sampled_from([0.0, 0.2]),
    layer_norm=st.booleans(),
    precision=st.sampled_from(["float32", "bfloat16"]),
    layout=st.sampled_from(LAYOUTS),
)
def test_closed_form_within_10_percent_of_xla(
    hidden, batch, activation, opt, task, dropout, layer_norm, precision, layout
):
    spec = _spec(hidden, batch, activation, opt, task, dropout, layer_norm, precision)
    strategy, mesh = layout
    shapes = data_shapes(spec)
    abstract = state.abstract_state(Workload.of(spec), shapes)
    fit = xlafit.fit(Workload.of(spec), shapes, abstract, batch)
    scale = fit.for_layout(hidden, strategy, mesh)
    est = memory.estimate(spec.model, spec.training, shapes, abstract, strategy, mesh, scale=scale)
    compiled = verify.compile_layout(Workload.of(spec), shapes, abstract, strategy, mesh)
    xla = verify.xla_figures(compiled, shapes)["total_with_validation"]
    assert abs(est.total / xla - 1) <= 0.10, (est.total / xla - 1, est.breakdown, xla)


def test_plan_says_which_figures_are_not_held_to_xla(write_spec):
    # FSDP's closed form is not held within 10 % (search.UNVERIFIED): `plan` quotes XLA's
    # compiled figure for its fsdp and fsdp+tensor options, and says so; the closed form
    # alone (fit=False, what a run plans with) marks them as not held.
    spec = jaxpipe.load_spec(write_spec(_SPEC_TEXT))
    plan = jaxpipe.plan(spec, gpu="T4")
    assert plan.fit["unverified"] == list(search.UNVERIFIED)
    assert plan.fit["xla_bytes"] and plan.fit["note"].startswith("closed form fitted")
    fsdp = [o for o in plan.options if o.strategy in search.UNVERIFIED]
    assert {o.strategy for o in fsdp} == set(search.UNVERIFIED)
    assert all(o.source == "xla" for o in fsdp)
    # The figure is XLA's for that layout (one compiled again here, to compare).
    x = verify.measure(
        Workload.of(spec),
        plan.shapes,
        [(fsdp[0].strategy, fsdp[0].mesh)],
    )[0]
    assert fsdp[0].per_device_bytes == x["total_with_validation"] + plan.fit["runtime_bytes"]
    text = format_plan(plan)
    lines = [line for line in text.splitlines() if "fsdp" in line and " × T4: " in line]
    assert lines and all("(XLA) per device" in line for line in lines), text
    assert "fsdp, fsdp+tensor: figures compiled by XLA" in text
    loose = format_plan(jaxpipe.plan(spec, gpu="T4", fit=False))
    lines = [line for line in loose.splitlines() if "fsdp" in line and " × T4: " in line]
    assert lines and all("(est., not held to XLA)" in line for line in lines), loose


_SPEC_TEXT = """
[data]
source = "synthetic"
validation = 64
[data.synthetic]
rows = 4160
features = 1024
classes = 10
[model]
hidden = [16384, 16384, 16384, 16384, 16384, 16384]
[training]
batch_size = 512
"""
