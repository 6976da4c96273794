#!/usr/bin/env bash
# Third lent card (issue 12): the planner calibration again after the run stopped keeping a
# device copy of its state for checkpoints (snapshots go to pinned host memory): the same
# 24 drawn single-device configurations as the H100 session (seed 0), cold then warm cache.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp/gpu_session3}; mkdir -p "$DEST"
PY=${PYTHON:-python3}
N=${GPU_CHECK_N:-24}; QF=(); [ "${GPU_CHECK_QUICK:-0}" != 0 ] && QF=(--quick)
start=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$DEST/card.txt"
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$DEST/card.txt"
timeout ${GPU_CHECK_TIMEOUT:-330} "$PY" benchmarks/gpu_calibration.py --n "$N" --jobs 8 --timeout 150 --warm "${QF[@]}" \
  --out "$DEST/calibration" 2>>"$DEST/errors.log" | tee "$DEST/calibration.txt"
rm -rf "$DEST"/calibration/runs/*-cache "$DEST"/calibration/runs/*-cold
"$PY" -m jaxpipe.cli calibration "$DEST"/calibration/runs/* > "$DEST/calibration_cmd.txt" 2>&1
tail -5 "$DEST/calibration_cmd.txt"
# Only the summaries come back (checkpoints of multi-GiB states would not).
find "$DEST/calibration/runs" -type f ! -name summary.json -delete 2>/dev/null
echo "== all done in $((SECONDS - start)) s"
# Same card, same configurations, the code before this change (device copy of the state
# for checkpoints), one cold run each: compare with the cold peaks above.
if [ -d gpu_old ] && [ "${GPU_CHECK_OLD:-1}" != 0 ]; then
  timeout ${GPU_CHECK_OLD_TIMEOUT:-170} "$PY" gpu_old/benchmarks/gpu_calibration.py --n "$N" --jobs 8 --timeout 120 "${QF[@]}" \
    --out "$DEST/old" 2>>"$DEST/errors.log" | tee "$DEST/old.txt"
  find "$DEST/old/runs" -type f ! -name summary.json -delete 2>/dev/null
  echo "== old done in $((SECONDS - start)) s"
fi
