#!/usr/bin/env bash
# Does distillation help? From one stage-1 student S on wiki-vital:
#   (a) S trained T more steps with stage 1 only (`dgr train-gen`, init = S, stage 2's learning rate),
#   (b) S trained T steps with stage 2 (`dgr train-distill`, DGR's distilled RankNet),
# each retrieving dev and test, beside BM25, S itself and the teacher re-ranking S's candidates
# (the ceiling). Stage 2 uses the first Q train queries that S retrieves for.
#   scripts/bench/distill_vs_stage1.sh STUDENT [T [Q [ABLATION]]]
# STUDENT: a stage-1 model directory (a checkpoint's model/); the job BASE (default work/wiki-s;
# its data/ and index/) provides the data. ABLATION: a name; only (b) runs again, into work/dgr-exp/b-ABLATION, with the
# settings given as environment variables, e.g.
#   DGR_TRAIN_DISTILL__LOSS__KIND=listnet scripts/bench/distill_vs_stage1.sh S 400 1000 listnet
# PARTS="s ceiling b a" (the default) picks the parts to run: s = BM25 and S; ceiling (after s);
# b; a. Two parts can run at once in two shells with THREADS=1 each (THREADS=2, the default, suits
# one).
# EXP (default work/dgr-exp) is where the arms go. SPLITS="dev" retrieves dev only (ablations are chosen on dev; test once, for the chosen one).
# Every finished part is kept and skipped on a rerun. Results: work/dgr-exp/results.md (scripts/bench/distill_table.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
student=$(realpath "$1")
steps=${2:-400}
train_queries=${3:-1000}
ablation=${4:-}
base=$(realpath "${BASE:-work/wiki-s}")
exp=${EXP:-work/dgr-exp}
dgr=$(realpath target/release/dgr)
parts=${PARTS:-s ceiling b a}
export RAYON_NUM_THREADS=${THREADS:-2} DGR_RETRIEVE__THREADS=${THREADS:-2} DGR_BM25__THREADS=${THREADS:-2}
warmup=$((steps / 10))

# A job directory sharing the base job's data and FM-index.
job() {
  mkdir -p "$exp/$1"
  ln -sfn "$base/data" "$exp/$1/data"
  ln -sfn "$base/index" "$exp/$1/index"
}
# retrieve_eval JOB MODEL: dev and test runs of MODEL, evaluated.
retrieve_eval() {
  for split in ${SPLITS-dev test}; do
    [ -f "$exp/$1/runs/gr-$split.trec.eval.json" ] && continue
    DGR_RETRIEVE__MODEL="$2" "$dgr" --config "$exp/$1/config.toml" retrieve --split "$split"
    "$dgr" eval --run "$exp/$1/runs/gr-$split.trec" --qrels "$base/data/qrels-$split.tsv"
  done
}

if [ -n "$ablation" ]; then
  name=b-$ablation
  job "$name"
  mkdir -p "$exp/$name/candidates" "$exp/$name/rank_lists"
  ln -sfn "$(realpath $exp/b/candidates/train)" "$exp/$name/candidates/train"
  ln -sfn "$(realpath $exp/b/rank_lists/train)" "$exp/$name/rank_lists/train"
  sed "s|dir = \"$exp/b\"|dir = \"$exp/$name\"|" "$exp/b/config.toml" > "$exp/$name/config.toml"
  env | grep '^DGR_' | sort > "$exp/$name/settings.env" || true
  [ -f "$exp/$name/stage2/weights/final/model.safetensors" ] ||
    "$dgr" --config "$exp/$name/config.toml" train-distill --fresh
  retrieve_eval "$name" "$(realpath $exp/$name/stage2/weights/final)"
  exit 0
fi

# BM25 and S.
if [[ " $parts " == *" s "* ]]; then
  job s
  cat > "$exp/s/config.toml" <<TOML
[job]
dir = "$exp/s"
[teacher]
candidates = "gr"
depth = 20
TOML
  for split in dev test; do
    [ -f "$exp/s/runs/bm25-$split.trec.eval.json" ] && continue
    [ -d "$exp/s/bm25" ] || "$dgr" --config "$exp/s/config.toml" bm25 index
    "$dgr" --config "$exp/s/config.toml" bm25 search --split "$split"
    "$dgr" eval --run "$exp/s/runs/bm25-$split.trec" --qrels "$base/data/qrels-$split.tsv"
  done
  retrieve_eval s "$student"
fi

# The ceiling: the teacher re-orders S's best 20 candidates (the rest of S's run follows).
if [[ " $parts " == *" ceiling "* ]]; then
  for split in dev test; do
    [ -f "$exp/s/runs/teacher-$split.trec.eval.json" ] && continue
    "$dgr" --config "$exp/s/config.toml" teacher score --split "$split"
    python3 scripts/bench/rank_lists_to_trec.py "$exp/s/rank_lists/$split" "$exp/s/runs/gr-$split.trec" \
      "$exp/s/runs/teacher-$split.trec"
    "$dgr" eval --run "$exp/s/runs/teacher-$split.trec" --qrels "$base/data/qrels-$split.tsv"
  done
fi

# (b) stage 2: candidates of Q train queries from S, the teacher's rank lists, T steps.
if [[ " $parts " == *" b "* ]]; then
  job b
  cat > "$exp/b/config.toml" <<TOML
[job]
dir = "$exp/b"
[retrieve]
model = "$student"
[teacher]
candidates = "gr"
depth = 20
[train_distill]
student = "$student"
[train_distill.engine]
steps = $steps
warmup_steps = $warmup
checkpoint_every = $steps
eval_every = 0
TOML
  [ -f "$exp/b/candidates/train/candidates.json" ] ||
    "$dgr" --config "$exp/b/config.toml" retrieve --split train --limit "$train_queries"
  [ -f "$exp/b/rank_lists/train/manifest.json" ] || "$dgr" --config "$exp/b/config.toml" teacher score --split train
  [ -f "$exp/b/stage2/weights/final/model.safetensors" ] || "$dgr" --config "$exp/b/config.toml" train-distill --fresh
  retrieve_eval b "$(realpath $exp/b/stage2/weights/final)"
fi

# (a) stage 1 continued: the same steps, learning rate and warm-up, batch 16 of stage-1 pairs.
if [[ " $parts " == *" a "* ]]; then
  job a
  cat > "$exp/a/config.toml" <<TOML
[job]
dir = "$exp/a"
[train_gen]
init = "$student"
[train_gen.engine]
steps = $steps
batch_size = 16
learning_rate = 1e-5
warmup_steps = $warmup
checkpoint_every = $steps
eval_every = 0
TOML
  [ -f "$exp/a/stage1/weights/final/model.safetensors" ] || "$dgr" --config "$exp/a/config.toml" train-gen --fresh
  retrieve_eval a "$(realpath $exp/a/stage1/weights/final)"
fi

python3 scripts/bench/distill_table.py "$exp" | tee "$exp/results.md"
