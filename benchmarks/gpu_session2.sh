#!/usr/bin/env bash
# Second GPU call of this session: the calibration with a cold and a warm run per
# configuration (separates XLA:GPU's autotuning buffers from the steady-state peak), and
# the seed / large workloads cold, warm, warm (the warm seed epoch measured 5x slower).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp/gpu_session2}; mkdir -p "$DEST"
PY=${PYTHON:-python3}
QUICK=${GPU_CHECK_QUICK:-0}
start=$SECONDS
N=24; [ "$QUICK" != 0 ] && N=2
QF=(); [ "$QUICK" != 0 ] && QF=(--quick)
timeout 250 "$PY" benchmarks/gpu_calibration.py --n $N --jobs 8 --timeout 150 --warm "${QF[@]}" \
  --out "$DEST/calibration" 2>>"$DEST/errors.log" | tee "$DEST/calibration.txt"
echo "== workloads cold, warm, warm; $((SECONDS - start)) s so far"
for w in seed large; do
  export JAXPIPE_CACHE_DIR="$(mktemp -d)"
  for pass in cold warm warm2; do
    GPU_CHECK_QUICK=$QUICK timeout 40 "$PY" benchmarks/gpu_check.py workload $w float32 2>>"$DEST/errors.log" \
      | grep '^{' | cut -c1-900 | sed "s/^{/{\"pass\": \"$pass\", /" | tee -a "$DEST/compile.jsonl"
  done
done
echo "== all done in $((SECONDS - start)) s"
