"""Where a run starts: from scratch, or from its newest readable checkpoint after
checking that the spec and the data are still those the checkpoint was trained on."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxpipe.core.scaling import Scaler
from jaxpipe.core.step import TrainState
from jaxpipe.errors import JaxpipeError, SpecError
from jaxpipe.runner import checkpoint as ckpt
from jaxpipe.runner.stopping import EarlyStopper
from jaxpipe.spec.experiment import Spec, parse_spec
from jaxpipe.spec.resume import spec_conflicts
from jaxpipe.spec.schema import to_dict
from jaxpipe.spec.sections import EarlyStoppingSpec

__all__ = [
    "RunProgress",
    "check_resumable",
    "start_or_resume",
    "checkpoint_arrays",
    "data_fingerprint",
    "warn",
]


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass
class RunProgress:
    """The loop's mutable bookkeeping: the state after `epoch` epochs and what led there."""

    state: TrainState
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopper: EarlyStopper | None = None
    best_params: Any = None  # the best epoch's parameters (early_stopping.restore_best)
    resumed_from: int | None = None
    saved: int | None = None  # newest epoch checkpointed by this process
    diverged: dict[str, Any] | None = None
    requested: str | None = None  # an observer's request to stop (on_epoch_end)


def checkpoint_arrays(
    state: TrainState, scaler: Scaler, target: Scaler | None, best_params: Any
) -> dict[str, Any]:
    """The arrays of a checkpoint: state, fitted scaler, the regression target's scaler
    (if any) and the best epoch's parameters (if kept)."""
    arrays = {
        "state": ckpt.state_to_tree(state),
        "scaler": {"offset": scaler.offset, "scale": scaler.scale},
    }
    if target is not None:
        arrays["target"] = {"offset": target.offset, "scale": target.scale}
    if best_params is not None:
        arrays["best_params"] = best_params
    return arrays


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the encoded rows (features and labels of both splits), stored in each
    checkpoint: the refitted normaliser catches changed features, but not relabelled
    rows. blake2b runs at about 1 GB/s, small beside a run over that much data."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if hasattr(a, "fingerprint"):  # rows on disk (diskrows.py): the files as read
            h.update(a.fingerprint().encode())
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def check_resumable(store: ckpt.CheckpointStore, spec: Spec, force: bool) -> None:
    """Refuses to resume with a spec that alters the model, optimizer, data or (without
    `force`) the training length, listing the differing keys. Reads only the newest
    checkpoint's JSON metadata, before anything is compiled."""
    for epoch in reversed(store.epochs()):
        try:
            meta = store.read_meta(epoch)
            saved_text = meta["spec"]
        except Exception:  # unreadable: the restore will warn and fall back
            continue
        if not isinstance(saved_text, str) or not isinstance(meta.get("epoch"), int):
            continue  # damaged metadata: the restore will warn and fall back
        try:
            saved = to_dict(parse_spec(saved_text, file=f"checkpoint {epoch}"))
        except SpecError as e:
            raise JaxpipeError(
                f"--resume: the checkpointed run's spec no longer loads ({e}); "
                "start a new run in another directory"
            ) from None
        refused, _ = spec_conflicts(saved, to_dict(spec), force=force)
        if not refused and meta["epoch"] > spec.training.epochs:
            raise JaxpipeError(
                f"--resume: the newest checkpoint is of epoch {meta['epoch']}, past "
                f"training.epochs = {spec.training.epochs}; set training.epochs ≥ {meta['epoch']}"
            )
        if refused:
            only_length = all(
                k.startswith("training.epochs") or "early_stopping" in k for k in refused
            )
            hint = (
                "add --force to change the training length"
                if only_length
                else "resume with the original spec, or start a new run in another directory"
            )
            raise JaxpipeError(
                f"--resume: the spec differs from the checkpointed run's in "
                f"{', '.join(refused)}; {hint}"
            )
        return


def start_or_resume(
    es: EarlyStoppingSpec | None,
    store: ckpt.CheckpointStore,
    state: TrainState,
    scaler: Scaler,
    target: Scaler | None,
    dataset: dict[str, Any],
    resume: bool,
) -> RunProgress:
    """A fresh RunProgress from `state`, or, with `resume`, the newest readable
    checkpoint restored into the shardings of `state` (freshly initialised here). `es`:
    `[training] early_stopping`."""
    fresh = RunProgress(state, stopper=EarlyStopper.from_spec(es) if es else None)
    if not resume:
        return fresh

    def template(meta: dict[str, Any]) -> Any:
        best = state.params if meta.get("has_best_params") else None
        return ckpt.abstract_like(checkpoint_arrays(state, scaler, target, best))

    restored = store.restore(template, warn)
    if restored is None:
        warn(f"--resume: no checkpoint in {store.directory}; starting from epoch 1")
        return fresh
    meta, arrays = restored.meta, restored.arrays
    fitted = {"scaler": scaler, "target": target}
    for item, fit in fitted.items():
        if fit is None:
            continue
        for name in ("offset", "scale"):  # the same rows give bit-identical statistics
            saved = jax.device_get(arrays[item][name])
            if not np.array_equal(saved, jax.device_get(getattr(fit, name))):
                raise JaxpipeError(
                    "--resume: the training data differ from the checkpointed run's (the "
                    f"fitted {'target ' if item == 'target' else ''}normaliser changed); "
                    "resume with the original data, or start a new run"
                )
    for name in ("task", "label", "classes", "features", "encoder", "fingerprint"):
        if name == "fingerprint" and name not in meta["dataset"]:
            continue  # a checkpoint from before fingerprints: the checks above only
        if meta["dataset"].get(name) != dataset.get(name):
            what = "rows (their labels or features)" if name == "fingerprint" else name
            raise JaxpipeError(
                f"--resume: the data's {what} differ from the checkpointed run's; resume "
                "with the original data, or start a new run"
            )
    run = RunProgress(
        ckpt.tree_to_state(arrays["state"], state),
        epoch=restored.epoch,
        history=list(meta["history"]),
        resumed_from=restored.epoch,
        saved=restored.epoch,
    )
    if es is not None:
        run.stopper = EarlyStopper.from_spec(es, meta.get("early_stopping"))
        run.best_params = arrays.get("best_params") if es.restore_best else None
        if es.restore_best and run.best_params is None:  # restore_best newly turned on
            run.stopper = EarlyStopper.from_spec(es)
    return run
