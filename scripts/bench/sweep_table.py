#!/usr/bin/env python3
"""The table of scripts/bench/source_weights.sh: per setting (a directory under SWEEP_DIR), its
source weights and the R@5 / R@20 / R@100 / MRR@10 of each split it was evaluated on.

    sweep_table.py SWEEP_DIR
"""
import glob
import json
import os
import sys
import tomllib

KEYS = ["recall@5", "recall@20", "recall@100", "mrr@10"]


def main(sweep: str) -> None:
    print("| setting | weights | split | queries | R@5 | R@20 | R@100 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for setting in sorted(glob.glob(f"{sweep}/*/config.toml")):
        directory = os.path.dirname(setting)
        config = tomllib.load(open(setting, "rb"))
        weights = config.get("retrieve", {}).get("scoring", {}).get("source_weights", {})
        described = ", ".join(f"{k} {v:g}" for k, v in weights.items() if v != 1) or "all 1"
        for result in sorted(glob.glob(f"{directory}/runs/gr-*.trec.eval.json")):
            split = os.path.basename(result)[len("gr-"):-len(".trec.eval.json")]
            report = json.load(open(result))["qrels"]
            cells = [f"{100 * report['metrics'][k]:.1f}" for k in KEYS]
            print(f"| {os.path.basename(directory)} | {described} | {split} | {report['queries']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
