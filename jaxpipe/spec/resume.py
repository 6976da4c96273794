"""Which spec changes a resumed run may make: pure comparison of two specs as nested
dicts (no jax, no orbax). checkpoint.py re-exports `spec_conflicts`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["spec_conflicts"]

# Keys a resumed run may change freely, or with --force (the training length). Anything
# else under these sections alters the model, optimizer or data and is refused.
_IDENTITY = ("data", "preprocess", "model", "optimizer", "training", "experiment.seed")
_LENGTH = ("training.epochs", "training.early_stopping")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def spec_conflicts(
    saved: Mapping[str, Any], current: Mapping[str, Any], *, force: bool
) -> tuple[list[str], list[str]]:
    """Compares two specs (as nested dicts) for a resume.

    Returns (refused, forced): the differing keys that alter the model, optimizer, data
    or training (refused unless `force` allows them because they only change the training
    length), and the training-length keys `force` let through. Other keys (run name,
    checkpoint and runtime settings, device layout) may change freely.
    """
    a, b = _flatten(saved), _flatten(current)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    refused, forced = [], []
    for key in differing:
        if _under(key, _LENGTH):
            (forced if force else refused).append(key)
        elif _under(key, _IDENTITY):
            refused.append(key)
    return refused, forced
