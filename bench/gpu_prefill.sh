#!/usr/bin/env bash
# gpu_prefill.sh — the prefill job in one device call: build with CUDA, the prefill kernel and
# engine tests, the decode engine test (prompts now go through prefill), then TTFT figures
# (Mistral-7B FP8 at 128/512/2048/8192 with a per-kind profile, BF16 at 2048, Mistral Medium 3.5
# FP8 at 2048). Every log lands under $OUT (default /tmp/bora-prefill).
# usage (repo root, deps unpacked: source .deps/unpack.sh): bash bench/gpu_prefill.sh [--quick]
set -uo pipefail
OUT=${OUT:-/tmp/bora-prefill}
mkdir -p "$OUT"
log=$OUT/log
status=0
quick=${1:-}
step() { echo; echo "=== $*" | tee -a "$log"; }
run() { timeout "${T:-300}" "$@" 2>&1 | tee -a "$log"; local rc=${PIPESTATUS[0]}; [ $rc -eq 0 ] || { echo "FAILED ($rc): $*" | tee -a "$log"; status=1; }; return $rc; }

step "machine"
run nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv
step "build"
# no package manager reachable there: the libraries come from .deps (source .deps/unpack.sh)
mkdir -p build && touch build/.deps-ok
# `all` when every library is there (boractl needs libedit, which the deps bundle may lack)
make -j16 CUDA=1 all >"$OUT/build.log" 2>&1 ||
    make -j16 CUDA=1 build/bora build/tests/gpu_prefill build/tests/gpu_prefill_engine build/tests/gpu_engine \
        >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log" | tee -a "$log"; echo "build failed" | tee -a "$log"; exit 1; }
step "gpu_prefill (kernels vs C references)"
T=120 run build/tests/gpu_prefill
step "ttft mistral-7b fp8"
T=240 run build/bora bench ttft --preset mistral-7b --precision fp8 --prompt 128,512,2048,8192 --profile
T=240 run build/bora bench ttft --preset mistral-7b --precision fp8 --prompt 128,512,2048,8192 --json | tee "$OUT/ttft.jsonl" >/dev/null
step "gpu_prefill_engine (prefill vs stepwise, every fixture)"
T=180 run build/tests/gpu_prefill_engine
step "gpu_engine (decode helper's test; prompts now prefill)"
T=180 run build/tests/gpu_engine
[ "$quick" = "--quick" ] && exit $status
step "ttft mistral-7b bf16, chunk variants"
T=120 run build/bora bench ttft --preset mistral-7b --precision bf16 --prompt 2048 --json | tee -a "$OUT/ttft.jsonl"
T=120 run build/bora bench ttft --preset mistral-7b --precision fp8 --prompt 8192 --chunk 4096 --json | tee -a "$OUT/ttft.jsonl"
step "ttft mistral-medium-3.5 fp8"
T=200 run build/bora bench ttft --preset mistral-medium-3.5 --precision fp8 --prompt 2048 --runs 3 --profile --json | tee -a "$OUT/ttft.jsonl"
exit $status
