#!/usr/bin/env bash
# Streams 10 and 100 frames of 1920x1080 (all with anomaly regions, so AUPRO works on every
# frame) through one binned Evaluator and prints the peak RSS (VmHWM) and CPU time. Flat RSS
# means memory does not grow with the number of frames; CPU time / pixels is the cost per pixel
# independent of how busy the machine is.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench eval --no-run >/dev/null 2>&1
TIMEFORMAT='  cpu: user %U s, sys %S s, wall %R s'
for n in 10 100; do
  time STARS_EVAL_MEMORY_FRAMES=$n cargo bench --bench eval 2>/dev/null | grep '^frames'
done
