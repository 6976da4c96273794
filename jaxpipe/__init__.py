"""jaxpipe: functional JAX training pipelines from declarative TOML experiment specs.

The public names load lazily (PEP 562): `import jaxpipe`, `jaxpipe --help`, `--version`
and `schema` stay free of jax, flax and orbax, which only the names that train, plan or
predict bring in. To export a name, add it to `_LAZY`: name -> the module holding it, or
"module:attribute" where the attribute is named differently.
"""

import sys
import types
from importlib import import_module
from typing import Any

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
    "load_spec": "jaxpipe.spec",
    "spec_schema": "jaxpipe.spec",
    "spec_markdown": "jaxpipe.spec",
    "Spec": "jaxpipe.spec",
    "validate": "jaxpipe.validation",
    "predict": "jaxpipe.api",
    "run": "jaxpipe.api",
    "plan": "jaxpipe.api",
    "devices": "jaxpipe.api",
    "launch": "jaxpipe.api",
    "initialize_distributed": "jaxpipe.api",
    "distributed_config": "jaxpipe.api",
    "default_out_dir": "jaxpipe.api",
    "format_plan": "jaxpipe.api",
    "Plan": "jaxpipe.planner",
    "read_calibration": "jaxpipe.calibration",
    "format_calibration": "jaxpipe.calibration",
    "RunResult": "jaxpipe.events",
    "fit": "jaxpipe.api",
    "evaluate": "jaxpipe.api",
    "format_metrics": "jaxpipe.evaluation",
    "Model": "jaxpipe.trained",
    "load_model": "jaxpipe.trained",
    "trace": "jaxpipe.trace:trace_run",
    "format_trace": "jaxpipe.trace_view",
    "write_trace_png": "jaxpipe.trace_view",
    "init_project": "jaxpipe.starter",
    "check_specs": "jaxpipe.speccheck",
    "format_checks": "jaxpipe.speccheck",
    "SpecCheck": "jaxpipe.speccheck",
    "compare": "jaxpipe.api",
    "format_comparison": "jaxpipe.compare",
    "SweepResult": "jaxpipe.sweep",
}

__all__ = [
    "__version__",
    *_LAZY,
    "JaxpipeError",
    "SpecError",
    "DataError",
    "PlanError",
    "DivergedError",
    "EnvironmentProblem",
    "RunDirectoryBusy",
    "RunInterrupted",
    "check_specs",
    "format_checks",
    "SpecCheck",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxpipe' has no attribute {name!r}")
    module, _, attr = _LAZY[name].partition(":")
    value = getattr(import_module(module), attr or name)
    globals()[name] = value  # once resolved, plain attribute access
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    # Importing the submodule jaxpipe.predict (or .launch, .trace) sets the package's
    # attribute of that name to the module, which would shadow the function exported
    # under the same name. The exported function wins, as it did with eager imports.
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
