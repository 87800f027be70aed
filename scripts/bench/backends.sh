#!/usr/bin/env bash
# Burn's CPU backends side by side with PyTorch on the same shapes and threads, in one run:
# flex with glibc's malloc defaults, flex (freed memory kept, the default), flex with AVX-512
# matrix kernels (feature x86-v4), ndarray with OpenBLAS.
# Needs libopenblas-dev (apt) and pip install torch transformers sentence-transformers.
#   scripts/bench/backends.sh [threads...]        (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch-assets.sh >/dev/null
flex=$(scripts/bench/bench_binary.sh)
v4=$(scripts/bench/bench_binary.sh x86-v4)
blas=$(scripts/bench/bench_binary.sh openblas)
for threads in "${@:-1 2}"; do
  export RAYON_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
  tag() { sed "s/^{/{\"threads\": $threads, /"; }
  for bench in encoder train-minilm; do
    DGR_BENCH_GLIBC_DEFAULTS=1 "$flex" "$bench" | sed 's/burn flex/burn flex, glibc malloc defaults/' | tag
    "$flex" "$bench" | tag
    "$v4" "$bench" | sed 's/burn flex/burn flex x86-v4/' | tag
    DGR_BENCH_BACKEND=ndarray "$blas" "$bench" | tag
    python3 scripts/bench/model_speed_torch.py --threads "$threads" "$bench" 2>/dev/null | tag
  done
done
