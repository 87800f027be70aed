#!/usr/bin/env python3
"""Random weights for the BERT whose config.json is in DIR, written as DIR/model.safetensors
under HF BertModel's names (the layout of the MiniLM in the assets): normal(0,
initializer_range) matrices and embeddings, LayerNorm weights 1, biases 0. For speed checks
where the real weights cannot travel (scripts/device-check.sh). Needs only numpy.

    python3 scripts/bench/random_bert.py DIR [SEED]
"""
import json
import os
import struct
import sys

import numpy as np


def tensors(config, rng):
    hidden = config["hidden_size"]
    inner = config["intermediate_size"]
    std = config.get("initializer_range", 0.02)
    normal = lambda *shape: rng.normal(0.0, std, shape).astype(np.float32)
    ones = lambda n: np.ones(n, np.float32)
    zeros = lambda n: np.zeros(n, np.float32)
    out = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], hidden),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], hidden),
        "embeddings.token_type_embeddings.weight": normal(config.get("type_vocab_size", 2), hidden),
        "embeddings.LayerNorm.weight": ones(hidden),
        "embeddings.LayerNorm.bias": zeros(hidden),
    }
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            out[layer + name + ".weight"] = normal(hidden, hidden)
            out[layer + name + ".bias"] = zeros(hidden)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[layer + norm + ".weight"] = ones(hidden)
            out[layer + norm + ".bias"] = zeros(hidden)
        out[layer + "intermediate.dense.weight"] = normal(inner, hidden)
        out[layer + "intermediate.dense.bias"] = zeros(inner)
        out[layer + "output.dense.weight"] = normal(hidden, inner)
        out[layer + "output.dense.bias"] = zeros(hidden)
    return out


def write_safetensors(path, named):
    header, offset = {}, 0
    for name, array in named.items():
        size = array.nbytes
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in named.values():
            f.write(np.ascontiguousarray(array).tobytes())
    os.replace(temporary, path)


def main():
    directory = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors(config, np.random.default_rng(seed)))


if __name__ == "__main__":
    main()
