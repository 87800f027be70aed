#!/usr/bin/env python3
"""PyTorch half of the model speed benchmark (see crates/dgr-model/benches/speed.rs): the same
measurements on the same shapes, printed as the same JSON lines.

- encoder: all-MiniLM-L6-v2 through sentence-transformers' own module (HF BertModel + mean
  pooling + normalize), batch 32 x 128 tokens, no_grad;
- train_step: BartForConditionalGeneration with the same sizes, label smoothing 0.1, AdamW.

On a GPU (`--device cuda`) every step ends with a device synchronisation. DGR_BENCH_MINILM
names the encoder's directory (default assets/minilm); without its weights the encoder is HF
BertModel with that config.json and random weights, mean-pooled and normalised (the same work).

Usage: python3 scripts/bench/model_speed_torch.py [--threads N] [--device cpu|cuda]
       [encoder|train-tiny|train-minilm]
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REPEATS = int(os.environ.get("DGR_BENCH_REPEATS", "5"))
DEVICE = "cpu"


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def knob(name, default):
    """A shape from the environment (the same variables as the Rust bench)."""
    return int(os.environ.get(name, default))


def peak_rss_mb():
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def timed(fn):
    times = []
    for i in range(REPEATS + 1):
        start = time.perf_counter()
        fn()
        sync()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def encoder():
    directory = os.environ.get("DGR_BENCH_MINILM", os.path.join(ROOT, "assets", "minilm"))
    batch, length = knob("DGR_BENCH_BATCH", 32), knob("DGR_BENCH_LENGTH", 128)
    features = {"input_ids": torch.randint(3, 30521, (batch, length), device=DEVICE),
                "token_type_ids": torch.zeros(batch, length, dtype=torch.long, device=DEVICE),
                "attention_mask": torch.ones(batch, length, dtype=torch.long, device=DEVICE)}
    if os.path.exists(os.path.join(directory, "model.safetensors")):
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(directory, device=DEVICE).eval()
        name, system = "all-MiniLM-L6-v2", f"pytorch {torch.__version__} (sentence-transformers)"

        def embed():
            return model(dict(features))["sentence_embedding"]
    else:
        from transformers import BertConfig, BertModel
        bert = BertModel(BertConfig.from_json_file(os.path.join(directory, "config.json")), add_pooling_layer=False)
        bert = bert.to(DEVICE).eval()
        name, system = "MiniLM-L6 shape, random weights", f"pytorch {torch.__version__} (transformers)"

        def embed():
            states = bert(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).float()
            return F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    def run():
        with torch.no_grad():
            embed()
    s = timed(run)
    print(json.dumps({"bench": "encoder", "system": system, "device": DEVICE,
                      "model": name, "batch": batch, "length": length,
                      "seconds": round(s, 4), "sequences_per_s": round(batch / s, 1),
                      "peak_rss_mb": peak_rss_mb()}))


def train_step(size):
    from transformers import BartConfig, BartForConditionalGeneration
    vocab, d, layers, heads, ffn = (8000, 128, 2, 4, 512) if size == "tiny" else (30522, 384, 6, 12, 1536)
    config = BartConfig(vocab_size=vocab, d_model=d, encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=heads, decoder_attention_heads=heads,
                        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=128,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        pad_token_id=1, decoder_start_token_id=2)
    torch.manual_seed(42)
    model = BartForConditionalGeneration(config).to(DEVICE).train()
    optim = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    batch, src, tgt = knob("DGR_BENCH_BATCH", 16), knob("DGR_BENCH_SOURCE", 64), knob("DGR_BENCH_TARGET", 16)
    input_ids = torch.randint(3, vocab - 1, (batch, src), device=DEVICE)
    labels = torch.tensor([[3 + (b * 31 + t * 7) % (vocab - 3) for t in range(tgt)] for b in range(batch)],
                          device=DEVICE)
    loss_box = {}

    def run():
        optim.zero_grad()
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1), label_smoothing=0.1)
        loss.backward()
        optim.step()
        loss_box["loss"] = float(loss)
    s = timed(run)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"bench": "train_step", "system": f"pytorch {torch.__version__}", "device": DEVICE, "size": "tiny" if size == "tiny" else "minilm-size",
                      "params": params, "batch": batch, "source": src, "target": tgt,
                      "seconds": round(s, 4), "loss": round(loss_box["loss"], 4),
                      "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("only", nargs="?")
    args = ap.parse_args()
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    if args.only in (None, "encoder"):
        encoder()
    if args.only in (None, "train-tiny"):
        train_step("tiny")
    if args.only in (None, "train-minilm"):
        train_step("minilm")
