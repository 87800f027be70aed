#!/usr/bin/env bash
# Side-by-side key scoring speed (stage 2's teacher forcing): dgr packed (a token tree), dgr one
# key a row, and PyTorch one key a row (the reference's way), same student, same keys, same
# machine, one run.
# Keys are real: the candidates of wiki-vital train queries retrieved by a MiniLM-initialised
# student (50 stage-1 steps suffice for the shape of the key sets; speed does not depend on
# what the weights learnt).
#   pip install torch transformers pyarrow tokenizers
#   scripts/bench/key_scoring.sh [threads [student]]   (default: 2, a 50-step student of its own;
#   a better-trained student, e.g. a stage-1 checkpoint's model/, finds more keys per query)
# BENCH_PROFILE=dev runs the dev profile (dependencies optimised, dgr's own code not), which
# needs no release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
student=${2:-}
profile=${BENCH_PROFILE:-release}
bin=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
job=work/bench-keys
scripts/fetch-assets.sh >/dev/null
cargo build --profile "$profile" --locked -p dgr-cli 2>/dev/null
cargo bench --profile "$profile" -p dgr-model --bench key_scoring --no-run --locked --features x86-v4 2>/dev/null
mkdir -p "$job"
cat > "$job/config.toml" <<TOML
[job]
dir = "$job"
[train_gen.engine]
steps = 50
checkpoint_every = 0
TOML
dgr="$bin/dgr --config $job/config.toml"
[ -f "$job/data/dataset.json" ] || $dgr prepare
[ -f "$job/index/index.json" ] || $dgr index build
if [ -z "$student" ]; then
  [ -f "$job/stage1/weights/final/model.safetensors" ] || $dgr train-gen
  student=$job/stage1/weights/final
fi
student=$(realpath "$student")
DGR_RETRIEVE__MODEL=$student $dgr retrieve --split train --limit 16
python3 scripts/bench/key_scoring_keys.py "$job" assets/minilm/tokenizer.json "$job/keys.json" 16 6
# (cargo runs benches in the package's directory: absolute paths)
RAYON_NUM_THREADS=$threads cargo bench -q --profile "$profile" -p dgr-model --features x86-v4 --bench key_scoring -- "$student" "$PWD/$job/keys.json" 2>/dev/null \
  | sed "s/^{/{\"threads\": $threads, /"
python3 scripts/bench/key_scoring_torch.py "$student" "$job/keys.json" --threads "$threads" 2>/dev/null \
  | sed "s/^{/{\"threads\": $threads, /"
