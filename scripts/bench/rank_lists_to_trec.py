#!/usr/bin/env python3
"""The teacher as a re-ranker: a TREC run that orders each query's rank-listed candidates by the
teacher (`teacher_ranks`), followed by the rest of the generator's run in its own order.

    rank_lists_to_trec.py RANK_LIST_DIR GENERATOR_RUN OUT_RUN
"""
import json
import os
import sys
from collections import defaultdict

import pyarrow.ipc as ipc


def main(rank_dir: str, generator_run: str, out: str) -> None:
    manifest = json.load(open(os.path.join(rank_dir, "manifest.json")))
    if manifest.get("format") != "dgr.rank-list-shards":
        sys.exit(f"{rank_dir}/manifest.json: not a rank-list manifest")
    reranked = {}
    for shard in manifest["shards"]:
        table = ipc.open_file(os.path.join(rank_dir, shard["file"])).read_all().to_pylist()
        for row in table:
            order = sorted(range(len(row["passage_ids"])), key=lambda i: row["teacher_ranks"][i])
            reranked[row["query_id"]] = [row["passage_ids"][i] for i in order]
    generated = defaultdict(list)
    for line in open(generator_run):
        qid, _, pid, _rank, _score, _tag = line.split()
        generated[qid].append(pid)
    with open(out + ".tmp", "w") as f:
        for qid, pids in generated.items():
            head = reranked.get(qid, [])
            seen = set(head)
            ranked = head + [p for p in pids if p not in seen]
            for rank, pid in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {pid} {rank} {len(ranked) - rank + 1} teacher-rerank\n")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
