#!/usr/bin/env bash
# gpu_ttft_ab.sh — time to first token of two builds in one device call, alternating so both meet
# the same machine: Mistral-7B FP8 at 128/512/2,048/8,192 tokens, the per-kind profile at 2,048,
# BF16 at 2,048 and (MEDIUM=1) Mistral Medium 3.5 FP8 at 2,048. Optionally the prefill tests first.
# usage (repo root on the device machine, after source .deps/unpack.sh):
#   BIN=DIR [OLD=DIR] [ROUNDS=2] [TESTS=1] [MEDIUM=1] bash bench/gpu_ttft_ab.sh
#   BINS="name:DIR name:DIR ...": compare these builds instead of OLD and BIN (tests still run BIN's)
#   BIN, OLD: directories holding bora (and, for TESTS=1, tests/gpu_prefill and
#   tests/gpu_prefill_engine; BORA_SHARED names the fixtures). Logs and JSON lines under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/bora-ttft}
mkdir -p "$OUT"
step() { echo; echo "=== $(date -u +%T) $*"; }
bins() { [ -n "${BINS:-}" ] && { echo $BINS; return; }; [ -n "${OLD:-}" ] && echo "old:$OLD"; echo "new:$BIN"; }
step machine
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader
if [ "${TESTS:-0}" = 1 ]; then
    step "gpu_prefill"
    timeout 200 "$BIN/tests/gpu_prefill" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -20
    step "gpu_prefill_engine"
    BORA_SHARED=${BORA_SHARED:-} timeout 300 "$BIN/tests/gpu_prefill_engine" 2>&1 |
        grep -vE '^\[ +(RUN|OK) +\]' | tail -20
fi
for r in $(seq 1 "${ROUNDS:-2}"); do
    for b in $(bins); do
        step "round $r 7B fp8: ${b%%:*}"
        timeout 200 "${b#*:}/bora" bench ttft --preset mistral-7b --precision fp8 --prompt 128,512,2048,8192 --json
    done
done 2>&1 | tee "$OUT/ttft_ab.jsonl"
for b in $(bins); do
    step "profile 7B fp8 2048: ${b%%:*}"
    timeout 120 "${b#*:}/bora" bench ttft --preset mistral-7b --precision fp8 --prompt 2048 --profile --json
    step "7B bf16 2048: ${b%%:*}"
    timeout 120 "${b#*:}/bora" bench ttft --preset mistral-7b --precision bf16 --prompt 2048 --json
done 2>&1 | tee -a "$OUT/ttft_ab.jsonl"
if [ "${MEDIUM:-0}" = 1 ]; then
    for b in $(bins); do
        step "Medium 3.5 fp8 2048: ${b%%:*}"
        timeout 240 "${b#*:}/bora" bench ttft --preset mistral-medium-3.5 --precision fp8 --prompt 2048 --runs 3 \
            --profile --json
    done 2>&1 | tee -a "$OUT/ttft_ab.jsonl"
fi
