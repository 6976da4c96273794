"""Device profiles for the time model, measured here (`jaxpipe calibrate`); timing.py
keeps them per device kind in the user's cache (settings.profile_dir) and reads them
back, or takes a card's from the catalog (its `measured` profile from benchmarks/gpu,
else its data sheet).

`measure_profile()` times, on the local devices, in well under a minute:
- the per-step floor and an epoch's call: scanned epochs of a tiny MLP's training step
  (the run's own program) of 256 and of 2 steps;
- the matmul rate per precision over a few shapes, computed as the model computes it
  (a `jnp.dot` in the compute dtype; XLA:CPU: with Eigen multi- and single-threaded, as
  the run compiles small steps single-threaded);
- on CPU, the cost per element of a bfloat16 step's casts (timing.py: XLA:CPU runs
  bfloat16 dots in float32 and casts each step; the run's own epochs in both
  precisions), of the batch's gather (the run's own epochs at 4 and 512 features, at two
  batches), of a power and of a transposed write (by its size);
- the memory bandwidth: a scanned elementwise pass over a buffer far larger than caches;
  the cache's: an Adam-like update over cache-resident arrays;
- the collectives' bus bandwidth and latency per mesh size (2, 4, 8 up to the local
  devices), from an all-reduce of a small and a large buffer;
- the compile: the epoch program at depth 1 and 3;
- the fit: each term scaled to real scanned epochs of a few calibration configurations
  (timed in turns, the median of a few rounds: `time_epochs`) by least squares on the
  log error, each weight pulled towards its measurement (`fit_scale`, `Profile.scale`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe.core.aot import compiler_options, single_threaded
from jaxpipe.core.model import compute_dtype, make_model, param_count
from jaxpipe.core.optim import make_optimizer
from jaxpipe.core.step import init_state, make_epoch, make_task_steps, steps_per_epoch
from jaxpipe.planner.timing import (
    GPU_COMPILE_S,
    MEASURED,
    STEP_TERMS,
    TERMS,
    Profile,
    StepCounts,
    StepWork,
    count_step,
    estimate_ops,
    step_work,
)
from jaxpipe.spec.sections import ModelSpec, OptimizerSpec

__all__ = [
    "measure_profile",
    "CALIBRATION_CONFIGS",
    "UNIT_CONFIGS",
    "Config",
    "time_epoch",
    "time_epochs",
    "Timed",
    "config_work",
    "fit_scale",
    "use_clock",
    "CLOCKS",
]


class Config(tuple):
    """A calibration or test configuration: (hidden, batch, features, rows, precision,
    optimizer), as a hashable tuple."""

    __slots__ = ()

    def __new__(cls, hidden, batch, features, rows, precision="float32", optimizer="adam"):
        return super().__new__(cls, (tuple(hidden), batch, features, rows, precision, optimizer))

    hidden = property(lambda self: self[0])
    batch = property(lambda self: self[1])
    features = property(lambda self: self[2])
    rows = property(lambda self: self[3])
    precision = property(lambda self: self[4])
    optimizer = property(lambda self: self[5])


# Spread over what the fit must tell apart: floor-bound (tiny), matmul-bound (wide, big
# batches, both precisions) and update-bound (wide, small batches, a stateful optimizer).
CALIBRATION_CONFIGS: tuple[Config, ...] = (
    Config([16], 16, 8, 1024, "float32", "sgd"),
    Config([64, 64], 64, 32, 2048),
    Config([256, 256], 256, 64, 4096),
    Config([512, 512], 32, 128, 1024, "float32", "adam"),
    Config([1024], 512, 256, 4096),
    Config([128, 256], 128, 64, 2048, "bfloat16"),
    Config([512, 512], 256, 128, 2048, "bfloat16"),
    Config([256, 256, 256], 32, 32, 1024, "float32", "rmsprop"),
    Config([64, 64, 64], 32, 16, 2048, "float32", "adafactor"),
    Config([128], 1024, 16, 8192, "float32", "sgd"),  # few steps: the shuffle shows
)
CLASSES = 4


# The clock timings read: wall time by default; `benchmarks/time_error.py --clock cpu`
# reads the process's CPU time instead, which on a shared host (other processes on the
# same cores) is what single-threaded XLA:CPU would take on an idle one.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def _best(run: Callable[[], Any], reps: int) -> float:
    """The least time of `reps` calls (the least is the least disturbed)."""
    clock = _clock[0]
    best = math.inf
    for _ in range(reps):
        t = clock()
        jax.block_until_ready(run())
        best = min(best, clock() - t)
    return best


def _program(cfg: Config, depth_only: int | None = None):
    """The run's epoch program for `cfg` (state donated), its arguments and options."""
    hidden = cfg.hidden if depth_only is None else (cfg.hidden[0],) * depth_only
    model = make_model(ModelSpec(hidden=hidden), CLASSES, compute_dtype(cfg.precision))
    tx = make_optimizer(OptimizerSpec(name=cfg.optimizer), total_steps=1000)
    step, _ = make_task_steps(model, tx, "classification", False)
    x = jnp.asarray(np.random.default_rng(0).random((cfg.rows, cfg.features), np.float32))
    y = jnp.asarray(np.arange(cfg.rows) % CLASSES, jnp.int32)
    state = init_state(model.init, tx, jax.random.key(0), x[:1])
    platform = jax.devices()[0].platform
    opts = compiler_options(platform, param_count(state.params), cfg.batch)
    epoch = jax.jit(make_epoch(step, cfg.batch), donate_argnums=0)
    return epoch, state, x, y, opts


