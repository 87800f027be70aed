#!/usr/bin/env bash
# The GPU check: dgr on one NVIDIA GPU (H100/H200) next to PyTorch on the same card, in one run
# of at most 8 minutes, on a machine with CUDA, NCCL and PyTorch but no Rust. Three steps:
#
#   scripts/device-check.sh build        # here (no GPU needed): the CUDA build of dgr and of two
#                                        # benches, packed with the small inputs they read into
#                                        # target/device-check/ (under 64 MiB, to carry)
#   scripts/device-check.sh gpu          # there, in a copy of this repository holding
#                                        # target/device-check/: writes device-check.md and the
#                                        # logs into $OUT (default target/device-check/out)
#   scripts/device-check.sh record FILE  # here: appends that device-check.md to docs/benchmarks.md
#
# What `gpu` checks and measures:
#   1. NCCL: init and all-reduce (sums checked) on a world of 1, and of 2 processes on the one
#      GPU where NCCL allows it; torch.distributed's NCCL on the same sizes.
#   2. The student's training step (BART layout, MiniLM size: forward, backward, AdamW) and the
#      encoder the teacher runs (MiniLM shape), Burn-CUDA against PyTorch on the same shapes.
#   3. `dgr run` on the wiki-vital fixture with `[device] kind = "cuda"`: every stage on the GPU
#      (a MiniLM-shaped student and teacher with random weights, made by transformers there),
#      stage 1's loss must fall; the teacher's pairs/s and stage 2's step time are read off it.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/device-check

# Offline CUDA build (docs/operations.md, "On GPUs"): Burn's CUDA backend pulls in an LLVM that
# its build script downloads; here it is Debian's LLVM, unpacked into target/llvm.
cuda_build_env() {
  scripts/cuda-llvm.sh
  # shellcheck source=/dev/null
  source target/llvm/env.sh
}

# The path of a bench executable built with `--features cuda`.
bench_executable() { # crate bench
  cargo bench -p "$1" --bench "$2" --no-run --locked --features cuda --target-dir target/cuda \
    --message-format=json 2>/dev/null | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
}

