#!/usr/bin/env python3
"""Key scoring speed, the PyTorch half of scripts/bench/key_scoring.sh: the same student (its
HF EncoderDecoderModel directory) and the same keys as crates/dgr-model/benches/key_scoring.rs,
scored as the reference trainer does: each view's source encoded once, every key decoded as its
own padded row (decoder input = start token + key), the log-probabilities of the key's tokens
summed; forward and backward of the sum of all scores.

Usage: python3 scripts/bench/key_scoring_torch.py STUDENT_DIR KEYS_JSON [--threads N] [--repeats R]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import EncoderDecoderModel


def score(model, source, keys):
    ids = torch.tensor([source])
    encoded = model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    length = max(len(k) for k in keys)
    start = model.config.decoder_start_token_id
    decoder_ids = torch.full((len(keys), length), model.config.pad_token_id, dtype=torch.long)
    targets = torch.zeros((len(keys), length), dtype=torch.long)
    valid = torch.zeros((len(keys), length))
    for row, key in enumerate(keys):
        decoder_ids[row, 0] = start
        decoder_ids[row, 1:len(key)] = torch.tensor(key[:-1])
        targets[row, :len(key)] = torch.tensor(key)
        valid[row, :len(key)] = 1.0
    states = encoded.expand(len(keys), -1, -1)
    logits = model.decoder(input_ids=decoder_ids, encoder_hidden_states=states).logits
    log_probs = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return (log_probs * valid).sum(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("student")
    parser.add_argument("keys")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = EncoderDecoderModel.from_pretrained(args.student)
    model.train()  # as in training; the student has no dropout to switch
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    queries = json.load(open(args.keys))["queries"]
    total_keys = sum(len(v["keys"]) for q in queries for v in q["views"])
    positions = sum(len(v["keys"]) * max(map(len, v["keys"]), default=1) for q in queries for v in q["views"])
    times = []
    for repeat in range(args.repeats + 1):
        started = time.perf_counter()
        total_sum = 0.0
        for query in queries:
            scores = torch.cat([score(model, v["source"], v["keys"]) for v in query["views"]])
            total = scores.sum()
            total_sum += total.item()
            model.zero_grad(set_to_none=True)
            total.backward()
        if repeat > 0:
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(json.dumps({"system": f"pytorch {torch.__version__} one key a row", "queries": len(queries),
                      "keys": total_keys, "positions_decoded": positions, "seconds": median,
                      "keys_per_second": total_keys / median, "score_sum": total_sum}))


if __name__ == "__main__":
    main()