class Timed(NamedTuple):
    """A configuration's measured training epoch: seconds, its compile's seconds, the
    kernels of its compiled step and its other counts (`timing.count_step`); `rounds`:
    each round's timing where `seconds` is their median (`time_epochs`)."""

    seconds: float
    compile_seconds: float
    ops: int
    counted: StepCounts | None = None
    rounds: tuple[float, ...] = ()


def _prepared(cfg: Config) -> tuple[Callable[[], Any], float, int, StepCounts | None]:
    """`cfg`'s compiled epoch as a call that runs it once more (the state carried from
    call to call, donated as the run donates it), its compile's seconds, its step's
    kernels and its counts (`timing.count_step`)."""
    epoch, state, x, y, opts = _program(cfg)
    t = time.perf_counter()
    compiled = epoch.lower(state, x, y, jnp.int32(0)).compile(opts)
    compile_s = time.perf_counter() - t
    holder = [state]

    def run():
        holder[0], sums = compiled(holder[0], x, y, jnp.int32(1))
        return sums

    jax.block_until_ready(run())  # the first call pays for the buffers' first touch
    counted = count_step(compiled.as_text())
    ops = counted.ops if counted else 0
    ops = ops or estimate_ops(len(cfg.hidden) + 1, cfg.optimizer, cfg.precision == "bfloat16")
    return run, compile_s, ops, counted


def time_epoch(cfg: Config, reps: int = 3) -> Timed:
    """`cfg`'s training epoch on the default device, timed as the run runs it."""
    run, compile_s, ops, counted = _prepared(cfg)
    return Timed(_best(run, reps), compile_s, ops, counted)


def _in_turns(runs: Sequence[Callable[[], Any]], rounds: int) -> list[list[float]]:
    """Each of `runs` timed once a round, in turns, for `rounds` rounds: each one's
    timings (`time_epochs`, `_extra_seconds`, `_wgrad_seconds` keep their medians)."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for run, seen in zip(runs, times):
            seen.append(_best(run, 1))
    return times


def time_epochs(cfgs: Sequence[Config], rounds: int = 3) -> list[Timed]:
    """The training epochs of `cfgs`, each the median of `rounds` timings taken in turns
    (every configuration once per round), so that a change in the machine's load
    between the first and the last configuration weighs on all of them alike rather
    than on whichever were timed while it lasted. The median, not the least: on a
    shared host the process clock now and then reads a fraction of an epoch's time
    (0.5 of 2.2 ms, once in 5 rounds), which the least would keep."""
    prepared = [_prepared(cfg) for cfg in cfgs]
    times = _in_turns([run for run, *_ in prepared], rounds)
    return [
        Timed(float(np.median(t)), *rest, rounds=tuple(t)) for t, (_, *rest) in zip(times, prepared)
    ]


def config_work(cfg: Config, ops: int, counted: StepCounts | None = None) -> tuple[StepWork, int]:
    """The time model's `StepWork` for a configuration on one device (its compiled
    step's `counted`, where known), and its parameter count."""
    widths = (cfg.features, *cfg.hidden, CLASSES)
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    state = {"sgd": 0, "adafactor": 0.1, "lion": 1, "rmsprop": 1}.get(cfg.optimizer, 2)
    work = step_work(
        "single",
        {"data": 1},
        features=cfg.features,
        hidden=cfg.hidden,
        outputs=CLASSES,
        batch=cfg.batch,
        param_bytes=4 * params,
        optimizer_bytes=int(4 * params * state),
        ops=ops,
        optimizer=cfg.optimizer,
        itemsize=jnp.dtype(compute_dtype(cfg.precision)).itemsize,
        counted=counted,
    )
    return work, params


