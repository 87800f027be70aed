#!/usr/bin/env bash
# Soak test of the coordinator: N runs (default 10) of the teacher job over the wiki-vital
# fixture with 3 workers, a random worker killed with SIGKILL up to 6 times per run; every run
# must end with every query scored exactly once, checksums holding, and rank lists equal to a
# single-process run. Prints kills and leases per run.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_RUNS="${1:-10}" cargo test --locked -p dgr-cli --test distributed \
    killed_workers_leave_every_query_scored_exactly_once_as_one_process_would -- --nocapture
