"""XLA's own per-device figure for a layout: the run's epoch program compiled for abstract
inputs (`jax.ShapeDtypeStruct`s carrying the layout's shardings; nothing is allocated) on
a mesh of that many devices, and its `memory_analysis()` read back.

A mesh larger than this process's devices is compiled in a child process on simulated
host devices (`--xla_force_host_platform_device_count`), the spec and the data shapes
passed as JSON on stdin; XLA:CPU's figure is what the plan quotes ("XLA per device").
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxpipe import settings
from jaxpipe.core.aot import store_record, stored_record
from jaxpipe.data.shapes import Shapes
from jaxpipe.errors import JaxpipeError
from jaxpipe.planner.state import Abstract, abstract_state
from jaxpipe.planner.values import Workload, format_bytes
from jaxpipe.planner.xlafit import MAX_LAYERS, MAX_ROWS
from jaxpipe.spec.strategy import Strategy

__all__ = [
    "compile_layout",
    "xla_figures",
    "collectives",
    "measure",
    "verify_plan",
    "settle",
    "MAX_COMPILE_DEVICES",
]

# Simulated devices beyond this make the child's compile slow (one partition program,
# but per-device bookkeeping grows); larger meshes are not compiled.
MAX_COMPILE_DEVICES = 64
CHILD_TIMEOUT_S = 600
# `jaxpipe plan` (without --verify) compiles the layouts whose closed form is not held
# (search.UNVERIFIED) within this bound; past it they keep the estimate, marked as such.
SETTLE_TIMEOUT_S = 120
# XLA's figures per (spec, shapes, strategy, mesh) compiled in this process (`measure`).
_MEASURED: dict[tuple, dict[str, Any]] = {}
_MEASURED_SIZE = 256


def compile_layout(
    work: Workload, shapes: Shapes, abstract: Abstract, strategy: str, mesh: dict[str, int]
) -> Any:
    """The run's epoch program for `strategy` on `mesh`, compiled for abstract inputs on
    this process's first prod(mesh) devices: state donated and laid out as the run lays
    it out (`sharding.Layout`), data replicated, batches pinned, FSDP hooks in the model."""
    from jaxpipe.core.model import compute_dtype, make_model
    from jaxpipe.core.step import TrainState, make_epoch, make_task_steps
    from jaxpipe.parallel.sharding import make_layout

    layout = make_layout(strategy, mesh)
    hooks = layout.model_hooks(len(work.model.hidden))
    model = make_model(work.model, shapes.outputs, compute_dtype(work.training.precision), hooks)
    key = jax.eval_shape(lambda: jax.random.key(0))
    state = TrainState(
        jax.ShapeDtypeStruct((), jnp.int32), abstract.params, abstract.opt_state, key
    )
    shardings = layout.state_shardings(state, abstract.tx)
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings
    )
    step, _ = make_task_steps(model, abstract.tx, shapes.task, work.model.dropout > 0)
    split: dict[str, Any] = {"multiple": layout.data_parallel}
    if layout.constrain() is not None:
        split["constrain"] = layout.constrain()
    rep = layout.replicated
    x = jax.ShapeDtypeStruct((shapes.train_rows, shapes.features), jnp.float32, sharding=rep)
    y = jax.ShapeDtypeStruct((shapes.train_rows,), shapes.y_dtype, sharding=rep)
    index = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    epoch = make_epoch(step, work.training.batch_size, **split)
    program = jax.jit(epoch, donate_argnums=0, out_shardings=(shardings, rep))
    return program.lower(state, x, y, index).compile()


def xla_figures(compiled: Any, shapes: Shapes) -> dict[str, Any]:
    """XLA's per-device memory and cost analysis of a compiled epoch. `total` is argument
    + output + temp − alias; `total_with_validation` adds the validation arrays, which
    live on every device during the epoch without being its arguments: it is the figure
    the estimate is held against."""
    ma = compiled.memory_analysis()
    arg, out = int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes)
    temp, alias = int(ma.temp_size_in_bytes), int(ma.alias_size_in_bytes)
    total = arg + out + temp - alias
    val = shapes.val_rows * (shapes.features + 1) * 4
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    return {
        "argument": arg,
        "output": out,
        "temp": temp,
        "alias": alias,
        "total": total,
        "validation_data": val,
        "total_with_validation": total + val,
        "flops_per_step": float(cost.get("flops", 0.0)) or None,
        "bytes_accessed_per_step": float(cost.get("bytes accessed", 0.0)) or None,
    }


_COLLECTIVE = re.compile(
    r"= (\S+) (all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(?:-start)?\("
)


def collectives(compiled: Any) -> dict[str, list[str]]:
    """The compiled program's collectives by kind, each with its result shape
    ("f32[1024,1024]"; a tuple-shaped all-reduce as "tuple")."""
    found: dict[str, list[str]] = {}
    for m in _COLLECTIVE.finditer(compiled.as_text()):
        shape = m.group(1) if not m.group(1).startswith("(") else "tuple"
        found.setdefault(m.group(2), []).append(re.sub(r"\{[^}]*\}", "", shape))
    return found


def _measure_here(work: Workload, shapes: Shapes, layouts: list[tuple[str, dict[str, int]]]):
    # The layout's program is compiled whole: the estimate's update temporaries (their
    # own compiles) are not needed here.
    abstract = abstract_state(work, shapes, temporaries=False)
    out = []
    for strategy, mesh in layouts:
        figures = xla_figures(compile_layout(work, shapes, abstract, strategy, mesh), shapes)
        out.append(figures)
    return out


def measure(
    work: Workload,
    shapes: Shapes,
    layouts: list[tuple[str, dict[str, int]]],
    timeout_s: int = CHILD_TIMEOUT_S,
) -> list[dict[str, Any] | None]:
    """XLA's figures (`xla_figures`) for each (strategy, mesh); None for a mesh over
    `MAX_COMPILE_DEVICES`. Compiled here when this process has the devices (same
    platform), else in one child process with as many simulated CPU devices as the
    largest mesh needs."""
    sizes = [math.prod(m.values()) for _, m in layouts]
    want = [(s, m) for (s, m), n in zip(layouts, sizes) if n <= MAX_COMPILE_DEVICES]
    if not want:
        return [None] * len(layouts)
    # A plan made again for the same sections and shapes (the API called per card or per
    # environment, `plan` then `plan --verify`) reads the figures compiled the first time.
    base = (repr(work), tuple(sorted(vars(shapes).items())))
    keys = [(*base, s, tuple(sorted(m.items()))) for s, m in want]
    todo = [(s, m) for (s, m), k in zip(want, keys) if k not in _MEASURED]
    for s, m in todo:  # and a plan made again in another process, from the disk
        kept = stored_record("layout-figures", _describe(work, shapes, s, m))
        if kept is not None and _is_figures(kept):
            _MEASURED[(*base, s, tuple(sorted(m.items())))] = kept
    todo = [(s, m) for (s, m), k in zip(want, keys) if k not in _MEASURED]
    if todo:
        need = max(math.prod(m.values()) for _, m in todo)
        if need <= len(jax.devices()):
            got = _measure_here(work, shapes, todo)
        else:
            got = _measure_child(work, shapes, todo, need, timeout_s)
        for (s, m), figures in zip(todo, got):
            _MEASURED[(*base, s, tuple(sorted(m.items())))] = figures
            store_record("layout-figures", _describe(work, shapes, s, m), figures)
    while len(_MEASURED) > _MEASURED_SIZE:
        _MEASURED.pop(next(iter(_MEASURED)))
    it = iter([_MEASURED[k] for k in keys])
    return [next(it) if n <= MAX_COMPILE_DEVICES else None for n in sizes]


def _describe(work: Workload, shapes: Shapes, strategy: str, mesh: dict[str, int]) -> str:
    """What a layout's compiled epoch depends on besides jaxpipe's source, the versions
    and the devices (core/aot.py adds those): the model, optimizer, precision, batch,
    data shapes and the layout; not the spec's name, seed, epochs or paths."""
    t = work.training
    program = (repr(work.model), repr(work.optimizer), t.precision, t.batch_size, shapes)
    return repr((*program, str(strategy), tuple(sorted(mesh.items()))))


