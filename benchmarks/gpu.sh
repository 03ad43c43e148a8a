#!/usr/bin/env bash
# Every GPU check in one command, for a GPU machine (sized for under 8 minutes on an H200):
#   1. generation at 768 px, 25 steps: stock diffusers fp32 against lanskap's default and each speed
#      lever, with PSNR against full compute and the compute bound (benchmarks/generate.py);
#   2. the fp16 black-image check: no NaN and no all-black picture across samplers at 768 px
#      (benchmarks/blackimage.py);
#   3. training memory and speed at 768 px (benchmarks/train.py).
# SDXL variants join step 1 once lanskap runs SDXL (issue #36). Results go to $OUT (or
# benchmarks/out/gpu); copy the tables into docs/performance.md with the machine's name.
#   bash benchmarks/gpu.sh                 # random weights of SD 2.1's shapes
#   MODEL=/models/sd21 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY=.venv/bin/python
model=()
[ -n "${MODEL:-}" ] && model=(--model "$MODEL")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

timeout 300 "$PY" benchmarks/generate.py "${model[@]}" --sizes 768 --steps 25 --warmup-steps 2 --peak-tflops 989 \
  --variants stock,lanskap,lanskap-fp32,lanskap-quality,lanskap-cache3,lanskap-tome0.5,lanskap-fast \
  --json "$OUT/generate.json" 2>&1 | tee "$OUT/generate.txt" || echo "generate: stopped (timeout or error)"
timeout 90 "$PY" benchmarks/blackimage.py "${model[@]}" --size 768 --steps 4 --json "$OUT/black.json" 2>&1 \
  | tee "$OUT/black.txt" || echo "black-image check: FAILED or stopped"
timeout 90 "$PY" benchmarks/train.py "${model[@]}" --resolution 768 --steps 5 --warmup 1 \
  --variants example,lanskap --json "$OUT/train.json" 2>&1 | tee "$OUT/train.txt" || echo "train: stopped"
echo "results in $OUT"
