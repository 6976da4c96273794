"""What a checkpoint snapshot costs the training loop: the pinned-host copy that
`checkpoint.host_copy` makes now (issue 12: no second state on the device) against the
device copy it replaced (`jax.device_put(tree, may_alias=False)`), in one process, on
the same tree, interleaved, as ratios.

Three figures per kind, each the median of --repeat tries:
- copy: the copy alone, to completion (block_until_ready);
- copy+step: the copy, then a donating jitted step on the state (what the next epoch
  does), to completion: what the loop waits for when the copy overlaps the next epoch;
- copy+save: the copy, then orbax writes it (the writer thread's work).

    python benchmarks/snapshot_copy.py [--mib 256] [--leaves 6] [--repeat 5] [--devices 1]

--devices N simulates N CPU devices and replicates the tree over them (as a data-parallel
run's state is). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=256, help="state size (MiB per device)")
    p.add_argument("--leaves", type=int, default=6)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--devices", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = _args()
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxpipe.runner.checkpoint import host_copy

    mesh = jax.make_mesh((args.devices,), ("data",))
    rep = NamedSharding(mesh, PartitionSpec())
    n = args.mib * 2**20 // 4 // args.leaves
    tree = {
        f"w{i}": jax.device_put(jnp.full((n,), i, jnp.float32), rep) for i in range(args.leaves)
    }
    step = jax.jit(lambda t: jax.tree.map(lambda a: a * 1.0001 + 1.0, t), donate_argnums=0)
    tree = jax.block_until_ready(step(tree))
    copies = {
        "device": lambda t: jax.device_put(t, may_alias=False),
        "pinned_host": host_copy,
    }
    out = tempfile.mkdtemp()
    ckpt = ocp.StandardCheckpointer()
    times: dict[str, dict[str, list[float]]] = {k: {} for k in copies}
    for r in range(args.repeat + 1):  # the first round warms up (compiles, allocators)
        for kind, copy in copies.items():  # interleaved: machine drift hits both kinds
            t0 = time.perf_counter()
            snap = jax.block_until_ready(copy(tree))
            t1 = time.perf_counter()
            del snap
            t2 = time.perf_counter()
            snap = copy(tree)
            tree = jax.block_until_ready(step(tree))
            jax.block_until_ready(snap)
            t3 = time.perf_counter()
            path = os.path.join(out, f"{kind}{r}")
            t4 = time.perf_counter()
            ckpt.save(path, copy(tree))
            ckpt.wait_until_finished()
            t5 = time.perf_counter()
            shutil.rmtree(path)
            if r:
                for name, s in (("copy", t1 - t0), ("copy+step", t3 - t2), ("copy+save", t5 - t4)):
                    times[kind].setdefault(name, []).append(s)
    shutil.rmtree(out)
    med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in times.items()}
    ratio = {n: med["pinned_host"][n] / med["device"][n] for n in med["device"]}
    print(
        json.dumps(
            {
                "bench": "snapshot_copy",
                "mib_per_device": args.mib,
                "devices": args.devices,
                "platform": jax.devices()[0].platform,
                "seconds": med,
                "ratio_pinned_host_over_device": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
