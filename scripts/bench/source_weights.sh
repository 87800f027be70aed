#!/usr/bin/env bash
# Generative retrieval of one split with one setting of the key source weights
# (`[retrieve.scoring.source_weights]`), into its own job directory that shares JOB's data and
# FM-index, evaluated; then the table of every setting run so far (scripts/bench/sweep_table.py).
#
#   scripts/bench/source_weights.sh JOB MODEL SPLIT NAME [SOURCE=WEIGHT ...]
#
#   JOB    a job directory with data/ and index/ (e.g. work/wiki-vital)
#   MODEL  the stage-1 student (a weights/ or checkpoint model/ directory)
#   NAME   the setting's name: its runs go to JOB/sweep/NAME/
#   SOURCE title, body, pseudo_query, query_span or unigram; a source not given weighs 1 (SEAL's
#          weighting; the embedded default weighs query_span 32)
#
# A setting already evaluated on SPLIT is skipped. LIMIT=N retrieves only the first N queries.
set -euo pipefail
cd "$(dirname "$0")/../.."
job=$(realpath "$1")
model=$(realpath "$2")
split=$3
name=$4
shift 4
dgr=$(realpath target/release/dgr)
dir=$job/sweep/$name
mkdir -p "$dir"
ln -sfn "$job/data" "$dir/data"
ln -sfn "$job/index" "$dir/index"
{
  echo "[job]"
  echo "dir = \"$dir\""
  echo "[retrieve.scoring.source_weights]"
  for source in title body pseudo_query query_span unigram; do
    weight=1
    for setting in "$@"; do
      if [ "${setting%%=*}" = "$source" ]; then weight=${setting#*=}; fi
    done
    echo "$source = $weight"
  done
} > "$dir/config.toml"
if [ ! -f "$dir/runs/gr-$split.trec.eval.json" ]; then
  limit=()
  if [ -n "${LIMIT:-}" ]; then limit=(--limit "$LIMIT"); fi
  DGR_RETRIEVE__MODEL=$model "$dgr" --config "$dir/config.toml" retrieve --split "$split" "${limit[@]}"
  "$dgr" eval --run "$dir/runs/gr-$split.trec" --qrels "$job/data/qrels-$split.tsv" > /dev/null
fi
python3 scripts/bench/sweep_table.py "$job/sweep"
