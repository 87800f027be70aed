#!/usr/bin/env bash
# Side-by-side model speed: dgr (Burn flex) and PyTorch on the same shapes, same machine, same
# thread counts, in one run. Prints JSON lines; docs/benchmarks.md holds a summary.
#   pip install torch transformers sentence-transformers
#   scripts/bench/model_speed.sh [threads...]      (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/fetch-assets.sh >/dev/null
cargo bench -p dgr-model --bench speed --no-run --locked 2>/dev/null
for threads in "${@:-1 2}"; do
  for bench in encoder train-tiny train-minilm; do
    RAYON_NUM_THREADS=$threads cargo bench -q -p dgr-model --bench speed -- "$bench" 2>/dev/null \
      | sed "s/^{/{\"threads\": $threads, /"
    python3 scripts/bench/model_speed_torch.py --threads "$threads" "$bench" 2>/dev/null \
      | sed "s/^{/{\"threads\": $threads, /"
  done
done