_COUNTS = ("argument", "output", "temp", "alias", "total", "validation_data")
_RATES = ("flops_per_step", "bytes_accessed_per_step")


def _is_figures(record: dict[str, Any]) -> bool:
    """Whether a stored record is `xla_figures`' dict: its counts non-negative ints, its
    rates numbers or None (a damaged or foreign record is compiled again)."""
    counts = (*_COUNTS, "total_with_validation")
    if set(record) != {*counts, *_RATES}:
        return False
    ok = all(type(record[k]) is int and record[k] >= 0 for k in counts)
    return ok and all(record[k] is None or type(record[k]) is float for k in _RATES)


def _measure_child(
    work: Workload, shapes: Shapes, layouts: list, devices: int, timeout_s: int = CHILD_TIMEOUT_S
) -> list:
    env = settings.environment()
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    request = {"work": work.to_json(), "shapes": vars(shapes), "layouts": layouts}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jaxpipe.planner.verify"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise JaxpipeError(
            f"compiling the layouts on {devices} simulated devices took over "
            f"{timeout_s} s; plan without --verify"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise JaxpipeError(f"compiling the layouts on {devices} simulated devices failed: {last}")
    return json.loads(done.stdout)


def _child() -> None:
    request = json.load(sys.stdin)
    work = Workload.from_json(request["work"])
    shapes = Shapes(**request["shapes"])
    layouts = [(s, dict(m)) for s, m in request["layouts"]]
    json.dump(_measure_here(work, shapes, layouts), sys.stdout)


