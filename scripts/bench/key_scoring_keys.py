#!/usr/bin/env python3
"""Writes the keys a stage-2 step scores, for scripts/bench/key_scoring.sh: for each of the
first QUERIES train queries of a job's candidate shards (<job>/candidates/train/), the keys of
its first PASSAGES candidates (each passage's best 40 by what they added to its score), grouped
by the view prompt they are scored under, with that prompt's source token ids.

Usage: python3 scripts/bench/key_scoring_keys.py JOB_DIR TOKENIZER_JSON OUT_JSON [QUERIES] [PASSAGES]
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.ipc as ipc
from tokenizers import Tokenizer

PROMPTS = {"title": "title", "body": "body", "query-span": "body", "unigram": "body", "pseudo-query": "query"}


def main():
    job, tokenizer_path, out = sys.argv[1:4]
    queries_wanted = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    passages_wanted = int(sys.argv[5]) if len(sys.argv) > 5 else 6
    tokenizer = Tokenizer.from_file(tokenizer_path)
    texts = {}
    with ipc.open_file(os.path.join(job, "data", "queries-train.arrow")) as f:
        table = f.read_all()
        for qid, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
            texts[qid] = text
    folder = os.path.join(job, "candidates", "train")
    manifest = json.load(open(os.path.join(folder, "candidates.json")))
    queries = []
    for shard in manifest["shards"]:
        with ipc.open_file(os.path.join(folder, shard["file"])) as f:
            for row in f.read_all().to_pylist():
                if len(queries) == queries_wanted:
                    break
                used = set()
                for keys, scores in list(zip(row["passage_keys"], row["passage_key_scores"]))[:passages_wanted]:
                    best = sorted(zip(scores, keys), key=lambda p: (-p[0], p[1]))[:40]
                    used.update(k for _, k in best)
                views = {}
                for k in sorted(used):
                    prompt = PROMPTS[row["key_sources"][k]]
                    if prompt == "query":
                        continue  # wiki-vital has no pseudo-queries
                    views.setdefault(prompt, []).append(row["key_tokens"][k])
                query = texts[row["query_id"]]
                queries.append({"query_id": row["query_id"], "views": [
                    {"prompt": p, "source": tokenizer.encode(f"{query} || {p} || +").ids[:64], "keys": keys}
                    for p, keys in sorted(views.items())]})
    json.dump({"queries": queries}, open(out, "w"))
    print(f"{len(queries)} queries, {sum(len(v['keys']) for q in queries for v in q['views'])} keys -> {out}")


if __name__ == "__main__":
    main()
