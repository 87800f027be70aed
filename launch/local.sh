#!/usr/bin/env bash
# Runs the configured job on this machine's CPU: fetches the assets, builds `dgr` (release),
# then runs every stage with `dgr run`. With no argument it runs the embedded demo
# (configs/demo.toml: Wikipedia Vital Articles, BM25, stage 1, the teacher, stage 2, and the table
# of BM25 / GR / DGR, sized to half an hour on 2 cores); pass a TOML to layer your own job on top.
# Rerun it after an interruption: finished stages are kept, the interrupted one continues.
# With --ranks N, it runs one training stage as N data-parallel CPU ranks of this machine
# (launch/multi_node.sh on one node; the cores are split between the ranks).
#
#   launch/local.sh                                  # the demo, into work/demo
#   launch/local.sh my-job.toml                      # your job
#   launch/local.sh --ranks 2 train-gen [my-job.toml]  # stage 1 on 2 ranks
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-assets.sh
cargo build --release --locked -p dgr-cli --features x86-v4
if [ "${1:-}" = "--ranks" ]; then
  ranks=${2:?usage: launch/local.sh --ranks N train-gen|train-distill [CONFIG.toml]}
  shift 2
  # A free port for the coordinator, and a secret for this run.
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export MASTER_ADDR=127.0.0.1 MASTER_PORT=$port NNODES=1 NODE_RANK=0 NPROC_PER_NODE=$ranks
  export DGR_TOKEN=${DGR_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
  export LAUNCH_BIN=target/release/dgr LAUNCH_HOST=127.0.0.1 LAUNCH_COORDINATOR_BIND=127.0.0.1:$port
  exec launch/multi_node.sh "$@"
fi
if [ $# -gt 0 ]; then
  exec target/release/dgr run --config "$1"
else
  exec target/release/dgr run
fi
