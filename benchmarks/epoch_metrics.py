"""What the optional epoch metrics cost per epoch, against the same run without them, side
by side in one run of this script.

    python benchmarks/epoch_metrics.py [--epochs 8] [--validation 2000] [--repeats 2]

experiments/seed.toml (12,000 × 50 synthetic rows, 4 classes, MLP 128-128, batch 128)
with `validation` rows held out, run in this process twice per repeat, alternating:
  base    the spec as it is: val_loss and val_accuracy from running sums
  scored  `[training] metrics` = all six optional metrics (val_roc_auc, val_pr_auc,
          val_f1_macro, val_f1_weighted, val_balanced_accuracy, val_log_loss): the
          evaluation also returns every validation row's probabilities, scored on the host
The figure is the median `epoch_seconds` over epochs 2.. (the first runs the compile's
warm-up) of each mode's fastest repeat; the ratio is scored / base. Prints one JSON line
per mode and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SEED_SPEC = os.path.join(ROOT, "experiments", "seed.toml")
ALL = (
    '["val_roc_auc","val_pr_auc","val_f1_macro","val_f1_weighted",'
    '"val_balanced_accuracy","val_log_loss"]'
)


def _epoch_seconds(jaxpipe, overrides: list[str], out: str) -> float:
    spec = jaxpipe.load_spec(SEED_SPEC, overrides)
    result = jaxpipe.run(spec, out, verbose=False)
    return statistics.median(r["epoch_seconds"] for r in result.history[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--validation", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import jaxpipe

    common = [f"training.epochs={args.epochs}", f"data.validation={args.validation}"]
    modes = {"base": common, "scored": [*common, f"training.metrics={ALL}"]}
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, overrides in modes.items():
                s = _epoch_seconds(jaxpipe, overrides, os.path.join(tmp, f"{name}{r}"))
                best[name] = min(best.get(name, s), s)
    import jax

    device = str(jax.devices()[0].device_kind)
    for name, s in best.items():
        print(json.dumps({"mode": name, "epoch_seconds": s, "device": device, **vars(args)}))
    print(json.dumps({"ratio_scored_to_base": best["scored"] / best["base"]}))


if __name__ == "__main__":
    main()
