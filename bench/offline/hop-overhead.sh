#!/usr/bin/env bash
# Per hop with nodes that share no core: bench/hop-overhead --pin on a machine with many cores,
# no Node.js and no package registry, from the bundle bench/offline/pack.sh made (issue 13's
# per-hop criterion with a real model, which a 2-core machine cannot show). Run from the root
# of a checkout of the same commit (no node_modules, no build needed):
#
#   bash bench/offline/hop-overhead.sh [BUNDLE] [OUTDIR]     (defaults: .bundle, $OUT or bench/results)
#
# It unpacks node into a temporary folder and dist/ + node_modules/ into the checkout, writes a
# synthetic SmolLM2-135M model, and runs, each under its own time limit, most wanted first:
#   1. SmolLM2-135M Q4_0 on the llama engine (the issue's real-model case);
#   2. stories260K on the reference engine (the control: its figure is known from small machines);
#   3. SmolLM2-135M f32 on the ORT engine (the real-model case sessions 16-18 measured on 2 cores);
# each with --pin (the gateway and each of the hops' nodes on cores of their own, as many engine
# threads as each has) into OUTDIR/hop-overhead-pinned-{smollm2-q4,stories,smollm2-f32}.json, and the machine's facts into
# OUTDIR/hop-overhead-pinned-machine.txt. Sized by ODSI_OFFLINE_HOPS (default 3: needs 4 cores),
# ODSI_OFFLINE_ROUNDS (6), ODSI_OFFLINE_WARMUP (16 generations) and ODSI_OFFLINE_LIMIT_S (170 s a
# run: the three fit in 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=$(realpath "${1:-.bundle}")
out=$(realpath -m "${2:-${OUT:-bench/results}}")
hops=${ODSI_OFFLINE_HOPS:-3}
rounds=${ODSI_OFFLINE_ROUNDS:-6}
warmup=${ODSI_OFFLINE_WARMUP:-16}
limit=${ODSI_OFFLINE_LIMIT_S:-170}
mkdir -p "$out" bench/tmp
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT

# tar -J needs xz(1); Python's tarfile reads xz without it
unpack() {
  if command -v xz >/dev/null; then tar -xJf "$1" -C "$2"
  else python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
}
unpack "$bundle/node.tar.xz" "$tools"
unpack "$bundle/odsi.tar.xz" .
export PATH=$tools:$PATH

{
  echo "date $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(cat "$bundle/MANIFEST" | tr '\n' ' ')"
  echo "node $(node --version); cores $(nproc); $(uname -r)"
  grep -m1 'model name' /proc/cpuinfo || true
  lscpu 2>/dev/null | grep -E '^ *(L2|L3)' || true
  echo "load $(cat /proc/loadavg)"
  command -v taskset >/dev/null && echo "taskset: $(command -v taskset)" || echo 'taskset: missing (--pin needs it)'
} | tee "$out/hop-overhead-pinned-machine.txt"

bench() { # name, then hop-overhead's arguments
  local name=$1
  shift
  echo "== $name: hop-overhead $*"
  timeout "$limit" node --import ./dist/src/util/polyfill.js dist/bench/hop-overhead.js --pin --hops "$hops" --rounds "$rounds" --warmup "$warmup" --out "$out/hop-overhead-pinned-$name.json" "$@" ||
    echo "== $name: failed or ran past ${limit}s (exit $?)"
}
synth() { [ -f "bench/tmp/$1" ] || node bin/odsi.js model synth --shape smollm2-135m --dtype "$2" --out "bench/tmp/$1"; }
synth smollm2-135m-q4_0.gguf q4_0
bench smollm2-q4 --model bench/tmp/smollm2-135m-q4_0.gguf --engine llama --tokens 32
bench stories --model "$bundle/stories260K.gguf" --engine reference
synth smollm2-135m-f32.gguf f32
bench smollm2-f32 --model bench/tmp/smollm2-135m-f32.gguf --engine ort --tokens 32
echo "load at the end $(cat /proc/loadavg)" | tee -a "$out/hop-overhead-pinned-machine.txt"
