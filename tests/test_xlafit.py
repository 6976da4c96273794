"""xlafit.carried_scale: how the one-device fit's scale reaches each layout (pure
arithmetic, no compile). Its measured effect is held by test_plan_error.py."""

from hypothesis import given, settings
from hypothesis import strategies as st

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
