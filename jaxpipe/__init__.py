"""jaxpipe: functional JAX training pipelines from declarative TOML experiment specs."""

from jaxpipe._version import __version__
from jaxpipe.api import (
    default_out_dir,
    devices,
    distributed_config,
    format_plan,
    initialize_distributed,
    launch,
    plan,
    predict,
    run,
    validate,
)
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
from jaxpipe.loop import RunResult
from jaxpipe.planner import Plan
from jaxpipe.spec import Spec, load_spec, spec_markdown, spec_schema

__all__ = [
    "__version__",
    "load_spec",
    "spec_schema",
    "spec_markdown",
    "predict",
    "run",
    "validate",
    "plan",
    "devices",
    "launch",
    "initialize_distributed",
    "distributed_config",
    "default_out_dir",
    "format_plan",
    "Plan",
    "PlanError",
    "Spec",
    "RunResult",
    "JaxpipeError",
    "SpecError",
    "DataError",
    "DivergedError",
    "EnvironmentProblem",
    "RunDirectoryBusy",
    "RunInterrupted",
]
