#!/usr/bin/env bash
# The LLVM that Burn's CUDA backend links (cubecl-llvm, through tracel-llvm-bundler 23.1.0-4),
# from the Debian archive instead of the bundler's download, so that `--features cuda` builds
# offline (scripts/device-check.sh build). Unpacks Debian's llvm-23 static libraries into
# target/llvm (about 72 MB download, nothing installed system-wide), sets it up as the bundler's
# install folder, and writes target/llvm/env.sh to source before cargo.
#
#   scripts/cuda-llvm.sh && source target/llvm/env.sh
#   LLVM_SUITE=trixie LLVM_MAJOR=22 scripts/cuda-llvm.sh     # the older LLVM, if sid's moved on
#
# The bundler's folder: $XDG_DATA_HOME/tracel/tracel-llvm-<version>/ with an empty
# `.tracel-llvm-installed` marker and `bin/llvm-config`, whose --libdir, --libs and --system-libs
# it links; the wrapper drops what Debian's build lists but dgr does not use (Polly, z3, libxml2).
# After moving target/llvm in a reused target dir: cargo clean -p cubecl-llvm -p tracel-llvm-bundler.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/target/llvm; LLVM_MAJOR=${LLVM_MAJOR:-23}; SUITE=${LLVM_SUITE:-sid}
real=$root/deb/usr/lib/llvm-$LLVM_MAJOR
inst=$root/xdg/tracel/tracel-llvm-23.1.0-4        # = dirs::data_local_dir()/tracel/tracel-llvm-<TRACEL_LLVM_FULL_VERSION>
if [ ! -x "$real/bin/llvm-config" ]; then
  apt=$root/apt; mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$root/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" > "$apt/sources.list"
  o=(-o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent -o Dir::State::Lists="$apt/lists"
     -o Dir::Cache="$apt/cache" -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  apt-get "${o[@]}" -q update
  (cd "$root/debs" && apt-get "${o[@]}" -q download "llvm-$LLVM_MAJOR-dev" "llvm-$LLVM_MAJOR")
  for d in "$root"/debs/*.deb; do dpkg-deb -x "$d" "$root/deb"; done
fi
# Files are written only when their content changes: Burn's build scripts watch them, and a new
# mtime alone would make cargo compile the whole CUDA stack again.
put() { # path: stdin becomes the file's content where it differs
  local temp
  temp=$(mktemp) # not beside the file: a new entry would change its folder's mtime
  cat >"$temp"
  cmp -s "$temp" "$1" || cat "$temp" >"$1"
  rm -f "$temp"
}
# glibc < 2.38 (Debian 12) lacks the C23 strto*/scanf aliases that newer Debian's LLVM archives call.
put "$root/isoc23_shim.c" <<'EOF'
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
int __isoc23_sscanf(const char *s, const char *f, ...) { va_list a; va_start(a, f); int r = vsscanf(s, f, a); va_end(a); return r; }
int __isoc23_scanf(const char *f, ...) { va_list a; va_start(a, f); int r = vscanf(f, a); va_end(a); return r; }
EOF
shim=$real/lib/libisoc23shim.a # the bundler's only link-search dir is --libdir
if [ ! -e "$shim" ] || [ "$root/isoc23_shim.c" -nt "$shim" ]; then
  cc -O2 -fPIC -c "$root/isoc23_shim.c" -o "$root/isoc23_shim.o"
  rm -f "$shim" && ar rcs "$shim" "$root/isoc23_shim.o"
fi
[ -e "$real/lib/libzstd.so" ] || ln -s /usr/lib/x86_64-linux-gnu/libzstd.so.1 "$real/lib/libzstd.so" # no libzstd-dev needed
[ -e "$real/lib/libz.so" ] || ln -s /usr/lib/x86_64-linux-gnu/libz.so.1 "$real/lib/libz.so"          # no zlib1g-dev needed
mkdir -p "$inst/bin"
[ -e "$inst/.tracel-llvm-installed" ] || touch "$inst/.tracel-llvm-installed"
put "$inst/bin/llvm-config" <<EOF
#!/bin/sh
out=\$("$real/bin/llvm-config" "\$@") || exit \$?
case " \$* " in
  *" --system-libs "*) echo "\$out" | sed -e 's#[^ ]*libz3[^ ]*##g' -e 's#-lxml2##g' -e 's#\$# -lisoc23shim#' ;;
  *" --libs "*) echo "\$out" | sed -e 's#-lPolly[A-Za-z]*##g' ;;
  *) echo "\$out" ;;
esac
EOF
chmod +x "$inst/bin/llvm-config"
"$inst/bin/llvm-config" --link-static --system-libs >/dev/null   # fails here if llvm-config cannot start (needs libz3.so.4)
echo "export XDG_DATA_HOME=$root/xdg" | put "$root/env.sh"
echo "LLVM $("$inst/bin/llvm-config" --version) ready: source $root/env.sh"
