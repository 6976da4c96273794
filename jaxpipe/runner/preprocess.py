"""Stage 4, preprocess: fits the `Preprocessing` record (jaxpipe.data.fitted) on the
training split and applies it, on the device for resident data, on the host rows for
streamed data."""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from typing import Any

import jax
import numpy as np

from jaxpipe.core.aot import cached_compile
from jaxpipe.core.scaling import Scaler, apply_scaler, fit_scaler, fit_standard
from jaxpipe.data.diskrows import DiskRows
from jaxpipe.data.fitted import Preprocessing, fit_class_weights
from jaxpipe.data.load import Dataset
from jaxpipe.parallel.sharding import place_host_array
from jaxpipe.runner.place import Placed


def _record(ds: Dataset, normalize: str, scaler: Scaler, target: Scaler | None, class_weight):
    weights = None
    if ds.task == "classification":
        weights = fit_class_weights(class_weight, ds.y_train, tuple(ds.class_names))
    return Preprocessing(
        task=ds.task,
        label=ds.label,
        classes=tuple(ds.class_names),
        features=tuple(ds.feature_names),
        encoder=ds.encoder,
        normalize=normalize,
        scaler=scaler,
        target=target,
        class_weights=weights,
    )


# Module level, so jit's cache serves every run in the process (a closure per run would
# compile afresh each time: many small fits, scikit-learn's checks).
@functools.partial(
    jax.jit, donate_argnums=(0, 1, 2, 3), static_argnames=("normalize", "regression")
)
def _fit_apply(x_tr, x_va, y_tr, y_va, *, normalize: str, regression: bool):
    scaler = fit_scaler(normalize, x_tr)
    target = fit_standard(y_tr[:, None]) if regression else None
    if regression:
        y_tr = apply_scaler(target, y_tr[:, None])[:, 0]
        y_va = apply_scaler(target, y_va[:, None])[:, 0]
    return apply_scaler(scaler, x_tr), apply_scaler(scaler, x_va), y_tr, y_va, scaler, target


def preprocess_data(
    ds: Dataset, placed: Placed, normalize: str, streamed: bool, class_weight: Any = None
) -> tuple[Preprocessing, Placed, float]:
    """Fits the scaler (and a regression target's standardisation, so one learning rate
    suits any target's units) on the training split only and applies it. Returns the
    record, the scaled arrays and the seconds taken. Resident runs fit on the device and
    donate the raw arrays (the scaled ones take their place: one device copy); streamed
    runs fit on the host rows (see _fit_streamed). `class_weight`: `[training]
    class_weight`, fitted on the training labels (`data.fitted.fit_class_weights`)."""
    regression = ds.task == "regression"
    if streamed:
        return _preprocess_streamed(ds, placed, normalize, regression, class_weight)
    t0 = time.perf_counter()
    p = placed
    arrays = (p.x_train, p.x_val, p.y_train, p.y_val)
    # A stored program when the cache holds one: no tracing or lowering (aot.py).
    fit_apply = cached_compile(
        "preprocess",
        lambda *a: _fit_apply.lower(*a, normalize=normalize, regression=regression),
        arrays,
        {},
        f"normalize={normalize} regression={regression}",
    )
    out = jax.block_until_ready(fit_apply(*arrays))
    seconds = time.perf_counter() - t0
    x_tr, x_va, y_tr, y_va, scaler, target = out
    scaled = replace(placed, x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va)
    return _record(ds, normalize, scaler, target, class_weight), scaled, seconds


def _fit_streamed(normalize: str, regression: bool, x: np.ndarray, y: np.ndarray):
    """Streamed preprocessing: the scaler (and a regression target's) fitted on the host
    rows by the CPU backend; a regression target is scaled on the host (one column)."""
    cpu = jax.devices("cpu")[0]
    xc, yc = jax.device_put((x, y), cpu)
    scaler = jax.jit(lambda x: fit_scaler(normalize, x))(xc)
    target = None
    if regression:
        target = jax.jit(lambda y: fit_standard(y[:, None]))(yc)
        y = np.asarray(jax.jit(lambda t, y: apply_scaler(t, y[:, None])[:, 0])(target, yc))
    return x, y, scaler, target


def _preprocess_streamed(ds: Dataset, placed: Placed, normalize: str, regression: bool, cw):
    # Fitted where the rows are (host memory); x is scaled on the device per chunk.
    t0 = time.perf_counter()
    if isinstance(placed.x_train, DiskRows):  # fitted in the load stage's one pass
        x_tr, y_tr, scaler, target = *placed.arrays[:2], *placed.x_train.fitted
    else:
        x_tr, y_tr, scaler, target = _fit_streamed(normalize, regression, *placed.arrays[:2])
    # Beside the validation rows, wherever they were placed (one device or the mesh).
    rep = placed.x_val.sharding
    host = jax.device_get((scaler, target))
    scaler, target = jax.tree.map(lambda a: place_host_array(np.asarray(a), rep), host)
    x_va, y_va = placed.x_val, placed.y_val
    if regression:
        y_va = apply_scaler(target, y_va[:, None])[:, 0]
    x_va = jax.block_until_ready(jax.jit(apply_scaler)(scaler, x_va))
    seconds = time.perf_counter() - t0
    scaled = replace(placed, x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va)
    return _record(ds, normalize, scaler, target, cw), scaled, seconds
