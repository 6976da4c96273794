"""The epoch-time model (planner/timing.py) and its profiles (planner/profiles.py): the
ring formulas, each strategy's collectives, the step's work, the epoch's parts, the
catalog's measured and data-sheet profiles, `jaxpipe calibrate` and `plan` reading what
it stored. Timings never gate a test: benchmarks/time_error.py holds the model to
measured epochs."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.planner import hardware, profiles, timing
from jaxpipe.spec.strategy import DATA, MODEL, Strategy


@given(
    nbytes=st.integers(1, 2**34),
    n=st.integers(2, 64),
    bus=st.floats(1e9, 1e12),
    latency=st.floats(0, 1e-4),
)
def test_ring_formulas(nbytes, n, bus, latency):
    ar = timing.collective_seconds("all-reduce", nbytes, n, bus, latency)
    ag = timing.collective_seconds("all-gather", nbytes, n, bus, latency)
    rs = timing.collective_seconds("reduce-scatter", nbytes, n, bus, latency)
    assert ar == pytest.approx(2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bus)
    # An all-reduce is a reduce-scatter and an all-gather (nccl-tests' bus bandwidth).
    assert ar == pytest.approx(ag + rs) and ag == rs
    assert timing.collective_seconds("all-reduce", nbytes, 1, bus, latency) == 0.0
    assert timing.collective_seconds("all-reduce", 2 * nbytes, n, bus, latency) > ar


def test_each_strategy_knows_its_collectives():
    acts = (100, 200)
    got = {s: s.step_collectives(1000, 500, acts) for s in Strategy}
    assert got[Strategy.SINGLE] == ()
    assert got[Strategy.DATA] == (("all-reduce", DATA, 1000),)
    assert got[Strategy.FSDP] == (
        ("all-gather", DATA, 500),
        ("all-gather", DATA, 500),
        ("reduce-scatter", DATA, 1000),
    )
    assert got[Strategy.TENSOR] == (("all-reduce", MODEL, 100), ("all-reduce", MODEL, 200))
    assert got[Strategy.DATA_TENSOR] == (("all-reduce", DATA, 1000), *got[Strategy.TENSOR])
    assert got[Strategy.FSDP_TENSOR] == got[Strategy.FSDP] + got[Strategy.TENSOR]
    for s in Strategy:  # the names the strategy lists are the kinds it runs
        kinds = {k for k, _, _ in got[s]}
        assert kinds <= {"all-gather", "reduce-scatter", "all-reduce"}
        assert bool(kinds) == bool(s.collectives)


def _work(strategy="single", mesh=None, hidden=(256, 256), batch=128, **kw):
    args = dict(
        features=32,
        hidden=hidden,
        outputs=4,
        batch=batch,
        param_bytes=4 * 80_000,
        optimizer_bytes=8 * 80_000,
        ops=60,
    )
    return timing.step_work(strategy, mesh or {"data": 1}, **(args | kw))


def test_step_work_counts_the_matmuls_of_forward_and_backward():
    w = _work()
    macs = 32 * 256 + 256 * 256 + 256 * 4
    # forward 2, backward 4 per multiply-add, less the first layer's input gradient
    assert w.flops == 6 * 128 * macs - 2 * 128 * 32 * 256
    data = _work("data", {"data": 4})
    assert data.flops == pytest.approx(w.flops / 4)
    tensor = _work("tensor", {"model": 4})
    # Megatron pairs: hidden_0 split on its output, hidden_1 on its input; the output
    # layer (after a row-parallel layer) whole.
    split = 6 * 128 * (32 * 64 + 64 * 256 + 256 * 4) - 2 * 128 * 32 * 64
    assert tensor.flops == split
    assert [k for k, _, _ in tensor.collectives] == ["all-reduce"] * 2
    assert tensor.ops > w.ops  # each collective is a kernel to wait for


def test_epoch_time_parts_add_up_and_nodes_cost_more():
    profile = timing.catalog_profile(hardware.load_catalog()["A100-40GB"])
    kw = dict(precision="float32", steps=40, epochs=3, rows=5000, val_rows=1000, depth=2)
    w = _work("data", {"data": 16}, hidden=(4096, 4096), batch=512)
    t = timing.epoch_time(w, profile, mesh={"data": 16}, per_node=8, **kw)
    assert t.epoch_seconds == pytest.approx(sum(t.parts.values()))
    assert t.run_seconds == pytest.approx(3 * t.epoch_seconds + t.compile_seconds)
    one_node = timing.epoch_time(w, profile, mesh={"data": 16}, per_node=16, **kw)
    assert t.parts["communication"] > one_node.parts["communication"] > 0
    faster_net = timing.epoch_time(w, profile, mesh={"data": 16}, per_node=8, network_gbs=100, **kw)
    assert faster_net.parts["communication"] < t.parts["communication"]
    assert t.source == "data sheet"


def test_catalog_profiles_measured_and_data_sheet():
    cat = hardware.load_catalog()
    h100 = timing.catalog_profile(cat["H100"])
    assert h100.source == "measured" and "epochs_h100" in h100.note
    assert h100.op_s == pytest.approx(0.688e-6) and h100.rate("float32") == 52.4e12
    for kind in cat.values():
        p = timing.catalog_profile(kind)
        assert p.rate("bfloat16") >= p.rate("float32") > 0 and p.bandwidth > 0
        assert kind.price_per_hour is None or kind.price_source
        if kind.gpus_per_node:
            assert kind.interconnect_gbs and kind.interconnect
    assert timing.catalog_profile(cat["H200"]).bandwidth > h100.bandwidth
    back = timing.Profile.from_json(json.loads(json.dumps(h100.to_json())))
    assert back == h100


def test_kernels_are_counted_in_the_compiled_step():
    cfg = profiles.Config([32, 32], 16, 8, 64, "float32", "adam")
    epoch, state, x, y, opts = profiles._program(cfg)
    text = epoch.lower(state, x, y, jnp.int32(0)).compile(opts).as_text()
    ops = timing.count_step_ops(text)
    assert 20 <= ops <= 200
    assert timing.count_step_ops("ENTRY %main () -> f32[] {\n}") is None
    assert timing.estimate_ops(3, "adafactor") > timing.estimate_ops(3, "adam")
    assert timing.estimate_ops(4, "sgd") > timing.estimate_ops(2, "sgd")


STEP_HLO = """HloModule epoch

