#!/usr/bin/env bash
# Stage-2 step time split (encoder, key scoring, loss, backward, optimiser), checkpoint write and
# resume time and size, on wiki-vital with a MiniLM-size student: the job of
# scripts/bench/key_scoring.sh (run it first), 96 train queries retrieved and ranked by the MiniLM
# bi-encoder, 20 stage-2 steps with a checkpoint every 10, then a resume that adds 5 steps.
#   scripts/bench/stage2_step.sh [student]     (BENCH_PROFILE=dev: see key_scoring.sh; the
#   student defaults to the key_scoring.sh job's own)
set -euo pipefail
cd "$(dirname "$0")/../.."
student=$(realpath "${1:-work/bench-keys/stage1/weights/final}")
profile=${BENCH_PROFILE:-release}
bin=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
job=work/bench-keys
cat > "$job/stage2.toml" <<TOML
[job]
dir = "$job"
[retrieve]
model = "$student"
[teacher]
candidates = "gr"
depth = 30
[train_distill]
student = "$student"
min_negatives = 15
[train_distill.engine]
steps = 20
checkpoint_every = 10
eval_every = 0
TOML
dgr="$bin/dgr --config $job/stage2.toml"
$dgr retrieve --split train --limit 96
$dgr teacher score --split train
RAYON_NUM_THREADS=2 $dgr train-distill --fresh 2>&1 | grep -E "stage-2 training queries|checkpoint written" | sed 's/\x1b\[[0-9;]*m//g'
RAYON_NUM_THREADS=2 $dgr train-distill --steps 25 2>&1 | grep -E "resuming|checkpoint written" | sed 's/\x1b\[[0-9;]*m//g'
python3 - "$job/stage2/train_log.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # the first step warms up
keys = ["encoder_seconds", "key_scoring_seconds", "loss_seconds", "backward_seconds", "optimizer_seconds", "seconds"]
print(json.dumps({k: round(statistics.median(r[k] for r in rows), 4) for k in keys} | {"steps": len(rows)}))
PY
