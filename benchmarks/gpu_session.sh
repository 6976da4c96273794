#!/usr/bin/env bash
# This session's GPU checks in one call (the lent card's time is short; each part capped):
#   1. issue 12: the planner's estimate vs XLA:GPU vs the measured peak over 24 drawn
#      single-device configurations (benchmarks/gpu_calibration.py);
#   2. issue 14: seed and large epochs ÷ the hand-written lax.scan (same process,
#      interleaved), per-step latency, a batch-size sweep of the large model
#      (benchmarks/epoch_ratio.py), and compile seconds cold and warm (gpu_check.py).
#   PYTHONPATH=. bash benchmarks/gpu_session.sh      # writes to $OUT (else /tmp/gpu_session)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp/gpu_session}; mkdir -p "$DEST"
PY=${PYTHON:-python3}
QUICK=${GPU_CHECK_QUICK:-0}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$DEST/device.txt"
"$PY" -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tail -1 | tee -a "$DEST/device.txt"
start=$SECONDS
# Part 2 first: its timings want a quiet card.
echo "== epochs vs hand-written scan (issue 14)"
R=7; [ "$QUICK" != 0 ] && R=2
Q=(); [ "$QUICK" != 0 ] && Q=(--set data.synthetic.rows=3000 --set data.validation=500)
for s in experiments/seed.toml benchmarks/large.toml; do
  timeout 60 "$PY" benchmarks/epoch_ratio.py "$s" --repeats $R "${Q[@]}" 2>>"$DEST/errors.log" \
    | grep RESULT | tee -a "$DEST/epoch_ratio.jsonl"
done
echo "== batch sweep of the large model (issue 14)"
for b in 64 256 1024 4096 16384; do
  timeout 40 "$PY" benchmarks/epoch_ratio.py benchmarks/large.toml --repeats 5 "${Q[@]}" \
    --set training.batch_size=$b 2>>"$DEST/errors.log" | grep RESULT | tee -a "$DEST/batch_sweep.jsonl"
done
echo "== compile cold then warm (issue 14), $((SECONDS - start)) s so far"
export JAXPIPE_CACHE_DIR="$(mktemp -d)"
for pass in cold warm; do
  GPU_CHECK_QUICK=$QUICK timeout 60 "$PY" benchmarks/gpu_check.py workload seed float32 2>>"$DEST/errors.log" \
    | grep '^{' | sed "s/^{/{\"pass\": \"$pass\", /" | tee -a "$DEST/compile.jsonl"
done
unset JAXPIPE_CACHE_DIR
echo "== planner calibration (issue 12), $((SECONDS - start)) s so far"
N=24; [ "$QUICK" != 0 ] && N=2
QF=(); [ "$QUICK" != 0 ] && QF=(--quick)
timeout 300 "$PY" benchmarks/gpu_calibration.py --n $N --jobs 6 --timeout 200 "${QF[@]}" \
  --out "$DEST/calibration" 2>>"$DEST/errors.log" | tee "$DEST/calibration.txt"
timeout 30 "$PY" -m jaxpipe calibration "$DEST"/calibration/runs/* > "$DEST/jaxpipe_calibration.txt" 2>&1
tail -5 "$DEST/jaxpipe_calibration.txt"
echo "== all done in $((SECONDS - start)) s"