%fused_power (p0: f32[64,32]) -> f32[64,32] {
  %p0 = f32[64,32]{1,0} parameter(0)
  %c = f32[] constant(-0.8)
  %b = f32[64,32]{1,0} broadcast(%c), dimensions={}
  ROOT %pow = f32[64,32]{1,0} power(%p0, %b)
}

%fused_add (q0: f32[8,16], q1: f32[16,8]) -> f32[8,16] {
  %q0 = f32[8,16]{1,0} parameter(0)
  %q1 = f32[16,8]{1,0} parameter(1)
  %t = f32[8,16]{1,0} transpose(%q1), dimensions={1,0}
  ROOT %add = f32[8,16]{1,0} add(%q0, %t)
}

%body (arg: (f32[64,32], f32[16,8], f32[8,16])) -> (f32[64,32], f32[16,8], f32[8,16]) {
  %arg = (f32[64,32]{1,0}, f32[16,8]{1,0}, f32[8,16]{1,0}) parameter(0)
  %a = f32[64,32]{1,0} get-tuple-element(%arg), index=0
  %g = f32[16,8]{1,0} get-tuple-element(%arg), index=1
  %w = f32[8,16]{1,0} get-tuple-element(%arg), index=2
  %d = f32[16,16]{1,0} dot(%g, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %v = f32[64,32]{1,0} fusion(%a), kind=kLoop, calls=%fused_power
  %u = f32[8,16]{1,0} fusion(%w, %g), kind=kLoop, calls=%fused_add
  %c = f32[16,8]{0,1} copy(%g)
  ROOT %r = (f32[64,32]{1,0}, f32[16,8]{1,0}, f32[8,16]{1,0}) tuple(%v, %g, %u)
}

ENTRY %main (x: (f32[64,32], f32[16,8], f32[8,16])) -> (f32[64,32], f32[16,8], f32[8,16]) {
  %x = (f32[64,32]{1,0}, f32[16,8]{1,0}, f32[8,16]{1,0}) parameter(0)
  ROOT %loop = (f32[64,32]{1,0}, f32[16,8]{1,0}, f32[8,16]{1,0}) while(%x), condition=%cond, body=%body
}
"""


def test_step_counts_kernels_powers_and_transposes_in_hlo():
    # The body's dot, two fusions and a layout-swapping copy are kernels; the power
    # fusion raises 64 x 32 elements, the transposing add and the copy write 128 each.
    counts = timing.count_step(STEP_HLO)
    assert counts == timing.StepCounts(
        ops=4, powered=64 * 32, transposed=2 * 128, transposed_arrays=(128, 128)
    )
    assert timing.count_step_ops(STEP_HLO) == 4
    assert timing.count_step("ENTRY %main () -> f32[] {\n}") is None


@pytest.mark.parametrize(
    "hidden, precision, optimizer",
    [
        ([128, 160], "float32", "adafactor"),
        ([32, 48], "bfloat16", "adam"),
        ([64], "bfloat16", "sgd"),
    ],
)
def test_compiled_powers_and_transposes_match_the_closed_forms(hidden, precision, optimizer):
    cfg = profiles.Config(hidden, 16, 8, 64, precision, optimizer)
    epoch, state, x, y, opts = profiles._program(cfg)
    counts = timing.count_step(epoch.lower(state, x, y, jnp.int32(0)).compile(opts).as_text())
    widths = (8, *hidden, profiles.CLASSES)
    shapes = list(zip(widths, widths[1:]))
    powered = timing.powered_elements(shapes, optimizer)
    assert counts.powered == pytest.approx(powered, abs=3)  # the step count's scalar powers
    bf16 = precision == "bfloat16"
    assert counts.transposed == timing.transposed_elements(shapes, optimizer, bf16)
    # Kernel by kernel too: each weight, once per pass the optimizer folds it into.
    arrays = timing.transposed_arrays(shapes, optimizer, bf16)
    assert sorted(counts.transposed_arrays) == sorted(arrays)
    work, _ = profiles.config_work(cfg, counts.ops)
    assert work.gathered == 16 * 8 and work.powered == powered


def test_element_terms_add_their_measured_seconds():
    kw = dict(precision="float32", steps=10, epochs=1, rows=640, val_rows=0, depth=2)
    base = timing.Profile("cpu", "measured", 1e-6, {"float32": 2e10}, 5e9, platform="cpu")
    costs = dict(gather_s=2e-9, pow_s=5e-9, transpose_s=1e-9, epoch_s=1e-4)
    w = _work(optimizer="adafactor", counted=timing.StepCounts(60, 1000, 3000))
    assert (w.gathered, w.powered, w.transposed) == (128 * 32, 1000, 3000)
    before = timing.epoch_time(w, base, mesh={"data": 1}, **kw)
    after = timing.epoch_time(w, dataclasses.replace(base, **costs), mesh={"data": 1}, **kw)
    added = 10 * (128 * 32 * 2e-9 + 1000 * 5e-9 + 3000 * 1e-9) + 1e-4
    assert after.epoch_seconds - before.epoch_seconds == pytest.approx(added)
    assert after.epoch_seconds == pytest.approx(sum(after.parts.values()))
    # Split over a model axis of 2, each device keeps its share of the counted elements.
    split = _work("tensor", {"model": 2}, counted=timing.StepCounts(60, 1000, 3000))
    assert 0 < split.transposed < 3000 and split.gathered == w.gathered
    # A profile stored before these terms loads with them at 0.
    old = {k: v for k, v in base.to_json().items() if k not in costs}
    assert timing.Profile.from_json(old) == base


def test_transposed_writes_cost_by_their_arrays_size():
    # Measured at three sizes: each kernel's elements at the cost for its size,
    # log-interpolated between, the end points beyond; the curve round-trips JSON.
    curve = ((32 * 32, 0.2e-9), (256 * 256, 1.3e-9), (1024 * 1024, 3.7e-9))
    base = timing.Profile("cpu", "measured", 1e-6, {"float32": 2e10}, 5e9, platform="cpu")
    p = dataclasses.replace(base, transpose_s=1.5e-9, transpose_curve=curve)
    assert p.transpose_cost(16) == 0.2e-9 and p.transpose_cost(4096**2) == 3.7e-9
    assert p.transpose_cost(256 * 256) == pytest.approx(1.3e-9)
    mid = p.transpose_cost(128 * 128)  # a third of the way in log size from 256² to 32²
    assert mid == pytest.approx(0.2e-9 + (1.3e-9 - 0.2e-9) * 2 / 3)
    small = _work(counted=timing.StepCounts(60, 0, 4 * 32 * 32, (32 * 32,) * 4))
    large = _work(counted=timing.StepCounts(60, 0, 4 * 32 * 32, (4 * 32 * 32,)))
    assert p.terms(small, "float32", True)["transpose"] == pytest.approx(4096 * 0.2e-9)
    assert p.terms(large, "float32", True)["transpose"] == pytest.approx(
        4096 * p.transpose_cost(4096)
    )
    assert (
        p.terms(large, "float32", True)["transpose"] > p.terms(small, "float32", True)["transpose"]
    )
    # Without the kernels one by one (an older record), all at the one figure.
    flat = _work(counted=timing.StepCounts(60, 0, 4096))
    assert p.terms(flat, "float32", True)["transpose"] == pytest.approx(4096 * 1.5e-9)
    # Without a curve (an older profile), every size at the one figure.
    assert base.transpose_cost(10**6) == base.transpose_s
    assert timing.Profile.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_weight_gradients_cost_by_their_leading_operand():
    # Measured at two widths and two rows: each weight gradient's leading operand
    # ([rows, width]) at the cost for its width and rows, log-interpolated in each, the
    # grid's edges beyond; reported with the matmuls; none without a grid (a GPU's, an
    # older profile's); the grid round-trips JSON.
    grid = ((64, 16, 1e-9), (1024, 16, 2e-9), (64, 512, 1e-9), (1024, 512, 8e-9))
    base = timing.Profile("cpu", "measured", 1e-6, {"float32": 2e10}, 5e9, platform="cpu")
    p = dataclasses.replace(base, wgrad_grid=grid)
    assert p.wgrad_cost(1024, 512) == 8e-9 and p.wgrad_cost(4096, 4096) == 8e-9
    assert p.wgrad_cost(8, 16) == 1e-9 and base.wgrad_cost(1024, 512) == 0.0
    assert p.wgrad_cost(256, 512) == pytest.approx(1e-9 + 7e-9 / 2)  # halfway in log width
    assert p.wgrad_cost(1024, 128) == pytest.approx(2e-9 + 6e-9 * 3 / 5)
    # XLA:CPU reads x ([b, in]) first in float32, dy ([b, out]) first in bfloat16.
    w32, w16 = _work(hidden=(1024,)), _work(hidden=(1024,), itemsize=2)
    assert w32.wgrad_reads == ((128, 32), (128, 1024))
    assert w16.wgrad_reads == ((128, 1024), (128, 4))
    expect = sum(r * c * p.wgrad_cost(c, r) for r, c in w32.wgrad_reads)
    assert p.terms(w32, "float32", True)["wgrad"] == pytest.approx(expect)
    assert base.terms(w32, "float32", True)["wgrad"] == 0.0
    kw = dict(precision="float32", steps=10, epochs=1, rows=1280, val_rows=0, depth=1)
    before = timing.epoch_time(w32, base, mesh={"data": 1}, **kw)
    after = timing.epoch_time(w32, p, mesh={"data": 1}, **kw)
    assert after.parts["matmul"] - before.parts["matmul"] == pytest.approx(10 * expect)
    assert after.epoch_seconds == pytest.approx(sum(after.parts.values()))
    assert timing.Profile.from_json(json.loads(json.dumps(p.to_json()))) == p


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_weight_gradients_operand_order_is_xlas(precision):
    # The closed form's leading operand of each weight gradient is the one the compiled
    # step's dot reads first: the dots contracting both operands' rows (xᵀ·dy), their
    # outputs' leading sides, layer by layer (the output layer's first in the HLO).
    import re

    cfg = profiles.Config([64, 32], 16, 8, 64, precision, "adam")
    epoch, state, x, y, opts = profiles._program(cfg)
    text = epoch.lower(state, x, y, jnp.int32(0)).compile(opts).as_text()
    both_rows = "lhs_contracting_dims={0}, rhs_contracting_dims={0}"
    shapes = [
        tuple(int(d) for d in re.search(r"= \w+\[([\d,]+)\]", line).group(1).split(","))
        for line in text.splitlines()
        if " dot(" in line and both_rows in line
    ]
    work, _ = profiles.config_work(cfg, 60)
    assert sorted(m for m, _ in shapes) == sorted(w for _, w in work.wgrad_reads)
    assert len(shapes) == len(cfg.hidden) + 1


def test_the_gather_costs_by_the_batch_and_the_precision():
    # Measured in float32 at batches 16 and 256 (the curve), bfloat16 at 256: each
    # precision's figure scaled as the float32 curve scales with the batch,
    # log-interpolated, its end points beyond; flat without a curve (an older profile).
    base = timing.Profile("cpu", "measured", 1e-6, {"float32": 2e10}, 5e9, platform="cpu")
    p = dataclasses.replace(
        base, gather_s=4e-9, gather_bf16_s=1e-9, gather_curve=((16, 2e-9), (256, 4e-9))
    )
    assert p.gather_cost("float32", 256) == 4e-9 and p.gather_cost("float32", 16) == 2e-9
    assert p.gather_cost("float32", 64) == pytest.approx(3e-9)  # halfway in log batch
    assert p.gather_cost("float32", 4) == 2e-9 and p.gather_cost("float32", 4096) == 4e-9
    assert p.gather_cost("bfloat16", 16) == pytest.approx(0.5e-9)
    assert p.gather_cost("bfloat16", 256) == pytest.approx(1e-9)
    flat = dataclasses.replace(p, gather_curve=())
    assert flat.gather_cost("float32", 16) == 4e-9 and flat.gather_cost("bfloat16", 16) == 1e-9
    # A step's gather term: its device's batch × features at the cost for its batch.
    small, data = _work(batch=16), _work("data", {"data": 4}, batch=64)
    assert (small.batch, data.batch) == (16, 16) and small.gathered == data.gathered == 16 * 32
    assert p.terms(small, "float32", True)["gather"] == pytest.approx(16 * 32 * 2e-9)
    assert p.terms(_work(batch=256), "float32", True)["gather"] == pytest.approx(256 * 32 * 4e-9)
    assert timing.Profile.from_json(json.loads(json.dumps(p.to_json()))) == p
    old = {k: v for k, v in p.to_json().items() if k != "gather_curve"}
    assert timing.Profile.from_json(old) == flat


def test_unit_epochs_give_back_the_costs_that_made_them():
    # Epochs timed as a known profile predicts them: the gather (by batch and precision)
    # and the casts read back from the unit epochs are that profile's, the other terms'
    # share of each pair's difference taken off first.
    truth = timing.Profile(
        "cpu", "measured", 0.4e-6, {"float32": 9e10, "float32/single": 9e10}, 1.3e10,
        cache_bandwidth=3.8e10, sort_s=2e-9, epoch_s=4e-4, platform="cpu",
        convert_s=1.1e-9, gather_s=3.6e-9, gather_bf16_s=1.0e-9,
        gather_curve=((16, 2.0e-9), (256, 3.6e-9)), transpose_s=1e-9,
    )  # fmt: skip
    configs = (*profiles._GATHER_CONFIGS, *profiles._CONVERT_CONFIGS)
    timed = []
    for cfg in configs:
        ops = timing.estimate_ops(len(cfg.hidden) + 1, cfg.optimizer, cfg.precision == "bfloat16")
        seconds = sum(profiles._terms(truth, cfg, profiles.Timed(0.0, 0.0, ops)))
        timed.append(profiles.Timed(seconds, 0.0, ops))
    start = dataclasses.replace(truth, convert_s=0.5e-9, gather_s=0.0, gather_bf16_s=0.0)
    n = len(profiles._GATHER_CONFIGS)
    found = profiles._measured_units(start, timed[:n], timed[n:])
    assert found.gather_s == pytest.approx(truth.gather_s)
    assert found.gather_bf16_s == pytest.approx(truth.gather_bf16_s, rel=0.01)
    assert [b for b, _ in found.gather_curve] == [16, 256]
    assert [c for _, c in found.gather_curve] == pytest.approx([2.0e-9, 3.6e-9])
    assert found.convert_s == pytest.approx(truth.convert_s)
    assert [n for n, _ in found.convert_curve] == [16 * 256, 64 * 256, 512 * 256]
    assert [c for _, c in found.convert_curve] == pytest.approx([truth.convert_s] * 3)


def test_casts_cost_by_their_arrays_size():
    # A bfloat16 step casts each weight once and each hidden activation three times;
    # each array is charged at the cost measured for its size (log-interpolated), all at
    # `convert_s` without a curve (an older profile) or in float32 (nothing cast).
    w = _work(itemsize=2, batch=16)
    weights = (32 * 256, 256 * 256, 256 * 4)
    share = 80_000 / sum(weights)  # param_bytes / 4, shared out as the weights are
    assert w.converted_arrays == pytest.approx(
        tuple(n * share for n in weights) + (16 * 256.0,) * 6
    )
    assert w.converted == pytest.approx(sum(w.converted_arrays))
    assert _work().converted_arrays == () and _work().converted == 0
    curve = ((4096, 0.2e-9), (131072, 1.2e-9))
    base = timing.Profile("cpu", "measured", 1e-6, {"float32": 2e10}, 5e9, platform="cpu")
    p = dataclasses.replace(base, convert_s=1.2e-9, convert_curve=curve)
    assert p.convert_cost(16) == 0.2e-9 and p.convert_cost(10**7) == 1.2e-9
    assert p.convert_cost(2**14) == pytest.approx(0.2e-9 + 1e-9 * 2 / 5)  # 2 of 5 doublings
    expected = sum(n * p.convert_cost(n) for n in w.converted_arrays)
    assert p.terms(w, "bfloat16", True)["convert"] == pytest.approx(expected)
    flat = dataclasses.replace(p, convert_curve=())
    assert flat.terms(w, "bfloat16", True)["convert"] == pytest.approx(w.converted * 1.2e-9)
    assert p.terms(w, "bfloat16", True)["convert"] < flat.terms(w, "bfloat16", True)["convert"]
    assert timing.Profile.from_json(json.loads(json.dumps(p.to_json()))) == p
    old = {k: v for k, v in p.to_json().items() if k != "convert_curve"}
    assert timing.Profile.from_json(old) == flat


SPEC = """
[data]
source = "synthetic"
validation = 64
[data.synthetic]
rows = 576
features = 16
classes = 4
[model]
hidden = [64, 64]
[training]
epochs = 2
batch_size = 64
"""


def test_plan_reads_the_calibrated_profile_of_the_local_device(write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXPIPE_PROFILE_DIR", str(tmp_path / "profiles"))
    spec = jaxpipe.load_spec(write_spec(SPEC + "[hardware]\ndevices = 1\n"))
    before = jaxpipe.plan(spec, fit=False)
    local = before.options[0]
    assert local.device == "cpu" and local.epoch_seconds is None
    assert "jaxpipe calibrate" in local.assumptions and local.owned and local.cost == 0.0
    kind = jax.devices()[0].device_kind
    profile = timing.Profile(kind, "measured", 1e-6, {"float32": 2e10}, 5e9, platform="cpu")
    timing.save_profile(profile)
    after = jaxpipe.plan(spec, fit=False).options[0]
    assert after.time_source == "measured" and after.epoch_seconds > 0
    assert after.run_seconds > 2 * after.epoch_seconds


def test_calibrate_measures_and_stores_a_profile(tmp_path, capsys, monkeypatch):
    few = (profiles.Config([16], 16, 8, 256, "float32", "sgd"), profiles.Config([64], 32, 8, 256))
    monkeypatch.setattr(profiles, "CALIBRATION_CONFIGS", few)
    out = tmp_path / "cpu.json"
    assert main(["calibrate", "--quick", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = timing.load_profile("", str(out))
    assert printed["path"] == str(out) and stored.source == "measured"
    assert stored.op_s > 0 and stored.bandwidth > 0 and stored.matmul["float32"] > 0
    assert stored.gather_s > 0 and stored.pow_s > 0 and stored.epoch_s >= 0
    assert stored.gather_bf16_s >= 0 and stored.transpose_s > 0 and stored.convert_s >= 0
    assert [b for b, _ in stored.gather_curve] in ([16, 256], [])  # [] where 256's read 0
    assert not stored.gather_curve or stored.gather_curve[-1][1] == stored.gather_s
    assert [n for n, _ in stored.convert_curve] == [16 * 256, 64 * 256, 512 * 256]
    grid = stored.wgrad_grid
    assert [(w, r) for w, r, _ in grid] == [
        (w, r) for r in profiles.WGRAD_ROWS for w in profiles.WGRAD_WIDTHS
    ]
    for rows in profiles.WGRAD_ROWS:  # non-decreasing in the width, at each rows
        costs = [c for _, r, c in grid if r == rows]
        assert costs == sorted(costs) and costs[0] >= 0
    assert stored.convert_curve[-1][1] == stored.convert_s
    sizes = [n for n, _ in stored.transpose_curve]
    assert sizes == [side * side for side in profiles.TRANSPOSE_SIDES]
    costs = [c for _, c in stored.transpose_curve]
    assert costs == sorted(costs) and dict(stored.transpose_curve)[512 * 512] == stored.transpose_s
    assert {"float32/single", "bfloat16"} <= set(stored.matmul)
    assert len(stored.collectives) >= 1  # the suite's 8 simulated devices
    assert all(math.isfinite(c) and c > 0 for c in stored.scale.values())
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(jaxpipe.JaxpipeError, match="not a jaxpipe device profile"):
        timing.load_profile("", str(tmp_path / "bad.json"))
    assert timing.stored_profiles(str(tmp_path)) == {stored.kind: stored}