def _matmul_rate(shape: tuple[int, int, int], dtype: Any, opts: dict, reps: int) -> float:
    m, k, n = shape
    a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
    inner = 8

    def f(a, b):
        def body(c, _):
            # As flax's Dense computes: the output in the compute dtype (on XLA:CPU a
            # bfloat16 dot then runs in float32, as the training step's does).
            y = jnp.dot(a + c.astype(dtype), b)
            return c + jnp.sum(y[:1, :1]).astype(jnp.float32) * 1e-30, None

        return jax.lax.scan(body, jnp.float32(0), None, length=inner)[0]

    compiled = jax.jit(f).lower(a, b).compile(opts)
    return 2.0 * m * k * n * inner / _best(lambda: compiled(a, b), reps)


def _matmul_rates(platform: str, reps: int) -> dict[str, float]:
    shapes = ((512, 512, 512), (256, 1024, 1024)) if platform == "cpu" else ((8192,) * 3,)
    modes = {"": {}} | (
        {"/single": {"xla_cpu_multi_thread_eigen": False}} if platform == "cpu" else {}
    )
    rates = {}
    for precision in ("float32", "bfloat16"):
        dtype = compute_dtype(precision)
        for suffix, opts in modes.items():
            rates[precision + suffix] = max(_matmul_rate(s, dtype, opts, reps) for s in shapes)
    return rates