if __name__ == "__main__":
    _child()


def _error(estimate: int, xla: int) -> float:
    return estimate / xla - 1.0 if xla else 0.0


def _xla_options(plan: Any, xla_of: Callable[[str, dict], int | None]) -> list[Any]:
    """The plan's options with XLA's figures where compiled (per device, fits), in the
    plan's ranking."""
    import dataclasses

    options = []
    for o in plan.options:
        x = xla_of(o.strategy, o.mesh)
        if x is not None:
            o = dataclasses.replace(
                o, per_device_bytes=x, fits=x <= o.usable_bytes_per_device, source="xla"
            )
        options.append(o)
    return options


def _reranked(plan: Any, options: list[Any]) -> dict[str, Any]:
    """The options ranked again (XLA's figures may change what fits), with the plan's
    cheapest and fastest, as Plan fields."""
    from jaxpipe.planner.options import Market, rank

    market = plan.market or Market(rank=plan.rank)
    ranked = rank(options, market, plan.device)
    if plan.filtered is None:
        ranked["filtered"] = None
    else:  # what the first ranking left out stays left out
        ranked["filtered"] = {k: plan.filtered[k] + ranked["filtered"][k] for k in plan.filtered}
    return ranked


def _verify_record(plan: Any, chosen: int) -> dict[str, Any]:
    """The JSON contract's `verify`: the chosen layout, estimate and XLA's figure per device."""
    return {
        "strategy": plan.strategy,
        "devices": plan.devices,
        "mesh": dict(plan.mesh),
        "estimate_bytes": plan.per_device_bytes,
        "xla_bytes": chosen,
        "error": _error(plan.per_device_bytes, chosen),
    }


def _restated(plan: Any, chosen: int, options: list[Any]) -> str:
    """The recommendation on XLA's figure for the chosen layout; when it does not fit,
    say so, and what does."""
    usable = plan.usable_bytes_per_device
    if chosen <= usable:
        where = "one device" if plan.devices == 1 else f"{plan.strategy} over {plan.devices}"
        return (
            f"fits {where}: needs {format_bytes(chosen)} (XLA) of {format_bytes(usable)} "
            f"usable per {plan.device} (headroom {format_bytes(usable - chosen)})"
        )
    best = next((o for o in options if o.fits), None)
    return (
        f"does not fit {plan.strategy} over {plan.devices}: XLA needs "
        f"{format_bytes(chosen)} of {format_bytes(usable)} usable per {plan.device}"
        + (f"; would fit: {best.strategy} over {best.devices} × {best.device}" if best else "")
    )


def _single_xla(plan: Any, single: dict[str, Any], runtime: int) -> dict[str, Any]:
    """XLA's one-device figures beside the plan's one-device estimate."""
    xla = dict(single) | {
        "estimate": plan.single.per_device_bytes if plan.single else None,
        "runtime_bytes": runtime,
    }
    if xla["estimate"] is not None:
        total = single["total_with_validation"] + runtime
        xla["relative_difference"] = _error(xla["estimate"], total)
    return xla


