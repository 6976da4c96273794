"""The memory estimate and the plan: exact parameter and optimizer bytes, agreement with
XLA's own memory analysis of the compiled epoch, monotonicity, FSDP scaling, the sharding
rules, and the auto strategy."""

import json
import math

import jax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax.sharding import PartitionSpec as P

import jaxpipe
from jaxpipe.data.shapes import data_shapes
from jaxpipe.parallel import partition
from jaxpipe.planner import memory, residuals, state, verify
from jaxpipe.planner.values import Workload
from jaxpipe.spec.experiment import parse_spec
from jaxpipe.testing import hidden_layers, optimizer_names

HIDDEN = hidden_layers(widths=[16, 64, 128, 512], min_layers=1, max_layers=3)
OPTIMIZERS = optimizer_names()


def _spec(hidden, batch=64, opt="adam", features=12, classes=3, rows=600, extra=""):
    return parse_spec(
        f"""
[data]
source = "synthetic"
validation = 100
[data.synthetic]
rows = {rows}
features = {features}
classes = {classes}
[model]
hidden = {list(hidden)}
[optimizer]
name = "{opt}"
[training]
batch_size = {batch}
{extra}
"""
    )


def _single(spec):
    shapes = data_shapes(spec)
    abstract = state.abstract_state(Workload.of(spec), shapes)
    return (
        memory.estimate(spec.model, spec.training, shapes, abstract, "single", {"data": 1}),
        shapes,
        abstract,
    )


@given(hidden=HIDDEN, features=st.integers(1, 40), classes=st.integers(2, 9))
def test_parameter_and_optimizer_bytes_are_exact(hidden, features, classes):
    spec = _spec(hidden, opt="adam", features=features, classes=classes)
    widths = [features, *hidden, classes]
    count = sum(a * b + b for a, b in zip(widths, widths[1:]))
    est, _, _ = _single(spec)
    assert est.breakdown["params"] == est.breakdown["gradients"] == 4 * count
    assert est.breakdown["optimizer"] == 2 * 4 * count + 4  # mu, nu and the int32 count
    sgd, _, _ = _single(_spec(hidden, opt="sgd", features=features, classes=classes))
    assert sgd.breakdown["optimizer"] == 0


# Measured on CPU over 110 drawn MLPs (README "Will it fit?"): -9.4 % .. +9.7 % of XLA's
# figure for sgd, adam, adamw and rmsprop (median +0.7 %), but hypothesis has found
# +11.3 % ([512], batch 16, sgd): with a small batch and a wide first layer XLA frees the
# layer's activations before writing its weight gradient, where the estimate keeps two
# of them. That schedule-dependent slack is why the bound here is 12 %, not 10 %. Lion's
# update reads its momentum after overwriting it, so XLA copies the momentum as each step
# starts and frees each leaf's copy at that leaf's update; the estimate counts the largest
# leaf's copy through the forward and backward passes (planstate.Abstract.state_copies).
# XLA's schedule holds it at the backward pass's peak for some shapes and not for others,
# so Lion plans run high (the safe side): -5.1 % .. +16.1 % over all 252 Lion draws of
# this test's domain. The estimate is never more than 10 % low.
@settings(max_examples=6)
# Found by a random draw (issue 28): -14.3 % before the estimate counted Lion's copy.
@example(hidden=(512, 512), batch=128, opt="lion")
@given(hidden=HIDDEN, batch=st.sampled_from([16, 64, 128]), opt=OPTIMIZERS)
def test_estimate_against_xla_memory_analysis(hidden, batch, opt):
    spec = _spec(hidden, batch=batch, opt=opt, features=32, classes=4, rows=1124)
    est, shapes, abstract = _single(spec)
    xla = verify.xla_figures(
        verify.compile_layout(
            Workload.of(spec),
            shapes,
            abstract,
            "single",
            {"data": 1},
        ),
        shapes,
    )
    assert xla["total"] == xla["argument"] + xla["output"] + xla["temp"] - xla["alias"]
    error = est.total / xla["total_with_validation"] - 1
    high = 0.25 if opt == "lion" else 0.12
    assert -0.10 <= error <= high, (error, est.breakdown, xla)


