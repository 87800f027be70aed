#!/usr/bin/env bash
# How the MiniLM-size student's train step grows with batch size and source length, dgr (flex
# with AVX-512 kernels, as launch/local.sh builds it) next to PyTorch, same threads, one run.
#   scripts/bench/scaling.sh [threads]        (default: 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
dgr=$(scripts/bench/bench_binary.sh x86-v4)
export RAYON_NUM_THREADS=$threads DGR_BENCH_REPEATS=${DGR_BENCH_REPEATS:-3}
for shape in "8 64" "16 64" "32 64" "16 32" "16 128"; do
  read -r batch source <<<"$shape"
  export DGR_BENCH_BATCH=$batch DGR_BENCH_SOURCE=$source DGR_BENCH_TARGET=16
  "$dgr" train-minilm | sed 's/burn flex/burn flex x86-v4/'
  python3 scripts/bench/model_speed_torch.py --threads "$threads" train-minilm 2>/dev/null
done | sed "s/^{/{\"threads\": $threads, /"
