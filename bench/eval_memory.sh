#!/usr/bin/env bash
# Peak RSS of the streaming evaluator for 10 and 100 frames of 1920x1080 (binned mode).
# Flat numbers mean memory does not grow with the number of frames.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench eval --no-run >/dev/null 2>&1
for n in 10 100; do
  STARS_EVAL_MEMORY_FRAMES=$n cargo bench --bench eval 2>/dev/null | grep '^frames'
done
