"""Statistics of a streamed training split in one pass: everything `encoding.fit_encoder`
and `preprocess.fit_scaler` fit on rows in memory, accumulated block by block.

Min-max and the one-hot vocabularies are exact (a min of float32 values is the float32
of the float64 min; a vocabulary is a set). Means and variances merge the blocks'
partial moments with Chan, Golub and LeVeque's pairwise update (numerically stable:
no E[x²] − E[x]² cancellation), in float64, so they equal the in-memory float32 fit to
fp32 tolerance. The scaler's statistics are those of the *encoded* columns, derived
from the raw ones without a second pass: an imputed numeric column adds its missing
rows at the mean; a one-hot column is three point masses (1, 0 and, imputed, the
category's frequency).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from jaxpipe.core.scaling import Scaler
from jaxpipe.data.encoding import ColumnCode, Columns, FeatureEncoder, encode_labels, missing_mask
from jaxpipe.errors import DataError

__all__ = ["Moments", "StreamFit"]


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations (M2) of a set of values."""

    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        if values.size == 0:
            return cls()
        v = values.astype(np.float64)
        mean = float(v.mean())
        return cls(float(v.size), mean, float(np.square(v - mean).sum()))

    @classmethod
    def point(cls, n: float, value: float) -> Moments:
        return cls(float(n), float(value), 0.0) if n else cls()

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets (Chan et al. 1979)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        return Moments(n, mean, self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0


@dataclass
class _Numeric:
    moments: Moments = Moments()  # of the float32 values the encoded matrix holds
    raw: Moments = Moments()  # of the float64 values: the imputation mean, as in memory
    lo: float = np.inf
    hi: float = -np.inf
    missing: int = 0

    def merge(self, o: _Numeric) -> None:
        self.moments, self.raw = self.moments.merge(o.moments), self.raw.merge(o.raw)
        self.lo, self.hi, self.missing = (
            min(self.lo, o.lo),
            max(self.hi, o.hi),
            self.missing + o.missing,
        )

    def add(self, col: np.ndarray) -> None:
        miss = np.isnan(col)
        raw = col[~miss]
        present = raw.astype(np.float32)  # the encoded matrix is float32
        self.missing += int(miss.sum())
        self.moments = self.moments.merge(Moments.of(present))
        self.raw = self.raw.merge(Moments.of(raw))
        if present.size:
            self.lo, self.hi = (
                min(self.lo, float(present.min())),
                max(self.hi, float(present.max())),
            )


@dataclass
class _Categorical:
    counts: Counter = field(default_factory=Counter)
    missing: int = 0

    def merge(self, o: _Categorical) -> None:
        self.counts.update(o.counts)
        self.missing += o.missing

    def add(self, col: np.ndarray) -> None:
        miss = missing_mask(col)
        self.missing += int(miss.sum())
        self.counts.update(col[~miss].tolist())


class StreamFit:
    """Accumulates a training split's statistics block by block: `add(feats, y)` with
    prepared feature columns (`data.prepare_features`, after the missing-value policy)
    and their labels; `add_labels(y)` for rows of either split (class names come from
    all rows, as in memory). Then `encoder()`, `scaler(kind)` and `target()`."""

    def __init__(self, kinds: dict[str, str], impute: bool, task: str, label: str, origin: str):
        self.kinds, self.impute, self.task = kinds, impute, task
        self.label, self.origin = label, origin
        self.cols = {n: _Numeric() if k == "numeric" else _Categorical() for n, k in kinds.items()}
        self.rows = 0
        self._labels: list[np.ndarray] = []
        self._target = Moments()

    def add(self, feats: Columns, y: np.ndarray) -> None:
        for name, acc in self.cols.items():
            acc.add(feats[name])
        self.rows += len(y)
        if self.task == "regression":
            self._target = self._target.merge(Moments.of(y.astype(np.float32)))

    def merge(self, other: StreamFit) -> None:
        """Adds another block set's statistics (another process's share)."""
        if other.kinds != self.kinds:
            raise DataError(
                f"{self.origin}: the files' columns read as different kinds "
                f"({self.kinds} and {other.kinds}); list text columns in data.categorical"
            )
        for name, acc in self.cols.items():
            acc.merge(other.cols[name])
        self.rows += other.rows
        self._labels += other._labels
        self._target = self._target.merge(other._target)

    def add_labels(self, y: np.ndarray) -> None:
        if self.task == "classification" and len(y):
            self._labels.append(
                np.unique(y) if y.dtype.kind in "fiub" else np.array(list(set(y)), object)
            )

    def classes(self) -> tuple[str, ...]:
        """The class names, exactly as `encoding.encode_labels` names them in memory."""
        if self.task != "classification":
            return ()
        kinds = {a.dtype.kind in "fiub" for a in self._labels}
        values = (
            np.concatenate(self._labels)
            if len(kinds) == 1
            else np.concatenate([a.astype(object) for a in self._labels])
        )
        try:
            return encode_labels(values, self.label)[1]
        except DataError as e:
            raise DataError(f"{self.origin}: {e}") from None

    def encoder(self) -> FeatureEncoder:
        codes = []
        for name, acc in self.cols.items():
            if isinstance(acc, _Numeric):
                if self.impute and acc.moments.n == 0:
                    raise DataError(
                        f"{self.origin}: column {name!r} has no values in the training split "
                        "to impute from"
                    )
                codes.append(ColumnCode(name, "numeric", (), (acc.raw.mean,)))
                continue
            cats = sorted(str(c) for c in acc.counts)
            total = max(sum(acc.counts.values()), 1)
            freq = tuple(acc.counts[c] / total for c in cats)
            codes.append(ColumnCode(name, "categorical", tuple(cats), freq))
        return FeatureEncoder(tuple(codes), self.impute)

    def _encoded(self, code: ColumnCode) -> list[tuple[Moments, list[float]]]:
        """Per encoded column: its moments and the values bounding its min and max."""
        acc = self.cols[code.name]
        filled = acc.missing if self.impute else 0
        if isinstance(acc, _Numeric):
            fill = float(np.float32(code.fill[0]))
            m = acc.moments.merge(Moments.point(filled, fill))
            ends = [acc.lo, acc.hi] + ([fill] if filled else [])
            return [(m, [e for e in ends if np.isfinite(e)] or [0.0])]
        present = sum(acc.counts.values())
        out = []
        for cat, f in zip(code.categories, code.fill):
            ones, f32 = acc.counts[cat], float(np.float32(f))
            m = Moments.point(ones, 1.0).merge(Moments.point(present - ones, 0.0))
            m = m.merge(Moments.point(filled, f32))
            ends = [1.0] * bool(ones) + [0.0] * bool(present - ones) + [f32] * bool(filled)
            out.append((m, ends))
        return out

    def scaler(self, kind: str, encoder: FeatureEncoder) -> Scaler:
        """`preprocess.fit_scaler(kind, x)` of the encoded training split, as float32."""
        stats = [s for code in encoder.columns for s in self._encoded(code)]
        width = len(stats)
        if kind == "minmax":
            lo = np.float32([min(e) for _, e in stats])
            spread = np.float32([max(e) for _, e in stats]) - lo
            return Scaler(lo, np.where(spread > 0, spread, np.float32(1)).astype(np.float32))
        if kind == "standard":
            std = np.float32([m.std for m, _ in stats])
            return Scaler(
                np.float32([m.mean for m, _ in stats]),
                np.where(std > 0, std, np.float32(1)).astype(np.float32),
            )
        return Scaler(np.zeros(width, np.float32), np.ones(width, np.float32))

    def target(self) -> Scaler | None:
        """A regression target's standardisation (`fit_standard` of y), else None."""
        if self.task != "regression":
            return None
        m = self._target
        return Scaler(np.float32([m.mean]), np.float32([m.std if m.std > 0 else 1.0]))
