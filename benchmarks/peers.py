"""One benchmark peer per process: `python benchmarks/peers.py PEER --data D.npz ...`.

Each peer trains the same MLP (ReLU hidden layers, softmax cross-entropy, Adam) on the
same host data (the .npz the harness writes: raw x_train, y_train, x_val, y_val), with
the same batch size and epochs, evaluating on the validation split after every epoch, and
prints one JSON line: per-epoch seconds (train + validation), final validation accuracy,
parameter count. The harness times the whole process and reads its peak RSS.

Peers: jaxpipe (the public API on a spec), jax_ref (the hand-written reference: a jitted
`lax.scan` epoch over device-resident data), torch (an eager loop), keras (Keras 3 on its
JAX backend, `model.fit`), sklearn (`MLPClassifier.partial_fit`, one epoch per call),
roofline (fp32 GFLOP/s of large matmuls), csv (pyarrow through jaxpipe vs pandas).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

EVAL_BATCH = 1024


def _load(path: str):
    d = np.load(path)
    x, y, xv, yv = d["x_train"], d["y_train"], d["x_val"], d["y_val"]
    lo, hi = x.min(0), x.max(0)  # min-max fitted on the training split, as jaxpipe does
    scale = np.where(hi > lo, hi - lo, 1.0)
    return ((x - lo) / scale).astype(np.float32), y, ((xv - lo) / scale).astype(np.float32), yv


def _params(features: int, hidden: list[int], classes: int) -> int:
    widths = [features, *hidden, classes]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def peer_torch(a) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(a.seed)
    x, y, xv, yv = (torch.from_numpy(v) for v in _load(a.data))
    y, yv = y.long(), yv.long()
    layers, width = [], x.shape[1]
    for h in a.hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    classes = int(max(y.max(), yv.max())) + 1
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, classes))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    times, acc = [], 0.0
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x))
        total = torch.zeros(())
        for i in range(0, len(x), a.batch):
            idx = perm[i : i + a.batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)  # no per-step .item(): no host sync
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(xv[i : i + EVAL_BATCH]).argmax(1) == yv[i : i + EVAL_BATCH]).sum())
                for i in range(0, len(xv), EVAL_BATCH)
            )
        acc = correct / len(xv)
        _ = float(total)
        times.append(time.perf_counter() - t0)
    return {"epoch_seconds": times, "val_accuracy": acc, "threads": torch.get_num_threads()}


def peer_keras(a) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(a.seed)
    x, y, xv, yv = _load(a.data)
    classes = int(max(y.max(), yv.max())) + 1
    model = keras.Sequential(
        [keras.Input((x.shape[1],))]
        + [keras.layers.Dense(h, activation="relu") for h in a.hidden]
        + [keras.layers.Dense(classes)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(a.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after the validation pass
            times.append(time.perf_counter() - self.t0)

    hist = model.fit(
        x,
        y,
        batch_size=a.batch,
        epochs=a.epochs,
        validation_data=(xv, yv),
        validation_batch_size=EVAL_BATCH,
        shuffle=True,
        verbose=0,
        callbacks=[Clock()],
    )
    return {"epoch_seconds": times, "val_accuracy": float(hist.history["val_accuracy"][-1])}


def peer_sklearn(a) -> dict:
    from sklearn.neural_network import MLPClassifier

    x, y, xv, yv = _load(a.data)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(a.hidden),
        batch_size=a.batch,
        learning_rate_init=a.lr,
        solver="adam",
        random_state=a.seed,
        shuffle=True,
    )
    classes = np.unique(np.concatenate([y, yv]))
    times, acc = [], 0.0
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        clf.partial_fit(x, y, classes=classes)  # one pass over the data in minibatches
        acc = float(clf.score(xv, yv))
        times.append(time.perf_counter() - t0)
    return {"epoch_seconds": times, "val_accuracy": acc}


def peer_jax_ref(a) -> dict:
    """The best hand-written JAX loop for the job: data device-resident, the whole epoch
    one jitted `lax.scan` (per-step gather of the shuffled rows), state donated."""
    import jax
    import jax.numpy as jnp
    import optax

    x, y, xv, yv = jax.device_put(_load(a.data))
    classes = int(max(y.max(), yv.max())) + 1
    widths = [x.shape[1], *a.hidden, classes]
    keys = jax.random.split(jax.random.key(a.seed), len(widths))
    params = [
        (jax.random.normal(k, (i, o)) * jnp.sqrt(2.0 / i), jnp.zeros(o))
        for k, i, o in zip(keys, widths[:-1], widths[1:])
    ]
    tx = optax.adam(a.lr)
    rows, b = x.shape[0], a.batch
    steps = rows // b  # full batches only: the simplest loop a user would write

    def apply(p, xb):
        for w, bias in p[:-1]:
            xb = jax.nn.relu(xb @ w + bias)
        return xb @ p[-1][0] + p[-1][1]

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xb), yb).mean()

    @jax.jit
    def epoch(p, o, x, y, key):
        idx = jax.random.permutation(key, rows)[: steps * b].reshape(steps, b)

        def body(c, i):
            p, o, total = c
            loss, g = jax.value_and_grad(loss_fn)(p, x[i], y[i])
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o, total + loss), None

        (p, o, total), _ = jax.lax.scan(body, (p, o, jnp.zeros(())), idx)
        return p, o, total / steps

    epoch = jax.jit(epoch.__wrapped__, donate_argnums=(0, 1))

    @jax.jit
    def accuracy(p, xv, yv):
        n = xv.shape[0] // EVAL_BATCH * EVAL_BATCH
        xs = xv[:n].reshape(-1, EVAL_BATCH, xv.shape[1])
        hits = jax.lax.map(lambda xb: apply(p, xb).argmax(-1), xs).reshape(-1) == yv[:n]
        tail = apply(p, xv[n:]).argmax(-1) == yv[n:]
        return (hits.sum() + tail.sum()) / xv.shape[0]

    o = tx.init(params)
    times, acc = [], 0.0
    for e in range(a.epochs):
        t0 = time.perf_counter()
        params, o, loss = epoch(params, o, x, y, jax.random.key(e))
        acc = float(accuracy(params, xv, yv))
        float(loss)
        times.append(time.perf_counter() - t0)
    return {"epoch_seconds": times, "val_accuracy": acc}


def peer_jaxpipe(a) -> dict:
    import tempfile

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import jaxpipe

    spec = jaxpipe.load_spec(a.spec, a.set)
    with tempfile.TemporaryDirectory() as out:
        r = jaxpipe.run(spec, out=os.path.join(out, "run"))
    return {
        "epoch_seconds": [h["epoch_seconds"] for h in r.history],
        "val_accuracy": r.final["val_accuracy"],
        "compile_seconds": r.summary["compile_seconds"],
        "stages": {s["name"]: s["seconds"] for s in r.summary["stages"]},
    }


def peer_roofline(a) -> dict:
    """fp32 GFLOP/s of a large square matmul (jax/XLA and, if present, torch)."""
    import jax
    import jax.numpy as jnp

    n = a.n
    out = {}
    k1, k2 = jax.random.split(jax.random.key(0))
    m1 = jax.random.normal(k1, (n, n), jnp.float32)
    m2 = jax.random.normal(k2, (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(m1, m2).block_until_ready()
    ts = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        mm(m1, m2).block_until_ready()
        ts.append(time.perf_counter() - t0)
    out["jax_gflops"] = 2 * n**3 / sorted(ts)[len(ts) // 2] / 1e9
    out["jax_gflops_best"] = 2 * n**3 / min(ts) / 1e9
    try:
        import torch

        t1, t2 = torch.from_numpy(np.asarray(m1)), torch.from_numpy(np.asarray(m2))
        t1 @ t2
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            t1 @ t2
            ts.append(time.perf_counter() - t0)
        out["torch_gflops"] = 2 * n**3 / sorted(ts)[len(ts) // 2] / 1e9
    except ImportError:
        pass
    out["n"] = n
    return out


def peer_csv(a) -> dict:
    """Seconds to read the same CSV: jaxpipe.data.read_csv (pyarrow) and pandas, interleaved."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import pandas as pd

    from jaxpipe.data.readers import read_csv

    res: dict[str, list[float]] = {"jaxpipe": [], "pandas": []}
    for _ in range(a.repeats):
        for name, fn in (("jaxpipe", read_csv), ("pandas", pd.read_csv)):
            t0 = time.perf_counter()
            fn(a.data)
            res[name].append(time.perf_counter() - t0)
    return {k + "_seconds": sorted(v)[len(v) // 2] for k, v in res.items()}


PEERS = {
    "jaxpipe": peer_jaxpipe,
    "jax_ref": peer_jax_ref,
    "torch": peer_torch,
    "keras": peer_keras,
    "sklearn": peer_sklearn,
    "roofline": peer_roofline,
    "csv": peer_csv,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("peer", choices=sorted(PEERS))
    p.add_argument("--data")
    p.add_argument("--spec")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[128, 128])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    out = PEERS[a.peer](a)
    print("RESULT " + json.dumps({"peer": a.peer, **out}), flush=True)


if __name__ == "__main__":
    main()
