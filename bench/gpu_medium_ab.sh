#!/usr/bin/env bash
# gpu_medium_ab.sh — Medium 3.5 FP8 at 8,192 tokens of KV under BORA_MEGA_* settings of one binary,
# alternating so every setting meets the same machine; optionally gpu_engine first and a trace.
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR bash bench/gpu_medium_ab.sh
#   BIN: bora and the test binaries; VARS: settings groups, space-separated, settings within a group
#   joined by ',' ("-" is the default: "- FLAGS=512"); ROUNDS (3); TESTS=1: gpu_engine first;
#   DIAG: settings groups run once after the rounds (e.g. "DEBUG=5 DEBUG=7": results wrong);
#   PROBE=1: bench/readbw_probe first; OLD=DIR: the previous bora, run (its default) first in every round; TRACE=1: one traced run of
#   the default at the end (and of the old binary's, with OLD); SEVEN=1: 7B FP8 and BF16 at 512, old (if OLD) and new, two rounds
#   (SEVEN_VARS: settings groups of the new binary for 7B FP8, as VARS; default "-")
# The trace (BORA_MEGA_TRACE) and the diagnostic switches (BORA_MEGA_DEBUG) need a build made with
# `make MEGA_DIAG=1` (its own BUILD directory); the default build refuses them.
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
step() { echo; echo "=== $(date -u +%T) $*"; }
envs_of() { [ "$1" = - ] && return; echo "$1" | tr ',' ' ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g"; }
step machine
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader
if [ "${PROBE:-0}" = 1 ]; then
    step "readbw_probe"
    timeout 200 "$BIN/bench/readbw_probe" 2>&1 | tee "$OUT/readbw_probe.txt"
fi
if [ "${TESTS:-0}" = 1 ]; then
    step "gpu_engine"
    BORA_SHARED=${BORA_SHARED:-} timeout 400 "$BIN/tests/gpu_engine" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -40
    step "gpu_kernels"
    timeout 200 "$BIN/tests/gpu_kernels" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -20
fi
for r in $(seq 1 "${ROUNDS:-3}"); do
    if [ -n "${OLD:-}" ]; then
        step "round $r Medium 3.5 fp8 8192: old"
        timeout 150 "$OLD/bora" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 32 --json
    fi
    for v in ${VARS:--}; do
        step "round $r Medium 3.5 fp8 8192: $v"
        env $(envs_of "$v") timeout 150 "$BIN/bora" bench decode --preset mistral-medium-3.5 --precision fp8 \
            --ctx 8192 --tokens 32 --json
    done
done 2>&1 | tee "$OUT/medium_ab.jsonl"
for v in ${DIAG:-}; do
    step "diagnostic Medium 3.5 fp8 8192: $v"
    env $(envs_of "$v") timeout 150 "$BIN/bora" bench decode --preset mistral-medium-3.5 --precision fp8 \
        --ctx 8192 --tokens 32 --json
done 2>&1 | tee -a "$OUT/medium_ab.jsonl"
if [ "${SEVEN:-0}" = 1 ]; then
    for r in 1 2; do
        for pr in fp8 bf16; do
            if [ -n "${OLD:-}" ]; then
                step "round $r 7B $pr at 512: old"
                timeout 100 "$OLD/bora" bench decode --preset mistral-7b --precision $pr --ctx 512 --tokens 256 --json
            fi
            for v in $([ $pr = fp8 ] && echo "${SEVEN_VARS:--}" || echo -); do
                step "round $r 7B $pr at 512: $v"
                env $(envs_of "$v") timeout 100 "$BIN/bora" bench decode --preset mistral-7b --precision $pr \
                    --ctx 512 --tokens 256 --json
            done
        done
    done 2>&1 | tee -a "$OUT/medium_ab.jsonl"
fi
if [ "${TRACE:-0}" = 1 ] && [ -n "${OLD:-}" ]; then
    step "Medium 3.5 traced (BORA_MEGA_TRACE=1): old"
    BORA_MEGA_TRACE=1 timeout 150 "$OLD/bora" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 \
        --tokens 16 2>&1 | tee "$OUT/medium_trace_old.txt"
fi
if [ "${TRACE:-0}" = 1 ]; then
    step "Medium 3.5 traced (BORA_MEGA_TRACE=1)"
    BORA_MEGA_TRACE=1 timeout 150 "$BIN/bora" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 \
        --tokens 16 2>&1 | tee "$OUT/medium_trace.txt"
fi
step done