build() {
  scripts/fetch-assets.sh
  cuda_build_env
  cargo build --release --locked -p dgr-cli --features cuda --target-dir target/cuda
  local speed all_reduce
  speed=$(bench_executable dgr-model speed)
  all_reduce=$(bench_executable dgr-collective all_reduce)
  rm -rf "$kit" && mkdir -p "$kit"
  local name source
  for pair in "dgr=target/cuda/release/dgr" "speed=$speed" "all_reduce=$all_reduce"; do
    name=${pair%%=*} source=${pair#*=}
    strip -o "$kit/$name" "$source"
    xz -T0 -9 "$kit/$name"
  done
  cp assets/minilm/config.json "$kit/minilm-config.json"
  cp assets/minilm/tokenizer.json "$kit/tokenizer.json"
  du -sh "$kit"
  local bytes
  bytes=$(du -sb "$kit" | cut -f1)
  if [ "$bytes" -gt $((60 << 20)) ]; then
    echo "device-check: $kit is over 60 MiB: it cannot travel with the working tree" >&2
    exit 1
  fi
}

gpu() {
  local out=${OUT:-$kit/out}
  local work=/tmp/dgr-device-check
  rm -rf "$work" && mkdir -p "$out" "$work/bin" "$work/lib" "$work/minilm"
  for packed in "$kit"/*.xz; do
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
      "$packed" "$work/bin/$(basename "$packed" .xz)"
  done
  chmod +x "$work"/bin/*
  # cudarc loads libnccl.so; pip's nvidia-nccl ships libnccl.so.2 only.
  local nccl
  nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))')
  ln -sf "$nccl/libnccl.so.2" "$work/lib/libnccl.so"
  export LD_LIBRARY_PATH=$work/lib:$nccl:${LD_LIBRARY_PATH:-}
  cp "$kit/minilm-config.json" "$work/minilm/config.json"
  cp "$kit/tokenizer.json" "$work/minilm/tokenizer.json"
  local results=$out/results.jsonl
  : >"$results"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"

  # 1. NCCL.
  for ranks in 1 2; do
    ALL_REDUCE_BACKEND=nccl timeout 90 "$work/bin/all_reduce" "$ranks" 5 >>"$results" 2>>"$out/nccl.log" ||
      echo "{\"bench\": \"nccl\", \"impl\": \"nccl\", \"ranks\": $ranks, \"failed\": true}" >>"$results"
    ALL_REDUCE_BACKEND=nccl timeout 90 python3 scripts/bench/all_reduce_gloo.py "$ranks" 5 >>"$results" \
      2>>"$out/nccl.log" ||
      echo "{\"bench\": \"nccl\", \"impl\": \"nccl (torch)\", \"ranks\": $ranks, \"failed\": true}" >>"$results"
  done

  # 2. Model speed, side by side.
  export DGR_BENCH_MINILM=$work/minilm DGR_BENCH_REPEATS=10
  for bench in train-minilm encoder; do
    local batch=64
    [ "$bench" = encoder ] && batch=256
    DGR_BENCH_BATCH=$batch DGR_BENCH_BACKEND=cuda timeout 150 "$work/bin/speed" "$bench" >>"$results" \
      2>>"$out/speed.log" || echo "{\"bench\": \"$bench\", \"system\": \"dgr (burn cuda)\", \"failed\": true}" >>"$results"
    DGR_BENCH_BATCH=$batch timeout 90 python3 scripts/bench/model_speed_torch.py --device cuda "$bench" \
      >>"$results" 2>>"$out/speed.log" ||
      echo "{\"bench\": \"$bench\", \"system\": \"pytorch\", \"failed\": true}" >>"$results"
  done

  # 3. Every stage of a small job on the GPU.
  python3 - "$work/minilm" <<'PY'
import sys
from transformers import BertConfig, BertModel
directory = sys.argv[1]
BertModel(BertConfig.from_json_file(f"{directory}/config.json")).save_pretrained(directory)
PY
  cat >"$work/job.toml" <<TOML
[job]
dir = "$work/job"
[device]
kind = "cuda"
[prepare]
input = "$PWD/tests/fixtures/wiki-vital/summaries_subset.json"
split = { train = 60, dev = 40, test = 0 }
[eval]
splits = ["dev"]
[index]
tokenizer = "$work/minilm/tokenizer.json"
sample_rate = 4
[train_gen]
init = "$work/minilm"
tokenizer = "$work/minilm/tokenizer.json"
engine = { steps = 150, batch_size = 16, learning_rate = 5e-4, warmup_steps = 10, checkpoint_every = 0 }
[retrieve]
search = { beam = 5, hits = 40 }
[teacher]
model = "$work/minilm"
depth = 20
[train_distill]
min_negatives = 4
negative_pool = 6
engine = { steps = 20, batch_size = 1, learning_rate = 1e-4, warmup_steps = 2, checkpoint_every = 0, eval_every = 0 }
[run]
workers = 0
train_queries = 0
eval_queries = 0
TOML
  timeout 240 "$work/bin/dgr" --log-format json --config "$work/job.toml" run >"$out/job.txt" 2>"$out/job.log" ||
    echo "{\"bench\": \"job\", \"failed\": true}" >>"$results"
  cp "$work/job/stage1/train_log.jsonl" "$out/stage1_train_log.jsonl" 2>/dev/null || true
  cp "$work/job/stage2/train_log.jsonl" "$out/stage2_train_log.jsonl" 2>/dev/null || true
  python3 scripts/bench/device_check_report.py "$out" | tee "$out/device-check.md"
}

record() {
  local file=${1:?usage: scripts/device-check.sh record DEVICE-CHECK.md}
  { echo; cat "$file"; } >>docs/benchmarks.md
  echo "appended $file to docs/benchmarks.md"
}

case ${1:-} in
  build) build ;;
  gpu) gpu ;;
  record) record "${2:-}" ;;
  *)
    echo "usage: scripts/device-check.sh build | gpu | record FILE" >&2
    exit 2
    ;;
esac
