#!/usr/bin/env bash
# The GPU check: dgr on one NVIDIA GPU (H100/H200) next to PyTorch on the same card, in one run
# of at most 8 minutes, on a machine with CUDA, NCCL and PyTorch but no Rust. Three steps:
#
#   scripts/device-check.sh build        # here (no GPU needed): the CUDA build of dgr and of two
#                                        # benches, packed with the small inputs they read into
#                                        # target/device-check/ (under 64 MiB, to carry)
#   scripts/device-check.sh gpu          # there, in a copy of this repository holding
#                                        # target/device-check/: writes device-check.md and
#                                        # details.tar.gz (every log and measurement) into $OUT
#                                        # (default target/device-check/out); exit 1 if a check failed
#   scripts/device-check.sh record FILE  # here: appends that device-check.md to docs/benchmarks.md
#
# What `gpu` checks and measures:
#   1. NCCL: init and all-reduce (sums checked) on a world of 1, and of 2 processes on the one
#      GPU where NCCL allows it; torch.distributed's NCCL on the same sizes.
#   2. The student's training step (BART layout, MiniLM size: forward, backward, AdamW) and the
#      encoder the teacher runs (MiniLM shape), Burn-CUDA against PyTorch on the same shapes.
#   3. `dgr run` on the wiki-vital fixture with `[device] kind = "cuda"`: every stage on the GPU
#      (a MiniLM-shaped student and teacher with random weights, scripts/bench/random_bert.py),
#      stage 1's loss must fall; the teacher's pairs/s and stage 2's step time are read off it.
#      Then stage 2 once more through launch/multi_node.sh as a job of one rank, which joins
#      NCCL the way the ranks of a cluster job do.
#
# DEVICE_CHECK_DRY_RUN=1 runs both halves here on the CPU (a CPU build, flex instead of CUDA,
# the TCP ring instead of NCCL, PyTorch on the CPU, smaller shapes): it checks the script and
# its report, not a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/device-check
if [ "${DEVICE_CHECK_DRY_RUN:-0}" = 1 ]; then
  features=x86-v4 target_dir=target kind=cpu backend=flex reduce=ring torch_device=cpu
  train_batch=8 encoder_batch=32 stage1_steps=40 stage1_batch=8 repeats=3
else
  features=cuda target_dir=target/cuda kind=cuda backend=cuda reduce=nccl torch_device=cuda
  train_batch=64 encoder_batch=256 stage1_steps=150 stage1_batch=16 repeats=10
fi

# Offline CUDA build (docs/operations.md, "On GPUs"): Burn's CUDA backend pulls in an LLVM that
# its build script downloads; here it is Debian's LLVM, unpacked into target/llvm.
cuda_build_env() {
  scripts/cuda-llvm.sh
  # shellcheck source=/dev/null
  source target/llvm/env.sh
}

# Builds dgr and the two benches in one cargo invocation, so that they share one feature set (a
# bench built on its own unifies other features and compiles Burn a second time), and prints
# `name=path` for each executable.
build_executables() {
  local with=dgr-cli/$features,dgr-model/$features
  [ "$features" = cuda ] && with=$with,dgr-collective/cuda
  cargo build --release --locked -p dgr-cli -p dgr-model -p dgr-collective --features "$with" \
    --bin dgr --bench speed --bench all_reduce --target-dir "$target_dir" \
    --message-format=json-render-diagnostics | python3 -c 'import json, sys
wanted = {("bin", "dgr"), ("bench", "speed"), ("bench", "all_reduce")}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        name = m["target"]["name"]
        if (m["target"]["kind"][0], name) in wanted:
            print(name + "=" + m["executable"])'
}

