#!/usr/bin/env bash
# gpu_ab.sh — a kernel change measured against the build before it, in one device call: a quick
# run of the new binary (the call stops there if it fails), optionally the CUDA-vs-CPU engine
# tests (also under BORA_MEGA_* settings), then the 7B decode benchmark of the old and the new
# binary alternating, so both meet the same machine (figures between machines differ by up to
# 8 points: docs/PERFORMANCE_GPU.md).
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR OLD=DIR bash bench/gpu_ab.sh
#   BIN: the new bora and test binaries; OLD: a folder with the previous bora
#   TESTS=1: gpu_engine first; ENGINE_VARS: BORA_MEGA_* settings (without the prefix) for more
#   gpu_engine runs, space-separated groups ("BLOCKS=12 CB=256" runs twice), settings within a group
#   joined by ',' or ';'
#   ROUNDS (2), PRECS ("fp8 bf16"), AB_VARS: settings of the new binary measured in round 1, space-
#   separated groups, settings within a group joined by ',' or ';' ("AHEAD=2,TRACE=1 FLAGS=128")
#   AB_ALL=1: the AB_VARS settings in every round, not only the first
#   MEDIUM=1: Medium 3.5 FP8 at 8,192 tokens, old and new
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
step() { echo; echo "=== $(date -u +%T) $*"; }
bench() { timeout 100 "$1" bench decode --preset mistral-7b --precision "$2" --ctx 512 --tokens 256 --json; }
step machine
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader
step "quick run of the new binary"
if ! timeout 60 "$BIN/bora" bench decode --preset mistral-7b --precision fp8 --ctx 512 --tokens 32 --json; then
    echo "the new binary failed: stopping"
    exit 1
fi
if [ "${TESTS:-0}" = 1 ]; then
    step "gpu_engine"
    timeout 300 "$BIN/gpu_engine" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -30
fi
for v in ${ENGINE_VARS:-}; do
    envs=$(echo "$v" | tr ',;' '  ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g")
    step "gpu_engine, $envs"
    env $envs timeout 300 "$BIN/gpu_engine" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -12
done
for r in $(seq 1 "${ROUNDS:-2}"); do
    for pr in ${PRECS:-fp8 bf16}; do
        step "round $r $pr: old"; bench "$OLD/bora" "$pr"
        step "round $r $pr: new"; bench "$BIN/bora" "$pr"
        if [ "$r" = 1 ] || [ "${AB_ALL:-0}" = 1 ]; then
            for v in ${AB_VARS:-}; do
                envs=$(echo "$v" | tr ',;' '  ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g")
                step "round $r $pr: new, $envs"; env $envs bash -c "$(declare -f bench); bench '$BIN/bora' '$pr'"
            done
        fi
    done
done 2>&1 | tee "$OUT/ab.jsonl"
if [ "${MEDIUM:-0}" = 1 ]; then
    for b in "$OLD" "$BIN"; do
        step "Medium 3.5 FP8 at 8,192: $b"
        timeout 150 "$b/bora" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 32 --json
    done 2>&1 | tee -a "$OUT/ab.jsonl"
fi
step done
