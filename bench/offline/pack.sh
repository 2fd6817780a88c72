#!/usr/bin/env bash
# Pack what odsi's benchmarks need on a machine that has no Node.js and no package registry (a
# lab machine with many cores, say), into BUNDLE (default .bundle/, which git ignores):
#   node.tar.xz  the Node.js binary running this script (it links only glibc, libstdc++, libgcc_s)
#   odsi.tar.xz  dist/ (the build), and of node_modules only the files that a traced run of the
#                commands bench/offline/hop-overhead.sh runs opened, plus llama.cpp's whole CPU
#                library folder (ggml picks a CPU variant by the processor it finds there)
#   stories260K.gguf  the test model (../shared/models/stories260K), for a control run
# Run it from a built checkout (npm install && npm run build) on x86-64 Linux; it needs strace(1)
# and xz(1). Unpacked there by bench/offline/hop-overhead.sh. The trace runs the same benchmark
# on the tiny model, for a minute or so.
#
#   bash bench/offline/pack.sh [BUNDLE]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bundle=$(realpath -m "${1:-.bundle}")
for tool in strace xz taskset; do
  command -v "$tool" >/dev/null || { echo "pack: $tool(1) is needed" >&2; exit 1; }
done
[ -f dist/bench/hop-overhead.js ] || { echo 'pack: no build here; run npm install && npm run build' >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo 'pack: the traced run pins the gateway and one node apart: it needs 2 cores' >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$bundle"

# 1. every file the commands open, from a traced run of them on the tiny model (4-bit, as there)
trace() { strace -f -qq -e trace=openat,open -e status=successful -o "$work/trace.$1" -- "${@:2}" >/dev/null; }
trace synth node bin/odsi.js model synth --shape tiny --dtype q4_0 --out "$work/tiny-q4_0.gguf"
stories=../shared/models/stories260K/stories260K.gguf # the control: this model's per-hop figure is known from small machines
[ -f "$stories" ] || { echo "pack: $stories is missing" >&2; exit 1; }
hop() { trace "$1" node --import ./dist/src/util/polyfill.js dist/bench/hop-overhead.js --hops 1 --pin --warmup 1 --rounds 1 --tokens 4 --out "$work/$1.json" "${@:2}"; }
hop hop-llama --model "$work/tiny-q4_0.gguf" --engine llama
hop hop-reference --model "$stories" --engine reference
hop hop-ort --model "$stories" --engine ort
# the quoted path of each successful open, under node_modules, relative to the root
sed -n 's/.*open[a-z]*(\(AT_FDCWD, \)\{0,1\}"\([^"]*\)".*/\2/p' "$work"/trace.* | sed "s#^$root/##" | grep '^node_modules/' | sort -u >"$work/opened"
while read -r f; do [ -f "$f" ] && echo "$f"; done <"$work/opened" >"$work/files"
find node_modules/@node-llama-cpp/linux-x64 -type f >>"$work/files"
find dist -type f ! -name '*.map' >>"$work/files"
sort -u -o "$work/files" "$work/files"

# 2. the archives, and the control model
cp "$stories" "$bundle/"
tar -cf - -T "$work/files" | xz -T0 -6 >"$bundle/odsi.tar.xz"
node_bin=$(readlink -f "$(command -v node)")
tar -cf - -C "$(dirname "$node_bin")" "$(basename "$node_bin")" --transform "s#^$(basename "$node_bin")\$#node#" | xz -T0 -6 >"$bundle/node.tar.xz"
{
  echo "node $(node --version), $(wc -l <"$work/files") files ($(grep -c '^node_modules/' "$work/files") of node_modules)"
  echo "packed $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} >"$bundle/MANIFEST"
cat "$bundle/MANIFEST"
du -sh "$bundle"/*.tar.xz
