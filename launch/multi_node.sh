#!/usr/bin/env bash
# Runs one training stage data-parallel: one command per node, every node the same command,
# from the directory the job's relative paths start at.
# Node 0 also runs the training coordinator (the rendezvous and watch of the ranks); every node
# starts NPROC_PER_NODE ranks. The job resumes from its newest checkpoint when one exists.
#
#   launch/multi_node.sh train-gen|train-distill [CONFIG.toml]
#
# The node's place comes from torchrun's variables, or from Slurm's when those are unset:
#   MASTER_ADDR     node 0's address          (Slurm: the first host of SLURM_JOB_NODELIST)
#   MASTER_PORT     the coordinator's port    (default 29500)
#   NNODES          nodes in the job          (Slurm: SLURM_NNODES)
#   NODE_RANK       this node's index         (Slurm: SLURM_NODEID)
#   NPROC_PER_NODE  ranks on each node        (Slurm: SLURM_NTASKS_PER_NODE unless it is 1; default 1)
# and (DGR_* variables other than DGR_TOKEN are configuration keys, so the script's own
# options are LAUNCH_*):
#   DGR_TOKEN       shared secret of the job, the same on every node (required)
#   LAUNCH_BIN         the dgr program (default: this checkout's target/release/dgr, else dgr on PATH)
#   LAUNCH_HOST        address the other nodes reach this one at (default: the route to MASTER_ADDR)
#   LAUNCH_LOG_DIR     per-rank logs (default: logs/)
#   LAUNCH_COORDINATOR_BIND  the coordinator's listening address (default 0.0.0.0:MASTER_PORT)
#
# SIGTERM or SIGUSR1 to this script is passed on: every rank finishes its step, one checkpoint
# of that step is written, and the script exits 75 (rerun it to resume). Exit codes are those of
# `dgr` (docs/operations.md): 0 done, 75 stopped with a checkpoint, 69 another rank failed
# (relaunch to resume), 1 an error.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

stage=${1:?usage: launch/multi_node.sh train-gen|train-distill [CONFIG.toml]}
case "$stage" in
  train-gen|train-distill) ;;
  *) echo "launch/multi_node.sh: unknown stage '$stage' (train-gen, train-distill)" >&2; exit 2 ;;
esac
config=()
if [ $# -ge 2 ]; then config=(--config "$2"); fi

if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
fi
master_addr=${MASTER_ADDR:?set MASTER_ADDR (node 0), or run under Slurm}
master_port=${MASTER_PORT:-29500}
nnodes=${NNODES:-${SLURM_NNODES:-1}}
node_rank=${NODE_RANK:-${SLURM_NODEID:-0}}
nproc=${NPROC_PER_NODE:-${SLURM_NTASKS_PER_NODE:-1}}
world=$((nnodes * nproc))
: "${DGR_TOKEN:?set DGR_TOKEN to one secret shared by every node of the job}"
export DGR_TOKEN
# Every process of the job states the same world size (it is part of the job's fingerprint).
export DGR_RANKS__WORLD_SIZE=$world

if [ -n "${LAUNCH_BIN:-}" ]; then
  dgr=$LAUNCH_BIN
elif [ -x "$repo/target/release/dgr" ]; then
  dgr=$repo/target/release/dgr
else
  dgr=dgr
fi
log_dir=${LAUNCH_LOG_DIR:-logs}
mkdir -p "$log_dir"
# The node's cores are split between its ranks.
cores=$(nproc)
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-$(( cores / nproc > 0 ? cores / nproc : 1 ))}

pids=()
if [ "$node_rank" -eq 0 ]; then
  bind=${LAUNCH_COORDINATOR_BIND:-0.0.0.0:$master_port}
  "$dgr" "${config[@]}" coordinator --role train --stage "$stage" --bind "$bind" \
    >"$log_dir/coordinator.log" 2>&1 &
  pids+=($!)
fi
host=()
if [ -n "${LAUNCH_HOST:-}" ]; then host=(--host "$LAUNCH_HOST"); fi
for ((local_rank = 0; local_rank < nproc; local_rank++)); do
  "$dgr" "${config[@]}" "$stage" --coordinator "http://$master_addr:$master_port" \
    --node-rank "$node_rank" --local-rank "$local_rank" "${host[@]}" \
    >"$log_dir/rank-$node_rank-$local_rank.log" 2>&1 &
  pids+=($!)
done
echo "node $node_rank of $nnodes: $nproc rank(s) of $world, coordinator http://$master_addr:$master_port, logs in $log_dir/" >&2

forward() {
  echo "launch/multi_node.sh: $1: every rank stops after its current step with a checkpoint" >&2
  kill "-$1" "${pids[@]}" 2>/dev/null || true
}
trap 'forward TERM' TERM
trap 'forward USR1' USR1
trap 'forward INT' INT

# Wait for every process (a trap interrupts `wait`, so wait again until all are gone).
status=0
for pid in "${pids[@]}"; do
  while true; do
    set +e
    wait "$pid"
    code=$?
    set -e
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
  done
  # The most telling code wins: an error, then a failed peer, then a stop.
  case "$code" in
    0) ;;
    75) if [ "$status" -eq 0 ]; then status=75; fi ;;
    69) if [ "$status" -eq 0 ] || [ "$status" -eq 75 ]; then status=69; fi ;;
    *) status=$code ;;
  esac
done
if [ "$status" -ne 0 ]; then
  echo "launch/multi_node.sh: node $node_rank ends with exit code $status; see $log_dir/" >&2
fi
exit "$status"
