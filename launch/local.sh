#!/usr/bin/env bash
# Runs the configured job on this machine's CPU: fetches the assets, builds `dgr` (release),
# then runs every pipeline stage. With no argument it runs the embedded demo (configs/demo.toml:
# Wikipedia Vital Articles, BM25 baseline, evaluation); pass a TOML to layer your own job on top.
#
#   launch/local.sh                 # the demo, into work/demo
#   launch/local.sh my-job.toml     # your job
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-assets.sh
cargo build --release --locked -p dgr-cli --features x86-v4
if [ $# -gt 0 ]; then
  exec target/release/dgr run --config "$1"
else
  exec target/release/dgr run
fi
