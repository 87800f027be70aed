#!/usr/bin/env python3
"""The table of scripts/bench/distill_vs_stage1.sh: dev and test R@5 / R@20 / R@100 / MRR@10 of
BM25, the teacher re-ranking S's candidates, S, (a) stage 1 continued and (b) stage 2 (and any
ablation arms b-*), then how stage 2's training went.

    distill_table.py EXPERIMENT_DIR
"""
import glob
import json
import os
import statistics
import sys


def metrics(path):
    if not os.path.exists(path):
        return None
    return json.load(open(path))["qrels"]["metrics"]


def hits_at_5(run, qrels):
    """Per judged query: whether a relevant passage is in the run's top 5."""
    relevant = {}
    for line in open(qrels):
        qid, _, pid, rel = line.split()[:4]
        if int(rel) > 0:
            relevant.setdefault(qid, set()).add(pid)
    top = {}
    for line in open(run):
        qid, _, pid, rank = line.split()[:4]
        if int(rank) <= 5:
            top.setdefault(qid, set()).add(pid)
    return {q: bool(top.get(q, set()) & docs) for q, docs in relevant.items()}


def paired(exp: str, first: str, second: str, split: str):
    """Queries whose R@5 hit `second` gains and loses against `first`."""
    qrels = f"{exp}/s/data/qrels-{split}.tsv"
    runs = [f"{exp}/{arm}/runs/gr-{split}.trec" for arm in (first, second)]
    if not all(os.path.exists(r) for r in runs):
        return None
    a, b = (hits_at_5(r, qrels) for r in runs)
    return sum(b[q] and not a[q] for q in a), sum(a[q] and not b[q] for q in a)


def main(exp: str) -> None:
    rows = [
        ("BM25", f"{exp}/s/runs/bm25-{{}}.trec.eval.json"),
        ("teacher re-ranking S's top 20 (ceiling)", f"{exp}/s/runs/teacher-{{}}.trec.eval.json"),
        ("S (stage 1)", f"{exp}/s/runs/gr-{{}}.trec.eval.json"),
        ("(a) S + stage 1", f"{exp}/a/runs/gr-{{}}.trec.eval.json"),
        ("(b) S + stage 2 (DGR)", f"{exp}/b/runs/gr-{{}}.trec.eval.json"),
    ]
    for arm in sorted(glob.glob(f"{exp}/b-*")):
        rows.append((f"(b) ablation {os.path.basename(arm)[2:]}", f"{arm}/runs/gr-{{}}.trec.eval.json"))
    keys = ["recall@5", "recall@20", "recall@100", "mrr@10"]
    print("| system | " + " | ".join(f"{s} {k}" for s in ("dev", "test") for k in ("R@5", "R@20", "R@100", "MRR@10")) + " |")
    print("|---" * 9 + "|")
    for name, pattern in rows:
        cells = []
        for split in ("dev", "test"):
            m = metrics(pattern.format(split))
            cells += [f"{100 * m[k]:.1f}" if m else "" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for first, second in [("s", "a"), ("s", "b"), ("a", "b"), ("a", "b-m5")]:
        for split in ("dev", "test"):
            counts = paired(exp, first, second, split)
            if counts:
                print(f"{second} against {first}, {split}: R@5 hits gained {counts[0]}, lost {counts[1]}")
    print()
    for arm in [f"{exp}/b"] + sorted(glob.glob(f"{exp}/b-*")):
        log = f"{arm}/stage2/train_log.jsonl"
        if not os.path.exists(log):
            continue
        steps = [json.loads(line) for line in open(log)]
        report = json.load(open(f"{arm}/stage2/queries.json"))
        # Since dgr.stage2-queries v1: the counts beside the loss the run trained with.
        kept = {**report["counts"], "loss": report["loss"]} if "counts" in report else report
        tenth = max(1, len(steps) // 10)
        summary = {
            key: (round(statistics.mean(s[key] for s in steps[:tenth]), 3),
                  round(statistics.mean(s[key] for s in steps[-tenth:]), 3))
            for key in ("rank_loss", "generation_loss", "violated_pairs", "agreement", "seconds")
        }
        print(f"{os.path.basename(arm)}: queries {kept}; first / last tenth of {len(steps)} steps: {summary}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
