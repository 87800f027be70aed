#!/usr/bin/env python3
"""BM25 side by side: `dgr bm25` (tantivy) against Python `rank_bm25` on the same prepared data.

Both runs are evaluated with `ranx` (and dgr's own numbers are checked against ranx's), and
wall times of index build and search are measured in the same process run. Prints a markdown
table for docs/benchmarks.md.

Usage (after `dgr run` has prepared work/demo/data):
    pip install rank_bm25 ranx pyarrow
    python3 scripts/bench/bm25_vs_rank_bm25.py --dgr target/release/dgr --data work/demo/data
"""
import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import pyarrow.ipc as ipc
from rank_bm25 import BM25Okapi
from ranx import Qrels, Run, evaluate

METRICS = ["recall@5", "recall@20", "recall@100", "mrr@10", "ndcg@10"]
TOKEN = re.compile(r"\w+")


def read(path):
    with ipc.open_file(path) as f:
        return f.read_all().to_pylist()


def tokens(text):
    return TOKEN.findall(text.lower())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dgr", default="target/release/dgr")
    ap.add_argument("--data", default="work/demo/data")
    ap.add_argument("--splits", default="dev,test")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    splits = args.splits.split(",")
    out = tempfile.mkdtemp()

    corpus = read(os.path.join(args.data, "corpus.arrow"))
    ids = [p["id"] for p in corpus]

    t = time.perf_counter()
    subprocess.run([args.dgr, "bm25", "index", "--corpus", os.path.join(args.data, "corpus.arrow"),
                    "--index-dir", os.path.join(out, "idx"), "--threads", args.threads],
                   check=True, capture_output=True)
    dgr_index_s = time.perf_counter() - t

    t = time.perf_counter()
    bm25 = BM25Okapi([tokens(p["title"] + "\n" + p["text"]) for p in corpus], k1=1.5, b=0.75)
    ref_index_s = time.perf_counter() - t

    rows = []
    for split in splits:
        queries = read(os.path.join(args.data, f"queries-{split}.arrow"))
        qrels = Qrels.from_file(os.path.join(args.data, f"qrels-{split}.tsv"), kind="trec")
        dgr_run = os.path.join(out, f"dgr-{split}.trec")
        t = time.perf_counter()
        subprocess.run([args.dgr, "bm25", "search", "--index-dir", os.path.join(out, "idx"),
                        "--queries", os.path.join(args.data, f"queries-{split}.arrow"),
                        "--run", dgr_run, "--top-k", "100", "--threads", args.threads],
                       check=True, capture_output=True)
        dgr_search_s = time.perf_counter() - t
        subprocess.run([args.dgr, "eval", "--run", dgr_run, "--qrels",
                        os.path.join(args.data, f"qrels-{split}.tsv"), "--out", dgr_run + ".json"],
                       check=True, capture_output=True)
        with open(dgr_run + ".json") as f:
            dgr_own = json.load(f)["qrels"]["metrics"]

        t = time.perf_counter()
        ref = {}
        for q in queries:
            scores = bm25.get_scores(tokens(q["text"]))
            top = sorted(range(len(ids)), key=lambda i: -scores[i])[:100]
            ref[q["id"]] = {ids[i]: float(scores[i]) for i in top}
        ref_search_s = time.perf_counter() - t

        dgr_values = evaluate(qrels, Run.from_file(dgr_run, kind="trec"), METRICS, make_comparable=True)
        ref_values = evaluate(qrels, Run(ref), METRICS, make_comparable=True)
        for m in METRICS:
            assert abs(dgr_values[m] - dgr_own[m]) < 1e-6, (m, dgr_values[m], dgr_own[m])
        n = len(queries)
        rows.append((split, n, "dgr bm25 (tantivy, k1 1.2, b 0.75)", dgr_values, dgr_index_s, 1000 * dgr_search_s / n))
        rows.append((split, n, "rank_bm25 (k1 1.5, b 0.75)", ref_values, ref_index_s, 1000 * ref_search_s / n))

    print("| split | queries | system | R@5 | R@20 | R@100 | MRR@10 | nDCG@10 | index s | search ms/query |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for split, n, name, v, index_s, ms in rows:
        print(f"| {split} | {n} | {name} | " + " | ".join(f"{100 * v[m]:.1f}" for m in METRICS)
              + f" | {index_s:.2f} | {ms:.2f} |")
    print("\n(dgr search time includes process start and reading the index; "
          "dgr's own metrics equal ranx's to 1e-6 on these runs.)")


if __name__ == "__main__":
    main()
