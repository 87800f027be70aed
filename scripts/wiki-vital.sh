#!/usr/bin/env bash
# The stage-1 quality run on wiki-vital (configs/wiki-vital.toml): data and BM25 (`dgr run`),
# the FM-index, stage 1 on two data-parallel CPU ranks, then generative retrieval of dev and
# test, evaluated beside BM25. Rerun it after an interruption: finished stages are kept and
# training resumes from its newest checkpoint.
#
#   scripts/wiki-vital.sh [CONFIG.toml]     # default configs/wiki-vital.toml
#
# RANKS (default 2) sets the number of training ranks; the cores are split between them.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/wiki-vital.toml}
ranks=${RANKS:-2}

scripts/fetch-assets.sh
cargo build --release --locked -p dgr-cli --features x86-v4
dgr=target/release/dgr
job=${DGR_JOB__DIR:-$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("job", {}).get("dir", "work/demo"))' "$config")}

# Data, BM25 and its evaluation (kept when current), the FM-index.
"$dgr" --config "$config" run
[ -f "$job/index/index.json" ] || "$dgr" --config "$config" index build

# Stage 1, resumable; a finished run is kept.
if [ ! -f "$job/stage1/weights/final/model.safetensors" ]; then
  launch/local.sh --ranks "$ranks" train-gen "$config"
fi

# Generative retrieval of dev and test with the stage-1 student.
for split in dev test; do
  "$dgr" --config "$config" retrieve --split "$split"
  "$dgr" eval --run "$job/runs/gr-$split.trec" --qrels "$job/data/qrels-$split.tsv"
done
