#!/usr/bin/env bash
# Stage-1 step time on this machine alone and data-parallel, on wiki-vital with the MiniLM-size
# BERT2BERT student (warm start), a global batch of 16 pairs, STEPS steps each (medians of the
# steps after the first two), from work/wiki-s's prepared data:
#   1 rank, 1 thread | 1 rank, 2 threads | 2 ranks x 8 pairs, 1 thread each (launch/multi_node.sh)
# split into compute (forward + backward + optimiser) and all-reduce; prints a Markdown table.
#   scripts/bench/data_parallel_step.sh [STEPS]     (release build: launch/local.sh builds it)
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-12}
job=$PWD/work/dp-bench
mkdir -p "$job"
[ -e "$job/data" ] || ln -s "$PWD/work/wiki-s/data" "$job/data"
cat > "$job/config.toml" <<TOML
[job]
dir = "$job/run"
[train_gen.engine]
steps = $steps
batch_size = 16
learning_rate = 5e-5
warmup_steps = 2
checkpoint_every = 0
TOML
dgr=target/release/dgr
run() { # NAME THREADS [RANKS]
  rm -rf "$job/run" && mkdir -p "$job/run" && ln -s "$job/data" "$job/run/data"
  if [ "${3:-1}" -eq 1 ]; then
    RAYON_NUM_THREADS=$2 $dgr --config "$job/config.toml" train-gen --fresh >"$job/$1.log" 2>&1
  else
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$((30000 + RANDOM % 20000)) NNODES=1 NODE_RANK=0 NPROC_PER_NODE=$3 \
      DGR_TOKEN=bench LAUNCH_BIN=$dgr LAUNCH_HOST=127.0.0.1 LAUNCH_LOG_DIR="$job/$1-logs" RAYON_NUM_THREADS=$2 \
      DGR_TRAIN_GEN__ENGINE__BATCH_SIZE=$((16 / $3)) launch/multi_node.sh train-gen "$job/config.toml"
  fi
  cp "$job/run/stage1/train_log.jsonl" "$job/$1.jsonl"
}
run one-thread 1
run two-threads 2
run two-ranks 1 2
python3 - "$job" <<'PY'
import json, statistics, sys
job = sys.argv[1]
print("| setting | s/step | pairs/s | all-reduce s/step | all-reduce share | vs 1 rank, 1 thread |")
print("|---|---|---|---|---|---|")
base = None
for name, label in [("one-thread", "1 rank, 1 thread"), ("two-threads", "1 rank, 2 threads"), ("two-ranks", "2 ranks x 8 pairs, 1 thread each")]:
    steps = [json.loads(l) for l in open(f"{job}/{name}.jsonl")][2:]
    seconds = statistics.median(s["seconds"] for s in steps)
    reduce = statistics.median(s.get("all_reduce_seconds", 0.0) for s in steps)
    base = base or seconds
    print(f"| {label} | {seconds:.2f} | {16 / seconds:.1f} | {reduce:.3f} | {100 * reduce / seconds:.1f}% | {base / seconds:.2f}x |")
PY
