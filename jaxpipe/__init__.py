"""jaxpipe: functional JAX training pipelines from declarative TOML experiment specs.

The public names load lazily (PEP 562): `import jaxpipe`, `jaxpipe --help`, `--version`
and `schema` stay free of jax, flax and orbax, which only the names that train, plan or
predict bring in. To export a name, add it to `_LAZY`: name -> the module holding it, or
"module:attribute" where the attribute is named differently.
"""

from importlib import import_module as _import_module
from typing import Any as _Any

from jaxpipe._version import __version__
from jaxpipe.errors import (
    DataError,
    DivergedError,
    EnvironmentProblem,
    JaxpipeError,
    PlanError,
    RunDirectoryBusy,
    RunInterrupted,
    SpecError,
)

_LAZY: dict[str, str] = {
    "load_spec": "jaxpipe.spec.experiment",
    "spec_schema": "jaxpipe.spec.experiment",
    "spec_markdown": "jaxpipe.spec.experiment",
    "Spec": "jaxpipe.spec.experiment",
    "predict": "jaxpipe.api",
    "run": "jaxpipe.api",
    "plan": "jaxpipe.api",
    "devices": "jaxpipe.api",
    "launch": "jaxpipe.parallel.launch",
    "initialize_distributed": "jaxpipe.parallel.sharding",
    "distributed_config": "jaxpipe.parallel.sharding",
    "default_out_dir": "jaxpipe.api",
    "format_plan": "jaxpipe.report.verdict",
    "launch_file": "jaxpipe.api",
    "calibrate": "jaxpipe.api",
    "Plan": "jaxpipe.planner.values",
    "read_calibration": "jaxpipe.planner.calibration",
    "format_calibration": "jaxpipe.planner.calibration",
    "RunResult": "jaxpipe.events",
    "StopTraining": "jaxpipe.events",
    "fit": "jaxpipe.api",
    "cross_validate": "jaxpipe.api",
    "CVResult": "jaxpipe.sweep.cv",
    "evaluate": "jaxpipe.api",
    "format_metrics": "jaxpipe.core.evaluation",
    "Model": "jaxpipe.saved.model",
    "load_model": "jaxpipe.saved.model",
    "trace": "jaxpipe.saved.trace:trace_run",
    "format_trace": "jaxpipe.report.trace_view",
    "write_trace_png": "jaxpipe.report.trace_view",
    "init_project": "jaxpipe.spec.starter",
    "check_specs": "jaxpipe.check.specs",
    "format_checks": "jaxpipe.check.specs",
    "SpecCheck": "jaxpipe.check.specs",
    "compare": "jaxpipe.api",
    "format_comparison": "jaxpipe.report.compare",
    "SweepResult": "jaxpipe.sweep.shell",
}

__all__ = [
    "__version__",
    "validate",
    *_LAZY,
    "JaxpipeError",
    "SpecError",
    "DataError",
    "PlanError",
    "DivergedError",
    "EnvironmentProblem",
    "RunDirectoryBusy",
    "RunInterrupted",
]


def validate(spec: _Any) -> list[str]:
    """Checks a spec as `run` checks it before any work, without training: names optax
    must know, the data (files exist and read; columns, labels, text and missing values
    as the spec says), the metrics early stopping and best checkpoints watch, and the
    trackers `[logging]` names (an MLflow URI it could not log to). Returns notes for the
    user; raises JaxpipeError on a problem. Imports neither flax nor orbax (here, not in
    `jaxpipe.api`, for that): the memory plan is `jaxpipe.plan`'s."""
    from jaxpipe.report.tracking import tracking_observers
    from jaxpipe.runner.validation import validate as validate_spec

    notes = validate_spec(spec)
    tracking_observers(spec.logging, spec.base_dir)
    return notes


def __getattr__(name: str) -> _Any:
    if name == "sklearn":  # the scikit-learn estimators: a submodule, loaded on first use
        return _import_module("jaxpipe.sklearn")
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxpipe' has no attribute {name!r}")
    module, _, attr = _LAZY[name].partition(":")
    value = getattr(_import_module(module), attr or name)
    globals()[name] = value  # once resolved, plain attribute access
    return value


def __dir__() -> list[str]:
    """The API only (and `jaxpipe.sklearn`, out of `__all__` so that `import *` needs no
    scikit-learn): not the modules and helpers this file imports."""
    return sorted({*__all__, "sklearn"})