@given(hidden=HIDDEN, batch=st.sampled_from([8, 32, 64]), grow=st.integers(1, 64))
def test_monotone_in_batch_and_width(hidden, batch, grow):
    base, _, _ = _single(_spec(hidden, batch=batch))
    bigger_batch, _, _ = _single(_spec(hidden, batch=batch * 2))
    wider, _, _ = _single(_spec([hidden[0] + grow, *hidden[1:]], batch=batch))
    assert bigger_batch.breakdown["activations"] > base.breakdown["activations"]
    assert bigger_batch.total > base.total
    assert wider.total > base.total and wider.breakdown["params"] > base.breakdown["params"]


def test_bfloat16_keeps_the_state_and_its_activations_come_from_the_table():
    # Issue 12: bfloat16 used to halve the activations, but XLA:CPU computes bfloat16
    # elementwise work in float32 and keeps both copies of some buffers (estimates were
    # -28 … -44 % off). Precision now enters the activations only through the measured
    # residual table: given float32's units, bfloat16's activations are float32's plus
    # the bfloat16 copies of the weights (half the float32 parameters), live through the
    # forward and backward passes.
    f32, _, _ = _single(_spec([512, 512], batch=64))
    spec = _spec([512, 512], batch=64, extra='precision = "bfloat16"')
    bf16, shapes, abstract = _single(spec)
    assert bf16.breakdown["params"] == f32.breakdown["params"]
    assert bf16.breakdown["optimizer"] == f32.breakdown["optimizer"]
    same = {("relu", False, False, "bfloat16"): residuals.TABLE[("relu", False, False, "float32")]}
    alike = memory.estimate(
        spec.model, spec.training, shapes, abstract, "single", {"data": 1}, table=same
    )
    copies = f32.breakdown["params"] // 2
    assert alike.breakdown["activations"] == f32.breakdown["activations"] + copies


@pytest.mark.parametrize("n", [2, 4, 8])
def test_fsdp_state_falls_as_one_over_n(n):
    spec = _spec([1024, 1024], batch=64, opt="adam")
    shapes = data_shapes(spec)
    abstract = state.abstract_state(Workload.of(spec), shapes)
    one = memory.estimate(
        spec.model, spec.training, shapes, abstract, "single", {"data": 1}
    ).breakdown
    sharded = memory.estimate(
        spec.model, spec.training, shapes, abstract, "fsdp", {"data": n}
    ).breakdown
    for term in ("params", "gradients", "optimizer"):
        # a few small leaves (biases of odd sizes, Adam's count) stay whole: within 2 %
        assert sharded[term] == pytest.approx(one[term] / n, rel=0.02), term
    assert sharded["data"] == one["data"]  # the data set is replicated on every device
    assert sharded["activations"] < one["activations"]


def test_partition_specs_follow_the_megatron_and_fsdp_rules():
    spec = _spec([64, 32, 16], batch=64)
    params, opt_state, tx, *_ = state.abstract_state(Workload.of(spec), data_shapes(spec))
    t = partition.partition_specs(params, "tensor", {"model": 2})
    assert t["hidden_0"] == {"kernel": P(None, "model"), "bias": P("model")}
    assert t["hidden_1"] == {"kernel": P("model", None), "bias": P(None)}
    assert t["hidden_2"] == {"kernel": P(None, "model"), "bias": P("model")}
    assert t["output"]["kernel"] == P("model", None)  # after a column-parallel layer
    f = partition.partition_specs(params, "fsdp", {"data": 4})
    assert f["hidden_0"]["kernel"] == P(None, "data")  # 12 × 64: the larger dim divides
    assert f["output"]["bias"] == P(None)  # 3 outputs do not divide by 4: replicated
    ft = partition.partition_specs(params, "fsdp+tensor", {"data": 2, "model": 2})
    assert ft["hidden_0"]["kernel"] == P("data", "model")
    o = partition.optimizer_partition_specs(tx, opt_state, t)
    assert o[0].mu["hidden_1"]["kernel"] == P("model", None) and o[0].count == P()


def test_auto_uses_all_local_devices_when_the_model_fits_one():
    plan = jaxpipe.plan(_spec([64], batch=64))
    assert len(jax.local_devices()) == 8
    assert (plan.strategy, plan.devices, plan.mesh, plan.fits) == ("data", 8, {"data": 8}, True)
    one = jaxpipe.plan(_spec([64], batch=64, extra="[hardware]\ndevices = 1"))
    assert (one.strategy, one.devices) == ("single", 1)


