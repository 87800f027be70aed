#!/usr/bin/env bash
# The project's test command (README, CI): fetches the assets, runs every test (the whole `dgr
# run` chain among them, on a fixture with a tiny student), then runs the demo job up to BM25 on
# the real wiki-vital set and checks that the baseline lands where the reference implementation
# puts it (rank_bm25: R@5 ~77-79 on dev/test; a large gap is a bug).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-assets.sh
cargo test --workspace --locked

job=$(mktemp -d)
trap 'rm -rf "$job"' EXIT
# Every dev and test query (the demo evaluates its first 100), as the reference was measured.
DGR_JOB__DIR="$job" DGR_RUN__EVAL_QUERIES=0 target/debug/dgr run --until bm25
python3 - "$job/results.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
assert results["format"] == "dgr.results" and results["version"] == 1, results
rows = results["rows"]
assert {r["split"] for r in rows} == {"dev", "test"} and {r["system"] for r in rows} == {"bm25"}, rows
for r in rows:
    m = r["metrics"]
    assert r["queries"] > 800, r
    assert m["recall@5"] > 0.70 and m["recall@100"] > 0.90 and m["mrr@10"] > 0.58, r
    print(f"demo bm25 {r['split']}: R@5 {m['recall@5']:.3f} R@20 {m['recall@20']:.3f} MRR@10 {m['mrr@10']:.3f}")
print("2 passed, 0 failed")
PY

# Rank-list shards as other tools read them: pyarrow and polars from PyPI, on a teacher job
# over the wiki-vital fixture (BM25 candidates, MiniLM bi-encoder).
pydeps=target/python-check
[ -d "$pydeps/polars" ] || python3 -m pip install --quiet --disable-pip-version-check --target "$pydeps" \
    pyarrow==26.0.1 polars==2.1.0
teacher_job="$job/teacher"
mkdir -p "$teacher_job"
cat > "$teacher_job/job.toml" <<TOML
[job]
dir = "$teacher_job"
[prepare]
input = "$PWD/tests/fixtures/wiki-vital/summaries_subset.json"
[teacher]
candidates = "bm25"
depth = 10
shard_queries = 8
TOML
for step in prepare "bm25 index" "bm25 search --split train" "teacher score"; do
    # shellcheck disable=SC2086
    target/debug/dgr --config "$teacher_job/job.toml" $step 2>/dev/null
done
PYTHONPATH="$pydeps" python3 scripts/check_shard_sets.py "$teacher_job/rank_lists/train"
echo "shards open in pyarrow and polars: 1 passed, 0 failed"
