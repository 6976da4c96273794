"""`jaxpipe validate`, and the checks a run makes before any work: what can be checked
without training.

Kept out of `api.py` so that validating a spec imports neither flax nor orbax nor the
training loop: only optax (which needs jax; the optimizer check runs one optax update),
numpy, and pyarrow when the data is a file.
"""

from __future__ import annotations

from jaxpipe.errors import SpecError
from jaxpipe.spec.experiment import Spec, place_error

__all__ = ["validate", "check_before_data", "check_schedule", "check_run_metrics"]


def validate(spec: Spec) -> list[str]:
    """Checks what can be checked without training: names optax must know, the data
    (files exist and read, columns, labels, text and missing values are as the spec
    says) and the metrics early stopping and best checkpoints watch (ones the task
    records), as `run` checks them before any work. Returns notes for the user; raises
    a JaxpipeError on a problem. The memory plan is `jaxpipe plan`'s (it needs flax)."""
    from jaxpipe.core.step import steps_per_epoch
    from jaxpipe.data.load import load_dataset

    check_before_data(spec)
    if spec.hardware.catalog:  # the catalog module imports jax's device API; only if asked
        from jaxpipe.planner.hardware import load_catalog

        load_catalog(spec.hardware, spec.base_dir)
    ds = load_dataset(spec)
    check_schedule(
        spec, steps_per_epoch(ds.x_train.shape[0], spec.training.batch_size) * spec.training.epochs
    )
    check_run_metrics(spec, ds.task)
    what = (
        f"{ds.num_classes} classes ({', '.join(ds.class_names[:10])}"
        f"{', ...' if ds.num_classes > 10 else ''})"
        if ds.task == "classification"
        else f"regression target {ds.label or 'y'}"
    )
    notes = [
        f"data {ds.origin}: {ds.x_train.shape[0]} training + {ds.x_val.shape[0]} validation "
        f"rows, {ds.num_features} encoded features, {what}"
    ]
    if ds.dropped_rows:
        notes.append(f"{ds.dropped_rows} rows with missing values will be dropped")
    return notes


def check_before_data(spec: Spec) -> None:
    """Spec checks that need optax: a bad optimizer section fails before data is read."""
    from jaxpipe.core.optim import check_optimizer

    try:
        check_optimizer(spec.optimizer)
    except SpecError as e:
        raise place_error(spec, e) from None


def check_schedule(spec: Spec, total_steps: int) -> None:
    """The optimizer and its schedule over the run's real length (the check before the
    data used a stand-in length), before the run directory exists."""
    from jaxpipe.core.optim import check_optimizer

    try:
        check_optimizer(spec.optimizer, total_steps)
    except SpecError as e:
        raise place_error(spec, e) from None


def check_run_metrics(spec: Spec, task: str) -> None:
    """The metrics early stopping and best checkpoints watch are ones this task records."""
    from jaxpipe.core.evaluation import metric_names
    from jaxpipe.runner.stopping import check_metric_names

    try:
        check_metric_names(
            spec.training, spec.checkpoint, spec.sweep, metric_names(task == "regression")
        )
    except SpecError as e:
        raise place_error(spec, e) from None
