#!/usr/bin/env bash
# The full DGR job on wiki-vital (configs/wiki-vital.toml) through `dgr run`: data, BM25, the
# FM-index, stage 1 and stage 2 on two data-parallel CPU ranks, retrieval with both students,
# and the table of BM25, GR and DGR on dev and test. Rerun it after an interruption: finished
# stages are kept and training resumes from its newest checkpoint.
#
#   scripts/wiki-vital.sh [CONFIG.toml]     # default configs/wiki-vital.toml
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/wiki-vital.toml}

scripts/fetch-assets.sh
cargo build --release --locked -p dgr-cli --features x86-v4
exec target/release/dgr --config "$config" run
