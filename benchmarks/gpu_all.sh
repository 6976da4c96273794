#!/usr/bin/env bash
# Every GPU check in one call (the lent GPU's time is short): the planner's estimate vs
# XLA vs the measured peak (issue 4), seed and a large MLP under single and data
# (issue 5), and the performance check (issue 7). Each part has its own time cap; all
# output lands in $OUT (else /tmp).   PYTHONPATH=. bash benchmarks/gpu_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp}; mkdir -p "$DEST"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$DEST/device.txt"
"$PY" -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee -a "$DEST/device.txt"
echo "== planner (issue 4)"
timeout 170 "$PY" benchmarks/plan_gpu_check.py 2>&1 | tee "$DEST/plan_gpu_check.txt"
echo "== sharding (issue 5)"
timeout 150 "$PY" benchmarks/gpu_sharding_check.py 2>&1 | grep -v Warning | tee "$DEST/gpu_sharding_check.txt"
echo "== performance (issue 7)"
PYTHON="$PY" timeout 230 bash benchmarks/gpu_check.sh 2>&1 | tail -40 | tee "$DEST/gpu_check_tail.txt"
echo "== all done"
