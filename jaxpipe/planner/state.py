"""The run's state as shapes, for the planner: parameters, optimizer state and the
optimizer update's temporaries, built without allocating anything and in time linear in
the number of distinct leaf shapes, not in depth (a 5000-layer MLP has 10000 leaves but
a handful of shapes; tracing optax's init over all of them took ~10 s)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxpipe.core.aot import cached_number
from jaxpipe.core.model import param_shapes
from jaxpipe.core.optim import make_optimizer
from jaxpipe.core.step import steps_per_epoch
from jaxpipe.parallel.partition import map_state_params
from jaxpipe.planner.values import Workload

__all__ = ["Abstract", "OptClasses", "abstract_state", "leaf_class"]


class OptClasses(NamedTuple):
    """The optimizer state by parameter shape: `follow[c]` lists the (shape, dtype) of
    the state leaves that follow one parameter of class c = (shape, dtype) (Adam's two
    moments, Adafactor's factored rows and columns, ...); `other` the bytes of the leaves
    that follow no parameter (step counters)."""

    follow: dict[tuple, tuple[tuple[tuple[int, ...], Any], ...]]
    other: int
    update_ratio: float = 0.0  # the update's temporaries per byte of parameters


class Abstract(NamedTuple):
    """The run's state as shapes: params and opt_state have `jax.ShapeDtypeStruct` leaves;
    `update_temp` is the bytes of temporaries XLA needs for the optimizer update alone;
    `classes` the optimizer state per parameter shape (`OptClasses`); `state_copies`, per
    byte of parameters, the part of those temporaries that copies the optimizer state
    because the update overwrites it while still reading the old values (Lion's momentum
    feeds both the new momentum and the step's sign): what donating the state adds to
    donating the parameters alone. In the epoch XLA makes them as each step starts."""

    params: Any
    opt_state: Any
    tx: optax.GradientTransformation
    update_temp: int
    classes: OptClasses | None = None
    state_copies: float = 0.0


def leaf_class(leaf: Any) -> tuple[tuple[int, ...], Any]:
    return tuple(leaf.shape), leaf.dtype


_CACHE: dict[tuple[str, str], tuple[int, OptClasses, float]] = {}
# Past this many leaves, optax's init is traced for one leaf per distinct shape and its
# state expanded over the tree (`_expand`); below it, traced as is.
_FEW_LEAVES = 64
_KEY = "__jaxpipe_class_{}"


def _update_temp(
    tx: optax.GradientTransformation, params: Any, opt_state: Any, donate: tuple = (0, 1)
) -> int:
    """Temporaries of the optax update with params and state donated (`donate`), from
    compiling it for abstract shapes (allocates nothing). Adam's and SGD's updates fuse in
    place (0); Lion's needs a parameter-sized buffer, and only with its state donated.
    Optax does not expose this, so ask XLA. The temporaries scale with the parameters, so
    one leaf per shape suffices."""

    def update(params: Any, opt_state: Any, grads: Any) -> Any:
        updates, new_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state

    compiled = jax.jit(update, donate_argnums=donate).lower(params, opt_state, params).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def _few(params: Any) -> tuple[dict[str, Any], dict[tuple, str]]:
    """One leaf per distinct (shape, dtype) of `params`, keyed so that their state's
    parameter-shaped subtrees can be recognised; and each class's key."""
    distinct = sorted({leaf_class(a) for a in jax.tree.leaves(params)}, key=str)
    keys = {c: _KEY.format(i) for i, c in enumerate(distinct)}
    return {keys[c]: jax.ShapeDtypeStruct(c[0], c[1]) for c in distinct}, keys


def _expand(few_state: Any, params: Any, keys: dict[tuple, str]) -> Any:
    """The state of `params` from the state of its distinct leaves: optax builds every
    parameter-shaped part of its state with a tree map over the parameters, so each part
    is the parameter tree with every leaf replaced by its class's entry."""
    leaves, treedef = jax.tree.flatten(params)
    names = set(keys.values())
    part = lambda n: isinstance(n, dict) and set(n) == names  # noqa: E731
    cls = [keys[leaf_class(a)] for a in leaves]
    return jax.tree.map(
        lambda n: jax.tree.unflatten(treedef, [n[k] for k in cls]) if part(n) else n,
        few_state,
        is_leaf=part,
    )


class _Mark:
    """A state leaf as `_classes` sorts it: its parameter class's key (None: no
    parameter's) and its (shape, dtype), or its bytes. Not a pytree: a leaf of the map."""

    def __init__(self, key: str | None, value: Any):
        self.key, self.value = key, value


def _classes(tx: optax.GradientTransformation, few: dict, few_state: Any, keys: dict) -> OptClasses:
    follow: dict[str, list] = {k: [] for k in few}
    other = 0

    def note(leaf: Any, key: str) -> _Mark:
        return _Mark(key, (tuple(leaf.shape), leaf.dtype))

    def rest(leaf: Any) -> _Mark:
        return _Mark(None, math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize)

    named = {k: k for k in few}
    marks = map_state_params(tx, note, few_state, named, rest)
    for mark in jax.tree.leaves(marks, is_leaf=lambda x: isinstance(x, _Mark)):
        if mark.key is not None:
            follow[mark.key].append(mark.value)
        else:
            other += mark.value
    return OptClasses({c: tuple(follow[k]) for c, k in keys.items()}, other)


def abstract_state(work: Workload, shapes: Any, temporaries: bool = True) -> Abstract:
    """The run's parameters, optimizer state and optimizer as shapes; nothing is allocated.
    `shapes`: a `memory.Shapes`. `temporaries`: also the optimizer update's temporaries
    (one or two small compiles, the estimate's); False when only the shapes are wanted
    (a layout compiled whole, verify.py), leaving `update_temp` 0 and `classes` None."""
    steps = steps_per_epoch(shapes.train_rows, work.training.batch_size) * work.training.epochs
    tx = make_optimizer(work.optimizer, total_steps=steps)
    m = work.model
    params = param_shapes(tuple(m.hidden), shapes.features, shapes.outputs, m.layer_norm)
    few, keys = _few(params)
    few_state = jax.eval_shape(tx.init, few)
    deep = len(jax.tree.leaves(params)) > _FEW_LEAVES
    opt_state = _expand(few_state, params, keys) if deep else jax.eval_shape(tx.init, params)
    if not temporaries:
        return Abstract(params, opt_state, tx, 0)
    # One compile per optimizer section and parameter shapes (plans re-estimate often).
    key = (repr(work.optimizer), str(sorted(keys, key=str)) + str(deep or params))
    if key not in _CACHE:
        tree, state = (few, few_state) if deep else (params, opt_state)
        # Kept on disk beside the compilation cache too (no compile on a warm run).
        update = cached_number("update-temp", str(key), lambda: _update_temp(tx, tree, state))
        # Without temporaries there are no copies either (Adam, SGD: no second compile).
        alone = update and cached_number(
            "update-temp-params", str(key), lambda: _update_temp(tx, tree, state, (0,))
        )
        size = max(1, sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(tree)))
        classes = _classes(tx, few, few_state, keys)._replace(update_ratio=update / size)
        _CACHE[key] = (update, classes, max(0, update - alone) / size)
    update_temp, classes, copies = _CACHE[key]
    return Abstract(params, opt_state, tx, update_temp, classes, copies)