def _bandwidth(nbytes: int, reps: int) -> float:
    """Bytes/s of a scanned elementwise pass (one read, one write) over `nbytes`."""
    n = nbytes // 4
    x = jnp.ones((n,), jnp.float32)
    # 256 MiB moved in all: a cache-sized pass repeated long enough that one timing
    # is not a clock tick's worth (a 64 MiB run once read 799 GB/s for the cache).
    inner = max(4, 2**28 // nbytes)

    def f(x):
        return jax.lax.fori_loop(0, inner, lambda i, v: v * 1.0001 + 1e-6, x)

    compiled = jax.jit(f).lower(x).compile()
    return 2 * 4 * n * inner / _best(lambda: compiled(x), reps)


def _update_bandwidth(reps: int) -> float:
    """Bytes/s of an Adam-like update (four cache-resident arrays, seven passes, a square
    root and a divide) scanned single-threaded: the step's cache-resident traffic is its
    small fused elementwise kernels of several operands, which move their bytes well
    below a plain pass's rate (109 against 39 GB/s here, issue 24). The median of the
    timings: the least once read 114 GB/s (a fraction of a pass on the process clock)."""
    n, inner = 2**14, 64

    def body(_, s):
        p, m, v, g = s
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        return p - 1e-3 * m / (jnp.sqrt(v) + 1e-8), m, v, g * 0.999

    x = jnp.ones((n,), jnp.float32)
    state = (x, x, x, x)
    f = jax.jit(lambda s: jax.lax.fori_loop(0, inner, body, s))
    compiled = f.lower(state).compile({"xla_cpu_multi_thread_eigen": False})
    run = functools.partial(compiled, state)
    run()
    return 7 * 4 * n * inner / float(np.median([_best(run, 1) for _ in range(max(reps, 5))]))


def _extra_seconds(
    op: Callable, plain: Callable, shape: tuple[int, ...], reps: int, given: Any = None
) -> float:
    """Seconds per element that scanning `op` over an array of `shape` takes beyond
    scanning `plain` (the same pass without it), single-threaded as small steps run;
    `op` and `plain` are called with the scanned array and with `given` (an operand
    each pass reads, or None). A difference of two timings carries both one's noise:
    each is ~5 ms of work, timed in alternation, the median of at least five kept (one
    run read a transposed write at 1.55 ns, others at 0.73-0.90, when each was 1 ms timed
    back to back; the least of five still read 1.44 once: the process clock now and then
    reads a fraction of a pass, `time_epochs`)."""
    x = jnp.full(shape, 1.5, jnp.float32)
    inner = max(4, 2**22 // x.size)

    def body(f):
        # `given` rides in the carry, negated each pass (in both programs alike), so that
        # XLA cannot hoist what `op` does with it out of the loop.
        return lambda _, c: (f(c[0], c[1]), jax.tree.map(jnp.negative, c[1]))

    runs = []
    for f in (op, plain):
        g = jax.jit(lambda c, f=f: jax.lax.fori_loop(0, inner, body(f), c))
        compiled = g.lower((x, given)).compile({"xla_cpu_multi_thread_eigen": False})
        runs.append(functools.partial(compiled, (x, given)))
    op, base = (float(np.median(t)) for t in _in_turns(runs, max(reps, 5)))
    return max(op - base, 0.0) / (inner * x.size)


def _pow_seconds(reps: int) -> float:
    """Seconds per element raised to a (non-integer) power."""
    return _extra_seconds(lambda v, _: v**-0.8 + 1.0, lambda v, _: v * -0.8 + 1.0, (2**16,), reps)


# The sizes (a side of a square weight) a transposed write is measured at: its cost per
# element grows with the array, as it leaves the caches (`_transpose_seconds`).
TRANSPOSE_SIDES = (32, 64, 128, 256, 512, 1024)


def _transpose_seconds(side: int, reps: int) -> float:
    """Seconds per element of a transposed write as a step pays it, at [side, side]:
    XLA:CPU folds a bfloat16 step's weight gradient, [out, in], into the float32 update
    of the [in, out] weight, so the update reads it transposed (`timing.count_step`
    counts those elements, kernel by kernel). Here, one core, issue 24: 0.22 ns an
    element at 32², 0.2-0.3 at 64², 0.33-0.46 at 128², 1.3 at 256², 1.5 at 512², 3.7 at
    1024². The lone transposed add of a float32 array that stood here (`v + v.T` at 512²)
    read 3.0-5.4 ns on the same machine: it charged bfloat16 steps several times what
    their updates pay, most of all for their small weights."""
    given = jnp.ones((side, side), jnp.bfloat16)
    return _extra_seconds(
        lambda v, w: v * 0.999 + w.T.astype(jnp.float32) * 1e-3,
        lambda v, w: v * 0.999 + w.astype(jnp.float32) * 1e-3,
        (side, side),
        reps,
        given,
    )


def _transpose_curve(reps: int) -> tuple[tuple[int, float], ...]:
    """(elements, seconds per element) of a transposed write at each `TRANSPOSE_SIDES`,
    made non-decreasing (a difference of two timings can read a smaller array dearer)."""
    curve, top = [], 0.0
    for side in TRANSPOSE_SIDES:
        top = max(top, _transpose_seconds(side, reps))
        curve.append((side * side, top))
    return tuple(curve)


# The widths and rows a weight gradient's dot is measured at (`_wgrad_grid`).
WGRAD_WIDTHS = (64, 256, 512, 1024)
WGRAD_ROWS = (16, 64, 512)


def _wgrad_seconds(width: int, rows: int, reps: int, columns: int = 4) -> float:
    """Seconds per element of the leading operand ([rows, width]) that a weight
    gradient's dot (contracting both operands' rows, as xᵀ·dy does; against `columns`
    columns, by default an output layer's 4) takes beyond the same product with that
    operand laid out transposed ([width, rows] @ [rows, columns], which runs at the
    matmul rate), scanned single-threaded as small steps run. Here, one core, issue 24
    (ns an element, widths 64 / 256 / 1024): 0.7 / 0.7 / 1.6 at 16 rows, ~0 / 0.9 / 3.3
    at 64, 0.5 / 1.5 / 7.7 at 512 (benchmarks/wgrad_dots.py). The two timed in
    alternation, the median of at least five kept."""
    inner = max(4, 2**22 // (rows * max(width, columns)))
    a, b = jnp.ones((rows, width), jnp.float32), jnp.ones((rows, columns), jnp.float32)
    dims = (((0,), (0,)), ((), ()))

    def scanned(op: Callable) -> Callable:
        def f(a, b):
            def body(c, _):
                y = op(a + c, b)
                return c * 0.5 + jnp.sum(y[:1, :1]) * 1e-30, None

            return jax.lax.scan(body, jnp.float32(0), None, length=inner)[0]

        compiled = jax.jit(f).lower(a, b).compile({"xla_cpu_multi_thread_eigen": False})
        return functools.partial(compiled, a, b)

    runs = (
        scanned(lambda a, b: jax.lax.dot_general(a, b, dims)),
        scanned(lambda a, b: jnp.dot(jnp.ones((width, rows), jnp.float32) + a[0, 0], b)),
    )
    op, base = (float(np.median(t)) for t in _in_turns(runs, max(reps, 5)))
    return max(op - base, 0.0) / (inner * rows * width)


def _wgrad_grid(reps: int) -> tuple[tuple[int, int, float], ...]:
    """(width, rows, seconds per element) of a weight gradient's dot at each of
    `WGRAD_WIDTHS` × `WGRAD_ROWS`, made non-decreasing in the width at each rows (a
    difference of two timings can read a narrower operand dearer)."""
    grid = []
    for rows in WGRAD_ROWS:
        top = 0.0
        for width in WGRAD_WIDTHS:
            top = max(top, _wgrad_seconds(width, rows, reps))
            grid.append((width, rows, top))
    return tuple(grid)


# The batch's gather, measured in the run's own program: one-layer, four-wide epochs of
# 8192 rows at 4 and at 512 features, whose difference is the rows × features gathered
# (and what the model's other terms say of the difference, `_unit_cost`); at a batch of
# 256 in each precision, as a bfloat16 step fuses the gather with the batch's casts, and
# at 16 in float32. Beyond the matmul the pair read 2.0 ns an element at 16, 2.9 at 64,
# 3.6 at 256 here (one core, issue 24); most of that, and all its growth with the batch,
# was the first layer's weight gradient reading the batch ([rows, 512]) down its rows
# (`Profile.wgrad_grid`): less that, the gather itself reads ~0.6 ns an element at 16 and
# at 256 in float32, ~0.5 in bfloat16.
_GATHER_CONFIGS = (
    Config([4], 256, 4, 8192, "float32", "sgd"),
    Config([4], 256, 512, 8192, "float32", "sgd"),
    Config([4], 256, 4, 8192, "bfloat16", "sgd"),
    Config([4], 256, 512, 8192, "bfloat16", "sgd"),
    Config([4], 16, 4, 8192, "float32", "sgd"),
    Config([4], 16, 512, 8192, "float32", "sgd"),
)
# A bfloat16 step's casts as the step pays them: one wide layer in both precisions, whose
# difference is mostly its casts, at batches of 16, 64 and 512 (activations of 4 K, 16 K
# and 128 K elements). Here a bfloat16 epoch took 3.5-4.0 ns more per hidden activation
# element than its float32 twin at batches of 64-512 (widths 64-1024, sgd and adam): 1.2-
# 1.3 ns for each of the three casts the model counts; at batch 16 a cast costs a fraction
# of that (0.2-0.7 ns an element: small arrays stay in the nearest caches, as small
# transposed writes do). An unfused cast pass, the figure that stood here, read 0.14 ns.
_CONVERT_CONFIGS = tuple(
    Config([256], batch, 16, 8192, precision, "sgd")
    for batch in (16, 64, 512)
    for precision in ("float32", "bfloat16")
)


def _unit_cost(
    base: Profile, term: str, pair: Sequence[Config], timed: Sequence[Timed], count: str
) -> float:
    """Seconds per element of `term` from two unit epochs that differ in it: the second's
    time less the first's, less the difference `base`'s other terms give them (so that
    nothing is charged twice), over the difference in the `StepWork` field `count`
    (elements a step) times the steps."""
    left, counts = [], []
    for cfg, t in zip(pair, timed):
        work, _ = config_work(cfg, t.ops, t.counted)
        others = sum(v for k, v in zip(TERMS, _terms(base, cfg, t)) if k != term)
        left.append(t.seconds - others)
        counts.append(steps_per_epoch(cfg.rows, cfg.batch) * getattr(work, count))
    return max(left[1] - left[0], 0.0) / max(counts[1] - counts[0], 1.0)


def _measured_units(base: Profile, gather: Sequence[Timed], convert: Sequence[Timed]) -> Profile:
    """`base` with the batch's gather (`gather_s`, `gather_bf16_s`, `gather_curve`) and
    the bfloat16 casts (`convert_s`) measured from the unit epochs of `_GATHER_CONFIGS`
    (`gather`) and `_CONVERT_CONFIGS` (`convert`), in their order, as the model charges
    them (`_unit_cost`): the float32 gathers, then the bfloat16 gather and the casts in
    turns, as each pair's difference holds a little of the other's term (the gather's
    pair casts a wider first layer; the casts' pair gathers in two precisions)."""
    g = _GATHER_CONFIGS

    def cost(profile: Profile, first: int) -> float:
        pair, timed = g[first : first + 2], gather[first : first + 2]
        return _unit_cost(profile, "gather", pair, timed, "gathered")

    at256, at16 = cost(base, 0), cost(base, 4)  # float32: no casts; the gather left out
    curve = ((g[4].batch, at16), (g[0].batch, at256)) if at256 > 0 else ()
    profile = dataclasses.replace(base, gather_s=at256, gather_curve=curve, convert_s=0.0)
    for _ in range(3):  # each pair leans a little on the other's figure: ~2 % and ~5 %
        profile = dataclasses.replace(profile, gather_bf16_s=cost(profile, 2))
        profile = _casts_curve(profile, convert)
    return profile


def _casts_curve(profile: Profile, timed: Sequence[Timed]) -> Profile:
    """`profile` with a bfloat16 step's casts (`convert_curve`, by the activation's
    elements; `convert_s`, the largest's) from the pairs of `_CONVERT_CONFIGS` (`timed`,
    in their order)."""
    curve = []
    for i in range(0, len(_CONVERT_CONFIGS), 2):
        pair = _CONVERT_CONFIGS[i : i + 2]
        cost = _unit_cost(profile, "convert", pair, timed[i : i + 2], "converted")
        curve.append((pair[0].batch * pair[0].hidden[0], cost))
    return dataclasses.replace(profile, convert_curve=tuple(curve), convert_s=curve[-1][1])


def _sort_seconds(reps: int) -> float:
    """Seconds per row·log2(rows) of the epoch's shuffle (`jax.random.permutation`)."""
    rows = 2**16
    f = jax.jit(lambda k: jax.random.permutation(k, rows)).lower(jax.random.key(0)).compile()
    return _best(lambda: f(jax.random.key(1)), reps) / (rows * math.log2(rows))


def _collectives(reps: int) -> dict[int, tuple[float, float]]:
    """(bus bytes/s, latency s) of an all-reduce per mesh size over the local devices."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    out = {}
    for n in (2, 4, 8):
        if n > len(devices):
            break
        mesh = Mesh(np.array(devices[:n]), ("d",))
        times = []
        for size in (2**14, 2**22):  # 64 KiB and 16 MiB of float32 per device
            x = jax.device_put(
                jnp.ones((n, size), jnp.float32), NamedSharding(mesh, PartitionSpec("d"))
            )
            f = jax.jit(
                jax.shard_map(
                    lambda v: jax.lax.psum(v, "d"),
                    mesh=mesh,
                    in_specs=PartitionSpec("d"),
                    out_specs=PartitionSpec("d"),
                )
            )
            f(x).block_until_ready()
            times.append((size * 4, _best(functools.partial(f, x), reps)))
        (s1, t1), (s2, t2) = times
        factor = 2 * (n - 1) / n
        bus = factor * (s2 - s1) / max(t2 - t1, 1e-9)
        latency = max(0.0, (t1 - factor * s1 / bus) / (2 * (n - 1)))
        out[n] = (bus, latency)
    return out


def _compile_seconds() -> tuple[float, float]:
    """(base, per hidden layer) seconds to compile the epoch program."""
    cfg = Config([64], 32, 16, 256)
    times = []
    for depth in (1, 3):
        epoch, state, x, y, opts = _program(cfg, depth)
        t = time.perf_counter()
        epoch.lower(state, x, y, jnp.int32(0)).compile(opts)
        times.append(time.perf_counter() - t)
    per_layer = max(0.0, (times[1] - times[0]) / 2)
    # The run compiles its initialisation and evaluation besides the epoch: ~1.5x.
    return 1.5 * max(times[0] - per_layer, 0.0), 1.5 * per_layer


def _terms(base: Profile, cfg: Config, timed: Timed) -> list[float]:
    """The terms `Profile.scale` weighs (timing.TERMS) for one measured epoch, unscaled."""
    work, params = config_work(cfg, timed.ops, timed.counted)
    single = single_threaded(base.platform, params, cfg.batch)
    steps = steps_per_epoch(cfg.rows, cfg.batch)
    step = base.terms(work, cfg.precision, single)
    shuffle = base.sort_s * cfg.rows * math.log2(cfg.rows)
    return [steps * step[t] for t in STEP_TERMS] + [base.epoch_s, shuffle]


# How strongly the fit holds each weight to 1 (the measured figure), against the mean
# squared log error of the calibration epochs, per term. Firm (1) where the measurement
# is the step's own kind of work: the per-kernel floor and the epoch's call (timed in the
# run's own tiny epochs), the matmul rate, memory bandwidth, the gather and the casts (the
# run's own epochs) and the powers, so that a dozen calibration epochs do not trade them
# against one another. Looser where the measured kernel is not quite the step's: the
# cache-resident traffic (one fused update; 0.3), the transposes (0.3) and the shuffle (a
# lone sort; 0.1), which the epochs correct. Offline, over 96 epochs timed in 7 rounds,
# 40 random 12-epoch calibrations predicting the other 84 (benchmarks/RESULTS.md, issue
# 24): a weak pull (0.01) on every term gave |error| median 10.0 %, p90 32.1 %; these,
# 9.1 % and 24.7 %. The casts were held at 0.01 while they were an unfused cast pass
# (0.14 ns an element here, which the fit raised ×6); measured in the run's own epochs
# (1.36 ns) the fit leaves them at ×0.93 with that pull, and a firm one did as well on
# 2 × 24 held-out epochs (median/p90 7.7 %/20.6 % against 7.9 %/20.6 %).
FIT_PRIOR = {
    "kernels": 1.0,
    "matmul/float32": 1.0,
    "cache": 0.3,
    "memory": 1.0,
    "convert": 1.0,
    "gather": 1.0,
    "pow": 1.0,
    "transpose": 0.3,
    "wgrad": 1.0,
    "epoch": 1.0,
    "shuffle": 0.1,
}
FIT_BOUNDS = (1e-3, 1e3)


def fit_scale(base: Profile, measured: Sequence[tuple[Config, Timed]]) -> dict[str, float]:
    """The weight of each term (timing.TERMS) that fits `base`'s terms to the measured
    epochs: least squares on the log of predicted / measured (every epoch counts alike,
    over- and under-estimates alike) plus the term's `FIT_PRIOR` × the squared log of
    its weight, a pull towards the measured figure, so a term no epoch leans on keeps 1 and a term
    the epochs cannot tell from another does not trade against it. The two precisions'
    matmuls share one weight: it corrects the measured rates for the step's shapes,
    which both precisions share (and the precisions' rates are each measured), and a
    weight per precision let the bfloat16 one trade against the casts, which only
    bfloat16 epochs carry."""
    from scipy.optimize import minimize

    rows = np.array([[t / timed.seconds for t in _terms(base, c, timed)] for c, timed in measured])
    f32, bf16 = TERMS.index("matmul/float32"), TERMS.index("matmul/bfloat16")
    tied = np.delete(rows, bf16, axis=1)
    tied[:, f32] += rows[:, bf16]
    n, m = tied.shape
    prior = np.array([FIT_PRIOR[t] for t in TERMS if t != "matmul/bfloat16"])

    def loss(logw: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(logw)
        ratio = tied @ w  # predicted / measured, per epoch
        err = np.log(ratio)
        grad = 2 / n * ((err / ratio) @ tied) * w + 2 * prior / m * logw
        return float(np.mean(err**2) + np.mean(prior * logw**2)), grad

    bounds = [tuple(np.log(FIT_BOUNDS))] * m
    found = minimize(loss, np.zeros(m), jac=True, method="L-BFGS-B", bounds=bounds)
    coef = np.insert(np.exp(found.x), bf16, np.exp(found.x[f32]))
    return {t: float(c) for t, c in zip(TERMS, coef)}


# A tiny step's epochs of 256 and of 2 steps: their difference is 254 steps of the
# per-kernel floor, the rest of the short one is the epoch's call (less its shuffle).
_FLOOR_CONFIGS = (
    Config([4], 8, 4, 8 * 256, "float32", "sgd"),
    Config([4], 8, 4, 8 * 2, "float32", "sgd"),
)


def _floor(sort_s: float, timed: Sequence[Timed]) -> tuple[float, float]:
    """(seconds per kernel of a step, seconds of an epoch's call beyond its steps and its
    shuffle at `sort_s`), from the epochs of `_FLOOR_CONFIGS` (`timed`)."""
    long, short = _FLOOR_CONFIGS
    steps = [c.rows // c.batch for c in _FLOOR_CONFIGS]
    step = max(timed[0].seconds - timed[1].seconds, 0.0) / (steps[0] - steps[1])
    shuffle = sort_s * short.rows * math.log2(short.rows)
    return step / timed[0].ops, max(timed[1].seconds - steps[1] * step - shuffle, 0.0)


# The epochs the per-kernel floor, an epoch's call and the gather are measured on: timed
# in the same rounds as the calibration epochs (`measure_profile`), so that a change in
# the machine (a neighbour on the other core slows small kernels by up to ~35 % on the
# process clock here) weighs on the units and on the epochs they are fitted to alike.
UNIT_CONFIGS = _FLOOR_CONFIGS + _GATHER_CONFIGS + _CONVERT_CONFIGS


def _element_costs(reps: int) -> dict[str, Any]:
    """XLA:CPU's per-element costs measured on their own (`Profile.pow_s`,
    `transpose_s`, `transpose_curve`, `wgrad_grid`); a GPU's are left to its bandwidth."""
    curve = _transpose_curve(reps)
    return {
        "pow_s": _pow_seconds(reps),
        "transpose_s": dict(curve)[512 * 512],
        "transpose_curve": curve,
        "wgrad_grid": _wgrad_grid(reps),
    }


def use_clock(name: str) -> None:
    """Times with the named clock from now on ("wall" or "cpu", `CLOCKS`)."""
    _clock[0] = CLOCKS[name]


# Rounds of the calibration epochs (their median kept, `time_epochs`). On this 2-core VM
# one timing of an epoch strays from the next by 5-8 % (median) and up to a third: two
# medians of alternate rounds of the same epoch differed by 10-14 % (median), 19-27 %
# (p90) at 5 rounds, 4 % / 10 % at 25 (issue 24). A round of the calibration and unit
# epochs is ~0.45 s of epochs here, so fifteen rounds cost ~4.5 s more than five.
CALIBRATION_ROUNDS = 15


def _calibration_epochs(
    chosen: list[Config],
    timed: Sequence[Timed] | None,
    units: Sequence[Timed] | None,
    quick: bool,
) -> tuple[list[Timed], list[Timed]]:
    """The epochs of the calibration configurations `chosen` and of `UNIT_CONFIGS`: as
    given, else timed here, in the same rounds (`CALIBRATION_ROUNDS`; two when `quick`)."""
    rounds = 2 if quick else CALIBRATION_ROUNDS
    if timed is not None:
        units = list(units) if units is not None else time_epochs(UNIT_CONFIGS, rounds)
        return list(timed)[:: 2 if quick else 1], units
    both = time_epochs([*UNIT_CONFIGS, *chosen], rounds)
    return both[len(UNIT_CONFIGS) :], both[: len(UNIT_CONFIGS)]


def _cpu_units(base: Profile, units: Sequence[Timed], log: Callable[[str], None]) -> Profile:
    """`base` with the costs XLA:CPU's unit epochs give (`_measured_units`; `units`:
    those of `UNIT_CONFIGS`, in order), logged."""
    start = len(_FLOOR_CONFIGS)
    gather = units[start : start + len(_GATHER_CONFIGS)]
    found = _measured_units(base, gather, units[start + len(_GATHER_CONFIGS) :])
    by_batch = ", ".join(f"batch {b}: {c * 1e9:.2f}" for b, c in found.gather_curve)
    log(
        f"the batch's gather, ns per element: {by_batch or 'none read'} (bfloat16 at "
        f"{_GATHER_CONFIGS[2].batch}: {found.gather_bf16_s * 1e9:.2f})"
    )
    sizes = ", ".join(f"{n}: {c * 1e9:.2f}" for n, c in found.convert_curve)
    log(f"a bfloat16 step's casts by elements, ns each: {sizes}")
    return found


def measure_profile(
    quick: bool = False,
    configs: Sequence[Config] | None = None,
    log: Callable[[str], None] = lambda _: None,
    timed: Sequence[Timed] | None = None,
    units: Sequence[Timed] | None = None,
) -> Profile:
    """The local default device's profile (module docstring), its fit over `configs`
    (default CALIBRATION_CONFIGS), timed here in turns with `UNIT_CONFIGS`
    (`time_epochs`) unless `timed` and `units` give their epochs, measured already in the
    same rounds. `quick`: one repetition of each timing and half the configurations
    (rough; for tests)."""
    device = jax.devices()[0]
    platform, reps = device.platform, (1 if quick else 3)
    t0 = time.perf_counter()
    chosen = list(CALIBRATION_CONFIGS if configs is None else configs)[:: 2 if quick else 1]
    epochs, units = _calibration_epochs(chosen, timed, units, quick)
    sort_s = _sort_seconds(reps)
    op_s, epoch_s = _floor(sort_s, units[: len(_FLOOR_CONFIGS)])
    log(f"step floor {op_s * 1e6:.2f} µs a kernel, an epoch's call {epoch_s * 1e6:.0f} µs")
    rates = _matmul_rates(platform, reps)
    log("matmul " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()))
    big = (64 if platform == "cpu" else 1024) * 2**20
    bandwidth, cache = _bandwidth(big, reps), _update_bandwidth(reps)
    log(f"memory {bandwidth / 1e9:.1f} GB/s, cache (an update's fusion) {cache / 1e9:.1f} GB/s")
    elements = _element_costs(reps) if platform == "cpu" else {}
    if elements:
        log(f"a value raised to a power {elements['pow_s'] * 1e9:.2f} ns per element")
        sides = ", ".join(f"{n}: {c * 1e9:.2f}" for n, c in elements["transpose_curve"])
        log(f"a transposed write by elements, ns each: {sides}")
        grid = ", ".join(f"{w}×{r}: {c * 1e9:.2f}" for w, r, c in elements["wgrad_grid"])
        log(f"a weight gradient's dot beyond its FLOPs, width × rows, ns an element: {grid}")
    collectives = _collectives(reps)
    for n, (bus, lat) in collectives.items():
        log(f"all-reduce over {n}: bus {bus / 1e9:.2f} GB/s, latency {lat * 1e6:.1f} µs")
    base = Profile(
        kind=device.device_kind,
        source=MEASURED,
        op_s=op_s,
        matmul=rates,
        bandwidth=bandwidth,
        cache_bandwidth=cache if platform == "cpu" else None,
        sort_s=sort_s,
        epoch_s=epoch_s,
        **elements,
        collectives=collectives,
        compile_s=_compile_seconds() if platform == "cpu" else GPU_COMPILE_S,
        platform=platform,
    )
    if platform == "cpu":
        base = _cpu_units(base, units, log)
    scale = fit_scale(base, list(zip(chosen, epochs)))
    log(f"fit over {len(chosen)} epochs: " + ", ".join(f"{t} × {v:.2f}" for t, v in scale.items()))
    note = (
        f"jaxpipe calibrate on {len(jax.local_devices())} local {platform} device(s), "
        f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - t0:.0f} s, jax {jax.__version__}"
    )
    return dataclasses.replace(base, scale=scale, note=note)
