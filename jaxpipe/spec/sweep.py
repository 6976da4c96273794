"""The `[sweep]` section: which spec keys vary, over which values, and what ranks the
trials; the trials it expands to. Imports no jax.

    [sweep]
    method = "grid"             # or "random", with trials = N
    metric = "val_loss"         # mode = "auto" | "min" | "max"
    [sweep.values]              # quoted dotted spec keys
    "experiment.seed" = [0, 1, 2, 3]
    "optimizer.learning_rate" = [1e-3, 3e-3]      # random: { log_uniform = [1e-4, 1e-1] }
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jaxpipe.errors import SpecError
from jaxpipe.spec.schema import Section, field
from jaxpipe.spec.sections import OPTIONAL_METRICS, RECORDED_METRICS, metric_mode

__all__ = [
    "SweepSpec",
    "LoggingSpec",
    "MAX_TRIALS",
    "DISTRIBUTIONS",
    "FIXED_KEYS",
    "expand_trials",
    "value_key",
]

# More trials than this need --force: a grid multiplies quickly, and a typo ([1e-4 ...
# 1e-1] written out by hand in 100 steps) should not silently start hours of work.
MAX_TRIALS = 256
DISTRIBUTIONS = ("uniform", "log_uniform", "choice")

# Keys a trial may not change: they name the run, where its data is or how the run is
# kept, not the experiment; sweeping them would make the trials incomparable or clash.
FIXED_KEYS = (
    "experiment.name",
    "data",
    "model.task",
    "checkpoint",
    "runtime",
    "hardware",
    "sweep",
)


# Why each fixed key stays fixed, as the refusal says it.
_FIXED_WHY = {
    "experiment.name": "it names the sweep's directory and tracker runs, shared by every trial",
    "data": "[data] describes where the run's data is and how it is read, not the experiment",
    "model.task": "the task decides the labels' encoding and the metrics the trials are ranked "
    "by, so trials of different tasks cannot be compared",
    "checkpoint": "[checkpoint] describes how a run is kept, not the experiment (sweeps keep "
    "no checkpoints)",
    "runtime": "[runtime] describes how the program is compiled, not the experiment",
    "hardware": "the trials share one program laid over the devices [hardware] describes",
    "sweep": "[sweep] describes the sweep itself",
}


def value_key(key: str) -> str:
    """The spec key path of a swept key, as errors name it: sweep.values."optimizer.lr"."""
    return f'sweep.values."{key}"'


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) and not set(value) & set(DISTRIBUTIONS) and value:
            flat |= _flatten(value, path)
        else:
            flat[path] = value
    return flat


def _check_distribution(key: str, value: Mapping[str, Any]) -> None:
    where = value_key(key)
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise SpecError(
            f"a distribution is one of {{ {' | '.join(f'{d} = [...]' for d in DISTRIBUTIONS)} }}, "
            f"found keys {', '.join(map(repr, value)) or 'none'}",
            key=where,
        )
    kind, args = next(iter(value.items()))
    if not isinstance(args, list) or not args:
        raise SpecError(f"{kind} needs a non-empty list, found {args!r}", key=where)
    if kind == "choice":
        return
    nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(args) != 2 or len(nums) != 2 or not nums[0] < nums[1]:
        raise SpecError(f"{kind} needs [low, high] with low < high, found {args!r}", key=where)
    if kind == "log_uniform" and nums[0] <= 0:
        raise SpecError(f"log_uniform needs low > 0, found {nums[0]!r}", key=where)


def _check_key(key: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", key):
        raise SpecError(
            f"{key!r} is not a dotted spec key such as optimizer.learning_rate",
            key=value_key(key),
        )
    for fixed in FIXED_KEYS:
        if key == fixed or key.startswith(fixed + "."):
            raise SpecError(
                f"{key} cannot be swept: {_FIXED_WHY[fixed]}; remove it from [sweep.values]",
                key=value_key(key),
            )


@dataclass(frozen=True)
class SweepSpec(Section):
    """Many trials of one experiment: grid or random values of dotted spec keys. Trials
    that differ only in the seed, learning rate, optimizer scalars, clip norm or dropout
    train together in one compiled program."""

    method: Literal["grid", "random"] = field(
        "grid", "grid: every combination; random: `trials` draws."
    )
    trials: int | None = field(None, "Number of random draws (method = random).", minimum=1)
    metric: str = field("val_loss", "Metric that ranks the trials (best epoch's value).")
    mode: Literal["auto", "min", "max"] = field(
        "auto", "Whether lower or higher is better; auto: from the name (loss → min)."
    )
    seed: int = field(0, "Seed of the random draws (method = random).", minimum=0)
    values: Mapping[str, Any] = field(
        factory=dict,
        doc="Quoted dotted keys: a list of values, or (random) { log_uniform = [lo, hi] }, "
        "{ uniform = [lo, hi] }, { choice = [...] }.",
    )

    def _check(self, where: str) -> None:
        # `experiment.seed = [...]` written unquoted is a nested table in TOML (and is how
        # a TOML writer may give it back): the same key, so flatten it.
        object.__setattr__(self, "values", _flatten(self.values))
        if not re.fullmatch(r"(train|val)_[a-z0-9_]+", self.metric):
            raise SpecError(
                f"{self.metric!r} is not a metric name; use one of metrics.jsonl's columns, "
                "e.g. val_loss or val_accuracy",
                key=f"{where}.metric",
            )
        tables = (RECORDED_METRICS, OPTIONAL_METRICS)
        recorded = sorted({m for t in tables for names in t.values() for m in names})
        if self.metric not in recorded:  # before its mode: "set mode" would be no fix
            raise SpecError(
                f"unknown metric {self.metric!r}; runs record {', '.join(recorded)} "
                "(val_accuracy for classification, val_rmse for regression)",
                key=f"{where}.metric",
            )
        metric_mode(self.metric, self.mode, f"{where}.mode")
        if not self.values:
            raise SpecError(
                'is empty; list at least one key, e.g. "optimizer.learning_rate" = [1e-3, 1e-2]',
                key=f"{where}.values",
            )
        for key, value in self.values.items():
            _check_key(key)
            if isinstance(value, Mapping):
                if self.method == "grid":
                    raise SpecError(
                        'a distribution needs method = "random"; a grid takes a list',
                        key=value_key(key),
                    )
                _check_distribution(key, value)
            elif not isinstance(value, (list, tuple)) or not value:
                raise SpecError(
                    f"expected a non-empty list of values, found {value!r}", key=value_key(key)
                )
        if self.method == "random" and self.trials is None:
            raise SpecError('method = "random" needs trials = N', key=f"{where}.trials")

    @property
    def better(self) -> str:
        """ "min" or "max": which way the metric improves."""
        return metric_mode(self.metric, self.mode)

    def size(self) -> int:
        """How many trials the sweep expands to."""
        if self.method == "random":
            return int(self.trials or 0)
        return math.prod(len(v) for v in self.values.values())


def _draw(rng: random.Random, value: Any) -> Any:
    if not isinstance(value, Mapping):
        return rng.choice(list(value))
    kind, args = next(iter(value.items()))
    if kind == "choice":
        return rng.choice(list(args))
    lo, hi = float(args[0]), float(args[1])
    if kind == "uniform":
        return rng.uniform(lo, hi)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def expand_trials(sweep: SweepSpec, force: bool = False) -> list[dict[str, Any]]:
    """The trials' values, `{dotted key: value}` each, in a fixed order (a grid varies its
    last key fastest; random draws come from `sweep.seed`). More than MAX_TRIALS trials
    raise SpecError unless `force`."""
    n = sweep.size()
    if n > MAX_TRIALS and not force:
        raise SpecError(
            f"expands to {n} trials, more than {MAX_TRIALS}; trim the values or pass --force",
            key="sweep.values" if sweep.method == "grid" else "sweep.trials",
        )
    keys = list(sweep.values)
    if sweep.method == "grid":
        combos = itertools.product(*(list(sweep.values[k]) for k in keys))
        return [dict(zip(keys, combo, strict=True)) for combo in combos]
    rng = random.Random(sweep.seed)
    return [{k: _draw(rng, sweep.values[k]) for k in keys} for _ in range(n)]


@dataclass(frozen=True)
class LoggingSpec(Section):
    """Experiment tracking (optional extras: jaxpipe[tensorboard], jaxpipe[mlflow])."""

    tensorboard: bool = field(
        False, "TensorBoard event files under <run>/tensorboard/ (a sweep: one run per trial)."
    )
    mlflow: str | None = field(
        None, "MLflow tracking URI or file-store path: params, per-epoch metrics, artifacts."
    )
