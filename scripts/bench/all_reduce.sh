#!/usr/bin/env bash
# CPU all-reduce between processes of this machine, side by side: dgr's TCP ring
# (crates/dgr-collective/benches/all_reduce.rs, release build) and torch.distributed's gloo
# (scripts/bench/all_reduce_gloo.py), 1 to 256 MiB of f32, median of REPEATS timed runs.
# Prints a Markdown table of the algorithm bandwidth (buffer bytes / seconds) and the ratio.
#
#   scripts/bench/all_reduce.sh [RANKS [REPEATS]]     # needs: pip install torch
set -euo pipefail
cd "$(dirname "$0")/../.."
ranks=${1:-2}
repeats=${2:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo bench -q -p dgr-collective --bench all_reduce -- "$ranks" "$repeats" >"$out/dgr.jsonl" 2>/dev/null
python3 scripts/bench/all_reduce_gloo.py "$ranks" "$repeats" >"$out/gloo.jsonl"
python3 - "$out/dgr.jsonl" "$out/gloo.jsonl" <<'PY'
import json, sys
dgr = [json.loads(l) for l in open(sys.argv[1])]
gloo = [json.loads(l) for l in open(sys.argv[2])]
print(f"| MiB | dgr ring GB/s | {gloo[0]['impl']} GB/s | dgr / gloo |")
print("|---|---|---|---|")
for a, b in zip(dgr, gloo):
    assert a["bytes"] == b["bytes"]
    print(f"| {a['bytes'] >> 20} | {a['bytes_per_second'] / 1e9:.2f} | {b['bytes_per_second'] / 1e9:.2f} | "
          f"{a['bytes_per_second'] / b['bytes_per_second']:.2f}x |")
PY
