"""A sweep chunk's planned per-device memory (sweepplan.py) against XLA's figure for the
vmapped epoch program it compiles (argument + output + temp − alias, per device), for a
learning-rate sweep of 1, 2, 4 and 8 trials on one device and 8 trials on 8 devices.

Prints one JSON line per case with the ratio estimate ÷ XLA (a memory figure, no timing):

    python benchmarks/sweep_memory.py [--hidden 256,256] [--rows 4608]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SPEC = """
[experiment]
name = "sweep-memory"
seed = 1
[data]
source = "synthetic"
validation = {val}
[data.synthetic]
rows = {rows}
features = 32
classes = 4
[model]
hidden = [{hidden}]
task = "classification"
[optimizer]
name = "adam"
[training]
epochs = 1
batch_size = 256
[hardware]
devices = {devices}
[sweep]
[sweep.values]
"optimizer.learning_rate" = [{rates}]
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--rows", type=int, default=4608)
    args = parser.parse_args()
    import jaxpipe.sweep.train as sweeptrain
    from jaxpipe.spec.experiment import load_spec
    from jaxpipe.sweep.shell import plan_trials

    compile_trials, compiled = sweeptrain.compile_trials, []

    def spy(*a, **k):
        tp = compile_trials(*a, **k)
        m = tp.epoch.memory_analysis()  # per device
        size = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
        compiled.append(size - m.alias_size_in_bytes)
        return tp

    sweeptrain.compile_trials = spy
    with tempfile.TemporaryDirectory() as tmp:
        for trials, devices in [(1, 1), (2, 1), (4, 1), (8, 1), (8, 8)]:
            rates = ", ".join(str(0.001 * (i + 1)) for i in range(trials))
            text = SPEC.format(val=args.rows // 9, rows=args.rows, hidden=args.hidden,
                               devices=devices, rates=rates)  # fmt: skip
            path = os.path.join(tmp, f"s{trials}_{devices}.toml")
            with open(path, "w") as f:
                f.write(text)
            groups, inputs = plan_trials(load_spec(path))
            split, _ = sweeptrain.train_group(groups[0], inputs, lambda *a: None)
            print(json.dumps({
                "trials": trials, "devices": devices,
                "estimate_bytes": split.per_device_bytes, "xla_bytes": compiled[-1],
                "ratio": round(split.per_device_bytes / compiled[-1], 4),
            }))  # fmt: skip


if __name__ == "__main__":
    main()