def verify_plan(work: Workload, plan: Any) -> Any:
    """The plan with XLA's figures: the chosen layout and every ranked option compiled
    (one compile per distinct layout; catalog cards share the one-device program). The
    per-device figures, fits and headroom become XLA's (`source = "xla"`); the closed-form
    estimate stays beside them in `verify` and `xla`. Layouts over `MAX_COMPILE_DEVICES`
    keep the estimate and say so (`source = "estimate"`)."""
    import dataclasses

    if plan.shapes.train_rows > MAX_ROWS:
        raise JaxpipeError(
            f"--verify cannot compile {plan.shapes.train_rows:,} training rows: the epoch "
            f"program indexes rows with int32 (at most {MAX_ROWS:,}); plan without --verify"
        )
    layouts = [(plan.strategy, dict(plan.mesh)), ("single", {"data": 1})]
    layouts += [(o.strategy, dict(o.mesh)) for o in plan.options]
    distinct = list({(s, tuple(sorted(m.items()))): (s, m) for s, m in layouts}.values())
    figures = dict(
        zip(
            [(s, tuple(sorted(m.items()))) for s, m in distinct],
            measure(work, plan.shapes, distinct),
        )
    )

    # A GPU plan's need adds the runtime's own bytes (search.GPU_RUNTIME_BYTES) to the
    # program's: so does XLA's figure, to compare like with like.
    runtime = (plan.fit or {}).get("runtime_bytes", 0)

    def xla_of(strategy: str, mesh: dict[str, int]) -> int | None:
        f = figures.get((strategy, tuple(sorted(mesh.items()))))
        return f["total_with_validation"] + runtime if f else None

    ranked = _reranked(plan, _xla_options(plan, xla_of))
    options = ranked["options"]
    chosen = xla_of(plan.strategy, plan.mesh)
    single = figures[(Strategy.SINGLE, tuple(Strategy.SINGLE.mesh().items()))]
    xla = _single_xla(plan, single, runtime)
    if chosen is None:
        return dataclasses.replace(plan, xla=xla, **ranked)
    usable = plan.usable_bytes_per_device
    # The verdict is about the device(s) asked about: one, or the chosen layout over them.
    asked_one = plan.asked_devices == 1
    fits = (single["total_with_validation"] + runtime if asked_one else chosen) <= usable
    verify = _verify_record(plan, chosen)
    recommendation = _restated(plan, chosen, options)
    return dataclasses.replace(
        plan,
        **ranked,
        xla=xla,
        verify=verify,
        fits=fits,
        source="xla",
        recommendation=recommendation,
    )


def _figures_of(work: Workload, plan: Any, layouts: list, timeout_s: int) -> dict:
    """XLA's figures per distinct (strategy, mesh) of `layouts`, keyed by both."""
    key = lambda s, m: (s, tuple(sorted(m.items())))  # noqa: E731
    distinct = list({key(s, m): (s, m) for s, m in layouts}.values())
    got = measure(work, plan.shapes, distinct, timeout_s) if distinct else []
    return {key(s, m): f for (s, m), f in zip(distinct, got)}


def settle(
    work: Workload, plan: Any, strategies: tuple[str, ...], timeout_s: int = SETTLE_TIMEOUT_S
) -> Any:
    """The plan with XLA's figures for the layouts of `strategies` it quotes (ranked
    options and the chosen layout): the strategies whose closed form is not held to XLA
    (search.UNVERIFIED). What does not compile within `timeout_s` (or has more than
    `MAX_COMPILE_DEVICES` devices, or more than xlafit.MAX_LAYERS hidden layers) keeps
    its estimate, which the plan marks as such."""
    import dataclasses

    if len(work.model.hidden) > MAX_LAYERS or plan.shapes.train_rows > MAX_ROWS:
        return plan  # as the one-device fit: too slow to compile, or not compilable
    layouts = [(o.strategy, dict(o.mesh)) for o in plan.options if o.strategy in strategies]
    if plan.strategy in strategies:
        layouts.append((plan.strategy, dict(plan.mesh)))
    try:
        figures = _figures_of(work, plan, layouts, timeout_s)
    except JaxpipeError:
        return plan
    runtime = (plan.fit or {}).get("runtime_bytes", 0)

    def xla_of(strategy: str, mesh: dict[str, int]) -> int | None:
        f = figures.get((strategy, tuple(sorted(mesh.items()))))
        return f["total_with_validation"] + runtime if f else None

    # The options are what fits: one the closed form put in and XLA's figure does not fit
    # is dropped (its strategy may fit on more devices; `--verify` ranks on XLA alone).
    ranked = _reranked(plan, [o for o in _xla_options(plan, xla_of) if o.fits])
    options = ranked["options"]
    chosen = xla_of(plan.strategy, plan.mesh)
    if chosen is None:
        return dataclasses.replace(plan, **ranked)
    usable = plan.usable_bytes_per_device
    return dataclasses.replace(
        plan,
        **ranked,
        fits=plan.fits if plan.asked_devices == 1 else chosen <= usable,
        verify=_verify_record(plan, chosen),
        recommendation=_restated(plan, chosen, options),
    )
