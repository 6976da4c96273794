#!/usr/bin/env bash
# Stored programs on a GPU (issue 14): the seed run twice on one fresh cache; the second
# must load jaxpipe-aot/ and train bit for bit as the first. Prints compile seconds and
# per-epoch seconds of both runs.   PYTHONPATH=. bash benchmarks/gpu_aot_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-/tmp/gpu_aot}; mkdir -p "$DEST"
export JAXPIPE_CACHE_DIR="$(mktemp -d)"
for r in a b c; do
  timeout 60 "$PY" -m jaxpipe run experiments/seed.toml --out "$DEST/$r" -q 2>&1 | tail -3
  "$PY" - "$DEST/$r" <<'PY'
import json, sys
d = sys.argv[1]
s = json.load(open(d + "/summary.json"))
h = [json.loads(l) for l in open(d + "/metrics.jsonl")]
print(d[-1], "compile_s", round(s["compile_seconds"], 3), "cache", s.get("compilation_cache"),
      "epochs_s", [round(r["epoch_seconds"], 4) for r in h], "val_acc", s["final"]["val_accuracy"])
PY
done
ls "$JAXPIPE_CACHE_DIR" "$JAXPIPE_CACHE_DIR/jaxpipe-aot" 2>&1 | head -20
cmp "$DEST/a/model.msgpack" "$DEST/b/model.msgpack" && echo "a == b bit for bit"
cmp "$DEST/a/model.msgpack" "$DEST/c/model.msgpack" && echo "a == c bit for bit"
