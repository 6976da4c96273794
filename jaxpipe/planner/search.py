"""The closed-form search: per (strategy, device count) the best mesh and its estimate,
and the fewest devices that fit. Bounded by the model, never by the device count asked
about, so `--devices 10**12` answers as fast as `--devices 2`."""

from __future__ import annotations

import dataclasses
import math

from jaxpipe.data.shapes import Shapes
from jaxpipe.planner import xlafit
from jaxpipe.planner.memory import Estimate, estimate
from jaxpipe.planner.state import abstract_state
from jaxpipe.planner.values import Workload
from jaxpipe.spec.hardware import MAX_DEVICES
from jaxpipe.spec.strategy import DATA, Strategy

__all__ = ["Search", "UNVERIFIED", "GPU_RUNTIME_BYTES", "divisors"]

# Strategies whose closed form is not held within 10 % of XLA: FSDP's per-device program
# keeps less per layer than the one-device program at the same per-device batch, by an
# amount that shifts with the sizes (its figures ran -34 … +60 % against XLA:CPU; see
# benchmarks/RESULTS.md). The plan says so beside them; `--verify` compiles them.
UNVERIFIED = tuple(s for s in Strategy if not s.held_by_closed_form)


def divisors(n: int) -> list[int]:
    """The divisors of n ≥ 1, ascending (O(√n))."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


# XLA:GPU's autotuner runs while compiling, on a cold compilation cache, and its scratch
# buffers go through the same allocator as the run's: fitted from the H100 calibration
# (benchmarks/RESULTS.md, 24 configs): cold-cache peak − warm-cache peak was 0 … 159 MiB
# (median 96), independent of the model's size. Part of every GPU plan's need, as a
# breakdown entry of its own ("runtime"); cuBLAS workspaces are inside XLA's temp.
GPU_RUNTIME_BYTES = 160 * 2**20


def _with_runtime(e: Estimate, runtime: int) -> Estimate:
    if not runtime:
        return e
    return dataclasses.replace(
        e,
        breakdown=dict(e.breakdown) | {"runtime": runtime},
        total=e.total + runtime,
        total_no_donation=e.total_no_donation + runtime,
    )


class Search:
    """Estimates of every (strategy, device count), memoised. `usable`: bytes per device."""

    def __init__(
        self,
        work: Workload,
        shapes: Shapes,
        usable: int,
        batch: int | None = None,
        fit: bool = True,
        runtime: int = 0,
    ):
        self.work, self.shapes, self.usable = work, shapes, usable
        self.batch = batch or work.training.batch_size
        self.abstract = abstract_state(work, shapes)
        # The per-layer units fitted to XLA's one-device compile (xlafit.py), unless
        # `fit` is false (then, and past xlafit.MAX_LAYERS, the table's own).
        self.fit = (
            xlafit.fit(work, shapes, self.abstract, self.batch)
            if fit
            else xlafit.Fit(1.0, None, 0, "closed form only (not fitted)")
        )
        hidden = tuple(work.model.hidden)
        # Tensor parallelism splits every column-parallel width (hidden_0, hidden_2, ...):
        # the model-axis size must divide their gcd.
        self.tensor_gcd = math.gcd(*hidden[::2]) if hidden else 0
        self.runtime = runtime  # per-device bytes outside the program (GPU_RUNTIME_BYTES)
        self._memo: dict[tuple[Strategy, int], Estimate | None] = {}

    def meshes(self, strategy: Strategy | str, n: int) -> list[tuple[int, int]]:
        """The (data, model) meshes of exactly n devices `strategy` can use."""
        strategy = Strategy.parse(strategy)
        if strategy is Strategy.SINGLE:
            return [(1, 1)] if n == 1 else []
        if not strategy.model_parallel:
            return [(n, 1)] if 1 <= n <= self.batch else []
        if strategy is Strategy.TENSOR:
            return [(1, n)] if self.tensor_gcd and self.tensor_gcd % n == 0 else []
        if not self.tensor_gcd:
            return []
        return [
            (n // m, m)
            for m in divisors(self.tensor_gcd)
            if m >= 2 and n % m == 0 and 2 <= n // m <= self.batch
        ]

    def why_not(self, strategy: Strategy | str, n: int) -> str | None:
        """Why `strategy` has no layout over exactly `n` devices (None when it has one)."""
        strategy = Strategy.parse(strategy)
        if self.meshes(strategy, n):
            return None
        if strategy is Strategy.SINGLE:
            return f"single runs on one device, not {n}"
        if not strategy.model_parallel:
            return f"{n} devices split a batch of {self.batch} rows (each device needs one)"
        if not self.tensor_gcd:
            return "the model has no hidden layer to split over a model axis"
        ok = [m for m in divisors(self.tensor_gcd) if m >= 2][:6]
        widths = "hidden_0" if len(self.work.model.hidden) < 3 else "hidden_0, hidden_2, …"
        what = (
            f"the model axis ({n}) must divide"
            if strategy is Strategy.TENSOR
            else f"no data × model split of {n}: the model axis must divide"
        )
        counts = ", ".join(map(str, ok)) if ok else "none"
        return (
            f"{what} the column-parallel widths ({widths}: greatest common divisor "
            f"{self.tensor_gcd}); model-axis sizes that do: {counts}"
        )

    def at(self, strategy: Strategy | str, n: int) -> Estimate | None:
        """The best mesh of `n` devices for `strategy` (least bytes per device), or None."""
        strategy = Strategy.parse(strategy)
        key = (strategy, n)
        if key not in self._memo:
            hidden = self.work.model.hidden
            ests = [
                estimate(
                    self.work.model,
                    self.work.training,
                    self.shapes,
                    self.abstract,
                    strategy,
                    mesh := strategy.mesh(d, m),
                    self.batch,
                    scale=self.fit.for_layout(hidden, strategy, mesh),
                )
                for d, m in self.meshes(strategy, n)
            ]
            best = min(ests, key=lambda e: (e.total, -e.mesh.get(DATA, 1)), default=None)
            self._memo[key] = best if best is None else _with_runtime(best, self.runtime)
        return self._memo[key]

    def fits(self, strategy: Strategy | str, n: int) -> bool:
        e = self.at(strategy, n)
        return e is not None and e.total <= self.usable

    def min_devices(self, strategy: Strategy | str, limit: int = MAX_DEVICES) -> int | None:
        """The fewest devices (≤ limit) on which `strategy` fits: 1..8 one by one, then
        powers of two, then a bisection below the first power that fits (the per-device
        bytes fall with the count, so the bisection finds the edge in ~12 estimates)."""
        strategy = Strategy.parse(strategy)
        if strategy is Strategy.SINGLE:
            return 1 if self.fits(strategy, 1) else None
        limit = min(limit, MAX_DEVICES)
        if strategy is Strategy.TENSOR:  # only divisors of the column widths' gcd are meshes
            counts = [n for n in divisors(self.tensor_gcd or 1) if n <= limit]
            return next((n for n in counts if self.fits(strategy, n)), None)
        if strategy.model_parallel:  # 2-D: every count up to 64, then powers of two
            counts = [*range(4, min(limit, 64) + 1), *(2**k for k in range(7, 13) if 2**k <= limit)]
            return next((n for n in counts if self.fits(strategy, n)), None)
        small = [n for n in range(1, min(limit, 8) + 1) if self.fits(strategy, n)]
        if small:
            return small[0]
        lo, hi = 8, None
        for k in range(4, 13):
            if 2**k > limit:
                break
            if self.fits(strategy, 2**k):
                hi = 2**k
                break
            lo = 2**k
        if hi is None:
            return limit if lo < limit and self.fits(strategy, limit) else None
        while hi - lo > 1:  # lo does not fit, hi does
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.fits(strategy, mid) else (mid, hi)
        return hi
