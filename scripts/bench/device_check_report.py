#!/usr/bin/env python3
"""The GPU check's report (scripts/device-check.sh gpu): reads what the check wrote into OUT
(results.jsonl, card.txt, job.log, the stages' train logs) and prints a Markdown section for
docs/benchmarks.md. Exits 1 when a check failed: stage 1's loss did not fall, a sum was wrong, or
a step did not run.

    python3 scripts/bench/device_check_report.py OUT
"""
import datetime
import json
import os
import statistics
import sys


def lines(path):
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


DRY_RUN = os.environ.get("DEVICE_CHECK_DRY_RUN") == "1"


def main(out):
    card = open(os.path.join(out, "card.txt")).read().strip() if os.path.exists(os.path.join(out, "card.txt")) else "?"
    results = lines(os.path.join(out, "results.jsonl"))
    failures = []
    print(f"## GPU check: {card} ({datetime.date.today().isoformat()})")
    print()
    if DRY_RUN:
        print("A dry run on the CPU (DEVICE_CHECK_DRY_RUN=1): flex instead of CUDA, the TCP ring instead of "
              "NCCL, smaller shapes. It checks the script, not a GPU.")
        print()
    print("`scripts/device-check.sh build` here, `scripts/device-check.sh gpu` on the GPU machine; "
          "models with random weights of the stated shape (the same work as the real weights).")
    print()
    print("| measure | dgr | PyTorch | dgr / PyTorch |")
    print("|---|---|---|---|")

    def nccl_row(ranks, required):
        ours = [r for r in results if r.get("impl") in ("nccl", "dgr-ring", "dgr") and r.get("ranks") == ranks]
        theirs = [r for r in results if "(torch" in str(r.get("impl", "")) and r.get("ranks") == ranks]
        if any(r.get("failed") for r in ours) or not ours:
            if required:
                failures.append(f"NCCL all-reduce on {ranks} rank(s)")
            ours_text = "failed (nccl.log)" if required else "not allowed here (nccl.log)"
        else:
            biggest = max(ours, key=lambda r: r["bytes"])
            ours_text = f"{biggest['bytes_per_second'] / 1e9:.1f} GB/s"
        theirs_ok = [r for r in theirs if not r.get("failed")]
        theirs_text = (f"{max(theirs_ok, key=lambda r: r['bytes'])['bytes_per_second'] / 1e9:.1f} GB/s"
                       if theirs_ok else "failed")
        ratio = "-"
        if theirs_ok and "GB/s" in ours_text:
            a = max(ours, key=lambda r: r["bytes"])["bytes_per_second"]
            b = max(theirs_ok, key=lambda r: r["bytes"])["bytes_per_second"]
            ratio = f"{a / b:.2f}x"
        what = "TCP ring / gloo" if DRY_RUN else "NCCL"
        where = "on the CPU" if DRY_RUN else "on one GPU"
        print(f"| {what} all-reduce, 256 MiB, {ranks} rank(s) {where} | {ours_text} | {theirs_text} | {ratio} |")

    if not DRY_RUN:  # a ring of one rank moves nothing
        nccl_row(1, True)
    nccl_row(2, DRY_RUN)  # NCCL may refuse two ranks on one GPU

    def speed_row(bench, label, value, unit, higher_is_better):
        ours = [r for r in results if r.get("bench") == bench and "dgr" in r.get("system", "")]
        theirs = [r for r in results if r.get("bench") == bench and "pytorch" in r.get("system", "")]
        a = ours[0] if ours and not ours[0].get("failed") else None
        b = theirs[0] if theirs and not theirs[0].get("failed") else None
        if a is None:
            failures.append(label)
        fmt = lambda r: (f"{r[value]:.4f} {unit}" if value == "seconds" else f"{r[value]:.0f} {unit}") if r else "failed"
        ratio = "-"
        if a and b:
            ratio = f"{(a[value] / b[value]) if higher_is_better else (b[value] / a[value]):.2f}x"
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")

    train = next((r for r in results if r.get("bench") == "train_step" and "dgr" in r.get("system", "")), {})
    speed_row("train_step", f"student step (BART layout, MiniLM size, batch {train.get('batch', '?')}): seconds",
              "seconds", "s", False)
    encoder = next((r for r in results if r.get("bench") == "encoder" and "dgr" in r.get("system", "")), {})
    speed_row("encoder", f"teacher encoder (MiniLM shape, {encoder.get('batch', '?')} x {encoder.get('length', '?')})",
              "sequences_per_s", "seq/s", True)
    print()
    print("The ratio column is dgr's speed over PyTorch's (above 1: dgr is faster).")
    print()

    log = lines(os.path.join(out, "job.log"))
    stage1 = [r["loss"] for r in lines(os.path.join(out, "stage1_train_log.jsonl")) if "loss" in r]
    stage2 = [r["seconds"] for r in lines(os.path.join(out, "stage2_train_log.jsonl")) if "seconds" in r]
    stage1_seconds = [r["seconds"] for r in lines(os.path.join(out, "stage1_train_log.jsonl")) if "seconds" in r]
    teacher = next((r for r in log if r.get("fields", {}).get("message") == "teacher scores written"), None)
    kind = "cpu" if DRY_RUN else "cuda"
    print(f"`dgr run` on the wiki-vital fixture with `[device] kind = \"{kind}\"`:")
    print()
    if len(stage1) >= 20:
        first, last = statistics.mean(stage1[:10]), statistics.mean(stage1[-10:])
        falls = last < 0.8 * first
        if not falls:
            failures.append("stage 1's loss did not fall")
        print(f"- stage 1: {len(stage1)} steps, loss {first:.3f} (first 10) -> {last:.3f} (last 10): "
              f"{'falls' if falls else 'DOES NOT FALL'}; median step {statistics.median(stage1_seconds):.3f} s")
    else:
        failures.append("stage 1 did not run")
        print("- stage 1: did not run (job.log)")
    if teacher:
        fields = teacher["fields"]
        print(f"- teacher: {fields.get('pairs')} pairs in {fields.get('seconds')} s: {fields.get('pairs_per_second')} pairs/s")
    else:
        failures.append("the teacher did not run")
        print("- teacher: did not run (job.log)")
    if stage2:
        print(f"- stage 2: {len(stage2)} steps, median step {statistics.median(stage2):.3f} s")
    else:
        failures.append("stage 2 did not run")
        print("- stage 2: did not run (job.log)")
    ranks_log = ""
    for name in ("rank-0-0.log",):
        path = os.path.join(out, "ranks", name)
        if os.path.exists(path):
            ranks_log = open(path).read()
    joined = "ring connected" if DRY_RUN else "joined the NCCL communicator"
    if joined in ranks_log and "failed" not in json.dumps([r for r in results if r.get("bench") == "ranks"]):
        print(f"- stage 2 as a one-rank job (launch/multi_node.sh): {'ring connected' if DRY_RUN else 'joined NCCL'}, trained")
    else:
        failures.append("the one-rank job did not join NCCL and train")
        print("- stage 2 as a one-rank job (launch/multi_node.sh): failed (ranks/, ranks.log)")
    print()
    if failures:
        print("Failed: " + "; ".join(failures) + ".")
        return 1
    print("Every check passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
