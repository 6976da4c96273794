"""`jaxpipe validate`, and the checks a run makes before any work: what can be checked
without training.

Kept out of `api.py` so that validating a spec imports neither flax nor orbax nor the
training loop: only optax (which needs jax; the optimizer check runs one optax update),
numpy, and pyarrow when the data is a file.
"""

from __future__ import annotations

from jaxpipe.errors import SpecError
from jaxpipe.spec.experiment import Spec, SpecOrigin
from jaxpipe.spec.sections import CheckpointSpec, OptimizerSpec, TrainingSpec
from jaxpipe.spec.sweep import SweepSpec

__all__ = ["validate", "check_before_data", "check_schedule", "check_run_metrics"]


def validate(spec: Spec) -> list[str]:
    """Checks what can be checked without training: names optax must know, the data
    (files exist and read, columns, labels, text and missing values are as the spec
    says) and the metrics early stopping and best checkpoints watch (ones the task
    records), as `run` checks them before any work. Returns notes for the user; raises
    a JaxpipeError on a problem. The memory plan is `jaxpipe plan`'s (it needs flax)."""
    from jaxpipe.core.step import steps_per_epoch
    from jaxpipe.data.load import load_dataset

    check_before_data(spec.optimizer, spec.origin)
    if spec.hardware.catalog:  # the catalog module imports jax's device API; only if asked
        from jaxpipe.planner.hardware import load_catalog

        load_catalog(spec.hardware, spec.base_dir)
    ds = load_dataset(spec)
    steps = steps_per_epoch(ds.x_train.shape[0], spec.training.batch_size)
    check_schedule(spec.optimizer, steps * spec.training.epochs, spec.origin)
    check_run_metrics(spec.training, spec.checkpoint, spec.sweep, ds.task, spec.origin)
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


def check_before_data(optimizer: OptimizerSpec, origin: SpecOrigin) -> None:
    """Spec checks that need optax: a bad optimizer section fails before data is read.
    `origin`: the spec's (`Spec.origin`), where its error is placed."""
    from jaxpipe.core.optim import check_optimizer

    try:
        check_optimizer(optimizer)
    except SpecError as e:
        raise origin.place(e) from None


def check_schedule(optimizer: OptimizerSpec, total_steps: int, origin: SpecOrigin) -> None:
    """The optimizer and its schedule over the run's real length (the check before the
    data used a stand-in length), before the run directory exists."""
    from jaxpipe.core.optim import check_optimizer

    try:
        check_optimizer(optimizer, total_steps)
    except SpecError as e:
        raise origin.place(e) from None


def check_run_metrics(
    training: TrainingSpec,
    checkpoint: CheckpointSpec,
    sweep: SweepSpec | None,
    task: str,
    origin: SpecOrigin,
) -> None:
    """The metrics early stopping and best checkpoints watch (`[training]`,
    `[checkpoint]`, a sweep's objective) are ones this task records."""
    from jaxpipe.core.evaluation import metric_names
    from jaxpipe.runner.stopping import check_metric_names

    try:
        check_metric_names(training, checkpoint, sweep, metric_names(task == "regression"))
    except SpecError as e:
        raise origin.place(e) from None
