#!/usr/bin/env python3
"""sentence-transformers on the pairs of a dgr rank-list set: pairs/s on the same machine and
threads, with the same work (per shard, each distinct query and passage embedded once,
max 128 tokens, batch 32), and the largest difference from dgr's teacher scores.

Needs: pip install torch sentence-transformers pyarrow
"""
import argparse
import json
import time
from pathlib import Path

import pyarrow.ipc as ipc
import torch
from sentence_transformers import SentenceTransformer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--rank-lists", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    corpus = ipc.open_file(data / "corpus.arrow").read_all().to_pylist()
    passages = {p["id"]: (f"{p['title']}: {p['text']}" if p["title"] else p["text"]) for p in corpus}
    queries = {q["id"]: q["text"] for q in ipc.open_file(data / f"queries-{args.split}.arrow").read_all().to_pylist()}
    directory = Path(args.rank_lists)
    manifest = json.loads((directory / "manifest.json").read_text())
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = 128
    pairs, worst, seconds = 0, 0.0, 0.0
    for shard in manifest["shards"]:
        rows = ipc.open_file(directory / shard["file"]).read_all().to_pylist()
        started = time.perf_counter()
        texts = sorted({queries[r["query_id"]] for r in rows} | {passages[p] for r in rows for p in r["passage_ids"]})
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_tensor=True)
        index = {t: i for i, t in enumerate(texts)}
        for r in rows:
            q = vectors[index[queries[r["query_id"]]]]
            scores = [float(q @ vectors[index[passages[p]]]) for p in r["passage_ids"]]
            worst = max([worst] + [abs(a - b) for a, b in zip(scores, r["teacher_scores"])])
            pairs += len(scores)
        seconds += time.perf_counter() - started
    print(f"sentence-transformers {args.threads} threads: {pairs / seconds:.1f} pairs/s ({pairs} pairs, {seconds:.1f} s); "
          f"max |score difference| from dgr: {worst:.2e}")


if __name__ == "__main__":
    main()
