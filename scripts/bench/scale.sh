#!/usr/bin/env bash
# How each stage's wall time and peak memory grow with the corpus: synthetic wiki-vital corpora
# (scripts/bench/synthetic_wiki.py: the real articles and their queries, then word-shuffled
# copies) through the stages, each under /usr/bin/time -v.
#   scripts/bench/scale.sh [SIZES...]        (default: 10033 100000 500000)
# Stages measured so far: prepare; stage 1 (`dgr train-gen`) to its second step, one rank, the
# configs/wiki-vital.toml settings. Results: work/scale/results.tsv (binary label, size, stage,
# seconds, peak RSS in KiB), one line per measurement, appended. BIN (default target/release/dgr)
# and LABEL (default "new") measure another build side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=${*:-10033 100000 500000}
dgr=$(realpath "${BIN:-target/release/dgr}")
label=${LABEL:-new}
out=work/scale
mkdir -p "$out"
export RAYON_NUM_THREADS=${THREADS:-2}

# measure SIZE STAGE COMMAND...: runs it under /usr/bin/time -v, appends a result line.
measure() {
  local size=$1 stage=$2
  shift 2
  /usr/bin/time -v "$@" 2> "$out/$label-$size-$stage.log" > /dev/null || { tail -20 "$out/$label-$size-$stage.log"; exit 1; }
  local seconds rss
  seconds=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$out/$label-$size-$stage.log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out/$label-$size-$stage.log")
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$size" "$stage" "$seconds" "$rss" | tee -a "$out/results.tsv"
}

for size in $sizes; do
  job=$out/job-$label-$size
  input=$out/wiki-$size.json
  [ -f "$input" ] || python3 scripts/bench/synthetic_wiki.py "$size" "$input"
  rm -rf "$job"
  export DGR_JOB__DIR=$job
  measure "$size" prepare "$dgr" --config configs/wiki-vital.toml prepare --format wiki-vital "$input"
  DGR_RANKS__WORLD_SIZE=1 DGR_TRAIN_GEN__ENGINE__EVAL_EVERY=0 DGR_TRAIN_GEN__ENGINE__CHECKPOINT_EVERY=0 \
    measure "$size" stage1-to-step-2 "$dgr" --config configs/wiki-vital.toml train-gen --steps 2 --fresh
  grep -o 'stage-1 training pairs.*\|built stage-1 training pairs.*' "$out/$label-$size-stage1-to-step-2.log" | head -1 || true
done
