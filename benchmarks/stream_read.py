"""The read path of a streamed epoch alone (issue 16): CPU seconds to read, encode and
assemble an epoch's chunks from disk, no model, and a digest of the chunks.

    python benchmarks/stream_read.py [--rows 400000] [--features 50] [--group 5000]
                                     [--epochs 3]

Writes the same Parquet set as benchmarks/stream_bench.py, then iterates
`DiskRows.epoch_chunks` (one lane, batches of 256, 80 steps a chunk) and prints per
epoch: the process's CPU seconds (every thread: pyarrow's decoders, the read-ahead
worker), the CPU seconds of the consuming thread (the one a streamed run's devices wait
for) and the wall seconds. CPU seconds are steadier than wall seconds on a shared
machine; compare two trees by running each tree's copy of this script. The digest of
the chunks must be the same for any version of the read path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--group", type=int, default=5_000)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    from stream_bench import write_data

    from jaxpipe.data.diskrows import DiskRows, ReadSpec, scan_source
    from jaxpipe.data.sources import open_files

    with tempfile.TemporaryDirectory() as tmp:
        write_data(tmp, a.rows, a.features, a.group)
        fs = open_files(os.path.join(tmp, "*.parquet"), "parquet", 32 << 20)
        rs = ReadSpec(fs, "y", None, (), "error", "classification", 1, 0.02, True, 32 << 20)
        rows = DiskRows(rs, scan_source(rs, "standard", tmp), tmp)
        steps = rows.shape[0] // 256
        bounds = [(s, min(s + 80, steps)) for s in range(0, steps, 80)]
        for epoch in range(a.epochs):
            h = hashlib.blake2b(digest_size=8)
            c, tc, t = time.process_time(), time.thread_time(), time.perf_counter()
            for x, y, w in rows.epoch_chunks(epoch, 1, 256, bounds, range(1)):
                h.update(x.tobytes() + y.tobytes() + w.tobytes())
            print(
                f"epoch {epoch}: cpu {time.process_time() - c:.3f} s, consuming thread "
                f"{time.thread_time() - tc:.3f} s, wall {time.perf_counter() - t:.3f} s "
                f"(digest hashing included), digest {h.hexdigest()}"
            )


if __name__ == "__main__":
    main()