def test_auto_picks_the_layout_with_the_fewest_devices_that_fit():
    # Issue 12: not "FSDP first" but the fewest devices of any layout (ties: the least
    # bytes per device), so tensor x 2 wins over FSDP x 4 when both fit.
    hw = '[hardware]\ndevice_memory = "{}"'
    spec = _spec([1024, 1024], batch=64, opt="adam")
    single = _single(spec)[0].total
    budget = math.ceil(single * 0.6 / 0.75 / 2**20)  # fits two shards, not one device
    plan = jaxpipe.plan(_spec([1024, 1024], batch=64, opt="adam", extra=hw.format(f"{budget}MiB")))
    fewest = min(n for s, n in plan.min_devices.items() if n is not None and s != "single")
    assert plan.fits and plan.devices == fewest == plan.min_devices[plan.strategy]
    assert plan.devices >= 2 and plan.per_device_bytes <= plan.usable_bytes_per_device
    assert plan.min_devices["single"] is None
    cand = {(c.strategy, c.devices): c for c in plan.candidates}
    assert not cand[("single", 1)].fits and cand[(plan.strategy, plan.devices)].fits
    rivals = [c for c in plan.candidates if c.devices == fewest and c.fits]
    assert plan.per_device_bytes == min(c.per_device_bytes for c in rivals)


def test_nothing_fits_says_what_would():
    spec = _spec([1024, 1024], extra='[hardware]\ndevice_memory = "4MiB"\ndevices = 2')
    plan = jaxpipe.plan(spec)
    assert not plan.fits
    assert "would fit" in plan.recommendation and " over " in plan.recommendation


def test_a_forced_strategy_that_does_not_fit_stops_the_run_before_compiling(tmp_path):
    spec = _spec([1024, 1024], extra='[hardware]\ndevice_memory = "4MiB"\nstrategy = "single"')
    with pytest.raises(jaxpipe.PlanError) as e:
        jaxpipe.run(spec, out=str(tmp_path / "r"))
    assert "does not fit" in str(e.value) and not e.value.plan.fits
    assert "Candidates" in jaxpipe.format_plan(e.value.plan)
    assert not (tmp_path / "r").exists()


def test_named_card_plan_and_roofline():
    plan = jaxpipe.plan(_spec([64]), gpu="a100_40gb")
    assert plan.device == "A100-40GB" and plan.fits and plan.devices == 1
    assert plan.usable_bytes_per_device == int(40 * 2**30 * 0.75) - 256 * 2**20
    assert plan.roofline is not None and plan.roofline.epoch_seconds > 0


def test_file_data_is_planned_from_its_encoded_shapes():
    """Penguins has text columns: the plan counts the one-hot-encoded features, as the
    run's model sees them, not the file's columns."""
    import os

    from conftest import EXPERIMENTS

    from jaxpipe.data.load import load_dataset

    spec = jaxpipe.load_spec(os.path.join(EXPERIMENTS, "penguins.toml"))
    shapes, ds = data_shapes(spec), load_dataset(spec)
    assert shapes.source == "loaded data set" and shapes.features == ds.num_features
    assert (shapes.classes, shapes.train_rows, shapes.val_rows) == (
        ds.num_classes,
        len(ds.x_train),
        len(ds.x_val),
    )
    est, _, abstract = _single(spec)
    assert abstract.params["hidden_0"]["kernel"].shape[0] == ds.num_features


def test_regression_layer_norm_and_dropout_are_planned_and_checked_against_xla():
    """LayerNorm and dropout buffers use multipliers calibrated on CPU; over 30 drawn
    MLPs mixing regression, layer_norm and dropout the estimate was -11.9 % .. +13.8 % of
    XLA's figure, so the bound here is 15 %."""
    spec = parse_spec(
        '[model]\nhidden = [128, 64]\ntask = "regression"\nlayer_norm = true\n'
        "dropout = 0.1\n[data]\nsource = 'synthetic'\nvalidation = 100\n[data.synthetic]\nrows = 1124\n"
        "features = 32\n[training]\nbatch_size = 64\n"
    )
    est, shapes, abstract = _single(spec)
    assert shapes.outputs == 1 and shapes.task == "regression" and "norm_0" in abstract.params
    xla = verify.xla_figures(
        verify.compile_layout(
            Workload.of(spec),
            shapes,
            abstract,
            "single",
            {"data": 1},
        ),
        shapes,
    )
    error = est.total / xla["total_with_validation"] - 1
    assert -0.15 <= error <= 0.15, (error, est.breakdown, xla)


