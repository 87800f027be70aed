#!/usr/bin/env bash
# Builds the dgr-model speed bench with the given cargo features and prints the binary's path.
#   scripts/bench/bench_binary.sh [features]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p dgr-model --bench speed --no-run --locked ${1:+--features "$1"} --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "speed":
        print(m["executable"])'