build() {
  scripts/fetch-assets.sh
  [ "$features" = cuda ] && cuda_build_env
  local executables
  executables=$(build_executables)
  [ "$(wc -l <<<"$executables")" = 3 ] || {
    echo "device-check: the build did not name dgr, speed and all_reduce: $executables" >&2
    exit 1
  }
  rm -rf "$kit" && mkdir -p "$kit/bin"
  local pair
  while read -r pair; do
    strip -o "$kit/bin/${pair%%=*}" "${pair#*=}"
  done <<<"$executables"
  # One archive with a dictionary larger than any one executable: dgr and the speed bench both
  # carry Burn, CubeCL and LLVM, which xz then stores once (about 42 MB instead of 63 MB apart).
  tar -cf - -C "$kit" bin | xz -T1 --lzma2=preset=9e,dict=512MiB >"$kit/bin.tar.xz"
  rm -rf "$kit/bin"
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
  # Everything is written under $work/out; what comes back is the report and one archive of
  # that folder (a device machine returns at most 8 files).
  local out=${OUT:-$kit/out}
  local work=/tmp/dgr-device-check
  local raw=$work/out
  rm -rf "$work" && mkdir -p "$out" "$raw" "$work/lib" "$work/minilm"
  # Python's tarfile, as the machine may have no xz; its decoder needs the 512 MiB dictionary.
  python3 -c 'import sys, tarfile
safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], **safe)' \
    "$kit/bin.tar.xz" "$work"
  chmod +x "$work"/bin/*
  # cudarc loads libnccl.so; pip's nvidia-nccl ships libnccl.so.2 only.
  local nccl
  nccl=$(python3 - <<'PY'
import glob, os, sys
for path in sys.path:
    hits = sorted(glob.glob(os.path.join(path, "nvidia", "**", "libnccl.so*"), recursive=True))
    if hits:
        print(hits[0])
        break
PY
  )
  if [ -n "$nccl" ]; then
    ln -sf "$nccl" "$work/lib/libnccl.so"
    export LD_LIBRARY_PATH=$work/lib:$(dirname "$nccl"):${LD_LIBRARY_PATH:-}
  fi
  # Every step gets at most its own limit and what is left of the whole check's.
  local deadline=$((SECONDS + ${DEVICE_CHECK_SECONDS:-470}))
  budget() { local left=$((deadline - SECONDS)); echo $((left < $1 ? (left > 5 ? left : 5) : $1)); }
  cp "$kit/minilm-config.json" "$work/minilm/config.json"
  cp "$kit/tokenizer.json" "$work/minilm/tokenizer.json"
  local results=$raw/results.jsonl
  : >"$results"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$raw/card.txt"
  else
    echo "no GPU: dry run on $(nproc) CPU cores" | tee "$raw/card.txt"
  fi

  # 1. NCCL.
  for ranks in 1 2; do
    ALL_REDUCE_BACKEND=$reduce timeout "$(budget 60)" "$work/bin/all_reduce" "$ranks" 5 >>"$results" \
      2>>"$raw/nccl.log" ||
      echo "{\"bench\": \"all_reduce\", \"impl\": \"dgr\", \"ranks\": $ranks, \"failed\": true}" >>"$results"
    local theirs=nccl
    [ "$reduce" = ring ] && theirs=gloo
    ALL_REDUCE_BACKEND=$theirs timeout "$(budget 60)" python3 scripts/bench/all_reduce_gloo.py "$ranks" 5 \
      >>"$results" 2>>"$raw/nccl.log" ||
      echo "{\"bench\": \"all_reduce\", \"impl\": \"$theirs (torch)\", \"ranks\": $ranks, \"failed\": true}" >>"$results"
  done

  # 2. Model speed, side by side.
  # Not exported: DGR_* variables are configuration keys to `dgr` itself.
  local bench_env=(DGR_BENCH_MINILM="$work/minilm" DGR_BENCH_REPEATS="$repeats")
  for bench in train-minilm encoder; do
    local batch=$train_batch
    [ "$bench" = encoder ] && batch=$encoder_batch
    env "${bench_env[@]}" DGR_BENCH_BATCH=$batch DGR_BENCH_BACKEND=$backend timeout "$(budget 120)" "$work/bin/speed" "$bench" >>"$results" \
      2>>"$raw/speed.log" || echo "{\"bench\": \"$bench\", \"system\": \"dgr (burn $backend)\", \"failed\": true}" >>"$results"
    env "${bench_env[@]}" DGR_BENCH_BATCH=$batch timeout "$(budget 60)" python3 scripts/bench/model_speed_torch.py --device "$torch_device" "$bench" \
      >>"$results" 2>>"$raw/speed.log" ||
      echo "{\"bench\": \"$bench\", \"system\": \"pytorch\", \"failed\": true}" >>"$results"
  done

  # 3. Every stage of a small job on the GPU.
  python3 scripts/bench/random_bert.py "$work/minilm"
  cat >"$work/job.toml" <<TOML
[job]
dir = "$work/job"
[device]
kind = "$kind"
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
engine = { steps = $stage1_steps, batch_size = $stage1_batch, learning_rate = 5e-4, warmup_steps = 10, checkpoint_every = 0 }
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
  timeout "$(budget 240)" "$work/bin/dgr" --log-format json --config "$work/job.toml" run >"$raw/job.txt" 2>"$raw/job.log" ||
    echo "{\"bench\": \"job\", \"failed\": true}" >>"$results"
  cp "$work/job/stage1/train_log.jsonl" "$raw/stage1_train_log.jsonl" 2>/dev/null || true
  cp "$work/job/stage2/train_log.jsonl" "$raw/stage2_train_log.jsonl" 2>/dev/null || true
  # Stage 2 again as a data-parallel job of one rank (a training coordinator and `dgr
  # train-distill --coordinator`): the rank joins its NCCL communicator through the ring.
  if [ -d "$work/job/stage2" ]; then
    rm -rf "$work/job/stage2"
    DGR_TOKEN=device-check MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 NNODES=1 NODE_RANK=0 NPROC_PER_NODE=1 \
      LAUNCH_BIN=$work/bin/dgr LAUNCH_LOG_DIR=$raw/ranks timeout "$(budget 90)" launch/multi_node.sh train-distill \
      "$work/job.toml" >>"$raw/ranks.log" 2>&1 || echo '{"bench": "ranks", "failed": true}' >>"$results"
  fi
  local status=0
  python3 scripts/bench/device_check_report.py "$raw" >"$out/device-check.md" || status=$?
  cat "$out/device-check.md"
  tar -czf "$out/details.tar.gz" -C "$work" out
  return "$status"
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
