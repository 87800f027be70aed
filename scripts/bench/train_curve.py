#!/usr/bin/env python3
"""Summarises a `dgr train-gen` step log (train_log.jsonl) as a markdown table: mean loss,
unsmoothed NLL, token accuracy and seconds per step over windows of steps.

Usage: python3 scripts/bench/train_curve.py work/titles/stage1/train_log.jsonl [--window 250]
"""
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("log")
ap.add_argument("--window", type=int, default=250)
args = ap.parse_args()

steps = [json.loads(line) for line in open(args.log)]
print("| steps | loss (smoothed) | NLL | token accuracy | s/step |")
print("|---|---|---|---|---|")
for start in range(0, len(steps), args.window):
    window = steps[start:start + args.window]
    mean = lambda key: sum(s[key] for s in window) / len(window)
    print(f"| {window[0]['step']}-{window[-1]['step']} | {mean('loss'):.3f} | {mean('nll'):.3f} | "
          f"{mean('accuracy'):.3f} | {mean('seconds'):.2f} |")
