"""Builds the optax transformation the spec names. Never re-implements an optimizer:
names and keyword arguments are looked up on optax and checked against its signatures."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxpipe.errors import SpecError
from jaxpipe.spec.sections import OptimizerSpec, ScheduleSpec

__all__ = ["make_optimizer", "make_schedule", "check_optimizer", "SCHEDULES"]

_NOT_OPTIMIZERS = {
    "chain",
    "named_chain",
    "inject_hyperparams",
    "multi_transform",
    "identity",
    "set_to_zero",
    "stateless",
    "masked",
    "flatten",
    "apply_every",
    "apply_if_finite",
    "MultiSteps",
    "with_extra_args_support",
}


def _is_factory(fn: Any) -> bool:
    """A function, or a `functools.partial` of one: optax defines nadam and nadamw as
    partials of adam and adamw (`nesterov=True`)."""
    if isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.isfunction(fn)


def _optimizer_names() -> list[str]:
    names = []
    for name, fn in vars(optax).items():
        if name.startswith("_") or name in _NOT_OPTIMIZERS or not _is_factory(fn):
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if "learning_rate" in params:
            names.append(name)
    return sorted(names)


# The optimizer dry-run (check_optimizer) builds schedules for this many steps, a
# realistic run length: with 1 step warmup_cosine had no steps left to decay over.
DRY_RUN_STEPS = 1000


def _schedule_factories(lr: float, total_steps: int) -> dict[str, tuple[Callable, dict]]:
    # name -> (optax function, the arguments jaxpipe fills in from the spec)
    total_steps = max(1, total_steps)
    # A tenth of the run warms up, leaving at least one step for the cosine to decay.
    warmup = min(max(1, total_steps // 10), total_steps - 1)
    return {
        "constant": (optax.constant_schedule, {"value": lr}),
        "cosine": (optax.cosine_decay_schedule, {"init_value": lr, "decay_steps": total_steps}),
        "warmup_cosine": (
            optax.warmup_cosine_decay_schedule,
            {
                "init_value": 0.0,
                "peak_value": lr,
                "decay_steps": total_steps,
                "warmup_steps": warmup,
            },
        ),
        "exponential": (
            optax.exponential_decay,
            {"init_value": lr, "transition_steps": max(1, total_steps // 10), "decay_rate": 0.5},
        ),
        "linear": (
            optax.linear_schedule,
            {"init_value": lr, "end_value": 0.0, "transition_steps": total_steps},
        ),
    }


SCHEDULES = tuple(_schedule_factories(1.0, 1))


def _check_kwargs(fn: Callable, options: Mapping[str, Any], where: str, taken: set[str]) -> None:
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in taken and p not in ("self",)]
    for key in options:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise SpecError(
                f"optax.{fn.__name__} has no argument {key!r}; {hint}"
                f"it takes {', '.join(allowed) or 'nothing more'}",
                key=f"{where}.{key}",
            )


def make_schedule(cfg: ScheduleSpec, lr: float, total_steps: int) -> optax.Schedule:
    """The learning-rate schedule; unset step counts default to the whole run."""
    factories = _schedule_factories(lr, total_steps)
    if cfg.name not in factories:
        near = difflib.get_close_matches(cfg.name, factories, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise SpecError(
            f"unknown schedule {cfg.name!r}{hint}; expected one of {', '.join(factories)}",
            key="optimizer.schedule.name",
        )
    fn, defaults = factories[cfg.name]
    _check_kwargs(fn, cfg.options, "optimizer.schedule", set())
    given = ", ".join(f"{k} = {v!r}" for k, v in dict(cfg.options).items())
    kwargs = defaults | dict(cfg.options)
    if cfg.name == "warmup_cosine" and "warmup_steps" not in cfg.options:
        decay = kwargs["decay_steps"]  # the user's, maybe: warm up for a tenth of it
        if isinstance(decay, int) and decay > 1:
            kwargs["warmup_steps"] = min(max(1, decay // 10), decay - 1)
    try:
        schedule = fn(**kwargs)
        # optax checks some values when building, others never: a negative rate (an
        # exponential decay_rate < 0, say) would climb the loss. The rate at the start,
        # middle and end. (A rate that overflows is left to the divergence check.)
        probes = sorted({0, total_steps // 2, total_steps})
        at = jax.jit(schedule)  # one small program for the probes, not an op at a time
        rates = [(step, float(at(step))) for step in probes]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise SpecError(
            f"optax.{fn.__name__} cannot run with {given or 'its defaults'} over "
            f"{total_steps} steps ({detail}); check the schedule's values",
            key="optimizer.schedule",
        ) from None
    # Rounding leaves a decayed-to-zero rate a few ulps either side of 0: not a fault.
    bad = next(((k, r) for k, r in rates if r < -1e-6 * lr), None)
    if bad is not None:
        raise SpecError(
            f"the {cfg.name} schedule gives learning rate {bad[1]} at step {bad[0]} of "
            f"{total_steps}{f' (with {given})' if given else ''}; a rate must be ≥ 0",
            key="optimizer.schedule",
        )
    return schedule


def make_optimizer(cfg: OptimizerSpec, total_steps: int = 1) -> optax.GradientTransformation:
    """The spec's optimizer (with its schedule and gradient clipping)."""
    fn = getattr(optax, cfg.name, None)
    if (
        cfg.name.startswith("_")
        or cfg.name in _NOT_OPTIMIZERS
        or not _is_factory(fn)
        or "learning_rate" not in inspect.signature(fn).parameters
    ):
        names = _optimizer_names()
        near = difflib.get_close_matches(cfg.name, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise SpecError(
            f"unknown optax optimizer {cfg.name!r}{hint}; e.g. "
            f"{', '.join(n for n in ('adam', 'adamw', 'sgd', 'lion', 'rmsprop', 'lamb'))}",
            key="optimizer.name",
        )
    _check_kwargs(fn, cfg.options, "optimizer", {"learning_rate"})
    lr: float | optax.Schedule = cfg.learning_rate
    if cfg.schedule is not None:
        lr = make_schedule(cfg.schedule, cfg.learning_rate, total_steps)
    try:
        tx = fn(learning_rate=lr, **cfg.options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"optax.{cfg.name} rejected the arguments: {e}", key="optimizer") from None
    if cfg.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx


def _dry_run_steps(cfg: OptimizerSpec) -> int:
    """A run length for checking a schedule before the data (and so the real length)
    is known: DRY_RUN_STEPS, or ten times the largest step count the schedule names, so
    a step count the user gives is never longer than the dry run."""
    named = [v for v in (cfg.schedule.options.values() if cfg.schedule else ()) if type(v) is int]
    return max([DRY_RUN_STEPS] + [10 * v for v in named])


def check_optimizer(cfg: OptimizerSpec, total_steps: int | None = None) -> None:
    """Raises SpecError if the optimizer section names anything optax does not have, or
    if its values cannot run: optax checks argument types only when it first updates,
    which would otherwise fail deep inside the compiled step. `total_steps`: the run's
    length when known (its schedule is checked over exactly that)."""
    tx = make_optimizer(cfg, total_steps=total_steps or _dry_run_steps(cfg))
    params = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}  # abstract: nothing runs
    try:
        # Traced, not run: eagerly, each of optax's ops compiles on its own (a second of
        # start-up, before the compilation cache is on); tracing raises the same errors.
        jax.eval_shape(lambda p: tx.update(p, tx.init(p), p), params)
    except Exception as e:  # any failure here is the arguments' fault, reported as such
        given = ", ".join(f"{k} = {v!r}" for k, v in dict(cfg.options).items())
        sched = (
            ", ".join(f"{k} = {v!r}" for k, v in dict(cfg.schedule.options).items())
            if cfg.schedule
            else ""
        )
        args = "; ".join(x for x in (given, sched and f"schedule {sched}") if x)
        detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise SpecError(
            f"optax.{cfg.name} cannot run with {args or 'these arguments'} "
            f"({type(e).__name__}: {detail}); check their types and values",
            key="optimizer",
        ) from None
