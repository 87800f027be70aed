#!/usr/bin/env bash
# Teacher scoring speed on wiki-vital: the MiniLM bi-encoder over the BM25 top-10 of the 913 dev
# queries (9,130 pairs, shards of 100 queries = 1,000 pairs), in one process, through a
# coordinator with 1 worker (2 threads) and with 2 workers (1 thread each), then
# sentence-transformers on the same pairs (2 threads), which also checks the scores.
#   scripts/bench/teacher_speed.sh            (after launch/local.sh; needs sentence-transformers)
set -euo pipefail
cd "$(dirname "$0")/../.."
dgr=$PWD/target/release/dgr
[ -x "$dgr" ] || cargo build --release -p dgr-cli --features x86-v4
bench=$PWD/work/teacher-bench
rm -rf "$bench" && mkdir -p "$bench/runs"
ln -s "$PWD/work/demo/data" "$bench/data"
cp work/demo/runs/bm25-dev.trec "$bench/runs/"
cat > "$bench/job.toml" <<TOML
[job]
dir = "$bench"
[teacher]
model = "$PWD/assets/minilm"
depth = 10
shard_queries = 100
[coordinator]
bind = "127.0.0.1:7931"
TOML
export DGR_TOKEN=bench-token
cfg=(--config "$bench/job.toml")
measure() { # label, then a command: wall seconds and peak RSS of the command
  local label=$1; shift
  /usr/bin/time -f "$label wall %e s, peak RSS %M KB" "$@" 2>&1 | grep -E "wall|teacher scores written|worker finished" | sed 's/\x1b\[[0-9;]*m//g'
}
measure "one process, 2 threads:" env RAYON_NUM_THREADS=2 "$dgr" "${cfg[@]}" teacher score --split dev
cp -r "$bench/rank_lists/dev" "$bench/single"
for workers in 1 2; do
  threads=$((2 / workers))
  "$dgr" "${cfg[@]}" coordinator --role teacher --split dev --overwrite 2>"$bench/coordinator-$workers.log" &
  coordinator=$!
  sleep 1
  started=$(date +%s.%N)
  for w in $(seq "$workers"); do
    RAYON_NUM_THREADS=$threads "$dgr" "${cfg[@]}" worker --role teacher --split dev \
      --coordinator http://127.0.0.1:7931 --name "w$w" 2>"$bench/worker-$workers-$w.log" &
  done
  # The job is done when the last worker learns it (the coordinator lingers a while after).
  wait $(jobs -p | grep -v "^$coordinator$")
  ended=$(date +%s.%N)
  wait "$coordinator"
  echo "coordinator + $workers worker(s) x $threads thread(s): $(python3 -c "print(f'{9130/($ended-$started):.1f} pairs/s, {$ended-$started:.1f} s (incl. model loading)')")"
  grep -h "worker finished" "$bench"/worker-"$workers"-*.log | sed 's/\x1b\[[0-9;]*m//g' | grep -oE "shards=[0-9]+|compute_seconds=\"[0-9.]+\"|coordinator_seconds=\"[0-9.]+\"|coordinator_share=\"[0-9.%]+\"" | paste -sd' '
done
python3 scripts/bench/teacher_reference.py --data work/demo/data --split dev --rank-lists "$bench/single" \
  --model assets/minilm --threads 2