def test_issue24_sm3_plans_and_its_state_follows_by_key_path():
    # SM3 keeps a list of per-axis vectors where each parameter is: optax's own
    # tree_map_params cannot map it, and `plan` crashed. Its parameter-shaped `nu`
    # follows the parameters; the vectors are counted whole.
    spec = _spec([64, 64], opt="sm3")
    est, _, abstract = _single(spec)
    state_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract.opt_state))
    assert est.breakdown["optimizer"] == state_bytes
    fsdp = jaxpipe.plan(spec, devices=4, fit=False)
    assert fsdp.fits
    specs = partition.optimizer_partition_specs(
        abstract.tx,
        abstract.opt_state,
        partition.partition_specs(abstract.params, "fsdp", {"data": 4}),
        {"data": 4},
    )
    nu = specs[0].nu["hidden_1"]["kernel"]
    assert (
        nu == partition.partition_specs(abstract.params, "fsdp", {"data": 4})["hidden_1"]["kernel"]
    )
    assert all(s == P() for s in specs[0].mu["hidden_1"]["kernel"])


def test_issue24_rows_past_int32_plan_without_compiling():
    # 10**14 rows: an internal OverflowError (the fit compiled an int32-indexed epoch).
    plan = jaxpipe.plan(_spec([64], rows=10**14), gpu="T4")
    assert not plan.fits and "int32 row index" in plan.fit["note"]
    text = jaxpipe.format_plan(plan)
    assert "PiB" in text.splitlines()[0] and "the data alone needs" in text
    with pytest.raises(jaxpipe.JaxpipeError, match="int32"):
        jaxpipe.plan(_spec([64], rows=10**14), gpu="T4", verify=True)


def test_issue24_a_run_whose_compiled_epoch_does_not_fit_is_refused_before_its_first_step(
    tmp_path, monkeypatch
):
    # The closed form said it fits; XLA's figure of the compiled program (stubbed huge)
    # does not: the run stops with exit 2 (PlanError) before training, naming options.
    from jaxpipe.runner import programs

    spec = _spec([64], extra="[hardware]\ndevices = 1")
    monkeypatch.setattr(programs, "compiled_bytes", lambda compiled: 2**60)
    steps = []
    from jaxpipe.runner import loop

    monkeypatch.setattr(loop, "_epoch", lambda *a: steps.append(a))
    with pytest.raises(jaxpipe.PlanError, match="compiled epoch does not fit") as e:
        jaxpipe.run(spec, out=str(tmp_path / "r"))
    assert e.value.exit_code == 2 and not steps
    assert e.value.plan.source == "xla" and not e.value.plan.fits


def test_issue24_plan_and_run_agree_on_donation(tmp_path):
    # A small state is kept undonated by the run (its checkpoints hold the states): the
    # plan quotes the same need as the run records.
    spec = _spec([64], extra="epochs = 1\n[hardware]\ndevices = 1")
    plan = jaxpipe.plan(spec, fit=False)
    result = jaxpipe.run(spec, out=str(tmp_path / "r"))
    recorded = json.loads((tmp_path / "r" / "summary.json").read_text())["plan"]
    assert recorded["donated"] is False and "snapshots" in plan.breakdown
    assert plan.per_device_bytes == recorded["per_device_bytes"]
    assert len(result.history) == 1


def test_issue24_the_cli_refuses_it_in_one_line_with_exit_2_and_no_summary(
    tmp_path, monkeypatch, capsys
):
    # The same refusal as the user meets it: `jaxpipe run` prints one `error:` line naming
    # what to do, then the plan's options table (as for any run that does not fit), exits
    # 2 without a traceback, and leaves no summary.json that looks like a run.
    from jaxpipe.cli.main import main
    from jaxpipe.runner import programs

    path = tmp_path / "spec.toml"
    path.write_text(
        '[data]\nsource = "synthetic"\nvalidation = 100\n[data.synthetic]\nrows = 600\n'
        "features = 12\nclasses = 3\n[model]\nhidden = [64]\n[training]\nbatch_size = 64\n"
        "[hardware]\ndevices = 1\n"
    )
    monkeypatch.setattr(programs, "compiled_bytes", lambda compiled: 2**60)
    out = tmp_path / "r"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    text = capsys.readouterr().err
    err = text.strip().splitlines()
    assert err[0].startswith("error: ") and "Traceback" not in text, text
    assert [line for line in err if line.startswith("error:")] == [err[0]]
    assert "compiled epoch does not fit" in err[0]
    assert "would fit:" in err[0] or "lower training.batch_size" in err[0], err[0]
    assert "DOES NOT FIT" in text  # the refused plan's table: XLA's figure, not the estimate
    assert not (out / "summary.json").exists()
