#!/usr/bin/env bash
# GPU check for issue 7: device, seed and large workloads through jaxpipe in float32 and
# bfloat16 (steady epoch seconds, samples/s), bf16 and fp32 matmul rooflines, and the
# planner's memory estimate against memory_stats() peak (where jaxpipe.plan exists).
#
#   PYTHONPATH=. bash benchmarks/gpu_check.sh            # from the repo root; < 8 min on an H100
#   GPU_CHECK_QUICK=1 PYTHONPATH=. bash benchmarks/gpu_check.sh   # tiny sizes (CPU smoke test)
#
# Needs jax (with CUDA), flax, optax, orbax; no network, no installs. Writes
# gpu_check.jsonl (one JSON line per check) and gpu_check.log to $OUT (else /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEST=${OUT:-/tmp}
mkdir -p "$DEST"
JSONL="$DEST/gpu_check.jsonl"
LOG="$DEST/gpu_check.log"
: > "$JSONL"
export PYTHONPATH="${PYTHONPATH:-.}"
# A fresh compilation cache: compile seconds here are cold compiles.
export JAXPIPE_CACHE_DIR="$(mktemp -d)"
status=0

run() {  # one check in its own process (so memory_stats() peak is that run's), 150 s cap
  echo "== $*" | tee -a "$LOG"
  if ! timeout 150 "$PY" benchmarks/gpu_check.py "$@" 2>>"$LOG" | tee -a "$JSONL"; then
    echo "FAILED: $*" | tee -a "$LOG"
    status=1
  fi
}

{
  echo "== nvidia-smi"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 \
    || echo "(no nvidia-smi)"
} | tee "$LOG"
start=$SECONDS
run device
run roofline
for w in seed large; do
  for p in float32 bfloat16; do
    run workload "$w" "$p"
  done
done
echo "== done in $((SECONDS - start)) s; results in $JSONL" | tee -a "$LOG"
exit $status
