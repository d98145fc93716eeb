#!/usr/bin/env bash
# gpu_first_prompt.sh — the first prompt of each length after the engine opens, against the same
# prompt once warm: Mistral-7B FP8 prompts of 64, 512 and 2,048 tokens in one process (each its
# own GEMM bucket, met for the first time) and a 64-token turn after 1,984 cached tokens, each in
# a fresh process per build and round; `ttft_first_ms` is the first prompt, `ttft_ms` the median
# after two warm-ups, `open_ms` the engine's open (weights generated, kernels and GEMMs timed).
# usage (repo root on the device machine, after source .deps/unpack.sh):
#   BINS="name:DIR[:ENV=VAL] ..." [ROUNDS=2] [MEDIUM=1] bash bench/gpu_first_prompt.sh
#   e.g. BINS="tuned:/tmp/x untuned:/tmp/x:BORA_PREFILL_TUNE=0". JSON lines under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/bora-first}
mkdir -p "$OUT"
step() { echo; echo "=== $(date -u +%T) $*"; }
run() {   # name:dir[:env] then the bench arguments
    local spec=$1 name dir env
    shift
    name=${spec%%:*}; dir=${spec#*:}; env=
    case $dir in *:*) env=${dir#*:}; dir=${dir%%:*} ;; esac
    step "$name $*"
    env $env timeout 300 "$dir/bora" bench ttft "$@" --json
}
step machine
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader
for r in $(seq 1 "${ROUNDS:-2}"); do
    for b in $BINS; do
        run "$b" --preset mistral-7b --precision fp8 --prompt 64,512,2048 --runs 5
        run "$b" --preset mistral-7b --precision fp8 --prompt 2048 --cached 1984 --runs 5
    done
done 2>&1 | tee "$OUT/first_prompt.jsonl"
if [ "${MEDIUM:-0}" = 1 ]; then
    for b in $BINS; do
        run "$b" --preset mistral-medium-3.5 --precision fp8 --prompt 2048 --runs 3
    done 2>&1 | tee -a "$OUT/first_prompt.jsonl"
fi
