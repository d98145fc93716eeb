#!/usr/bin/env bash
# gpu_decode.sh — the decode loop on the H200 in one device call: the CUDA-vs-CPU engine tests
# (persistent and per-kernel step) and the decode benchmarks, from binaries built beforehand
# (BIN: a folder holding bora, gpu_engine, gpu_kernels and, when built, gpu_direct_load,
# gpu_prefill, gpu_prefill_engine; default build/ and build/tests/).
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR bash bench/gpu_decode.sh
# The trace (BORA_MEGA_TRACE) and the diagnostic switches (BORA_MEGA_DEBUG) need a build made with
# `make MEGA_DIAG=1` (its own BUILD directory); the default build refuses them.
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
BORA=${BIN:+$BIN/bora}; BORA=${BORA:-build/bora}
TESTS=${BIN:-build/tests}
step() { echo; echo "=== $(date -u +%T) $*"; }
step machine
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader
if [ "${DECODE_TESTS:-1}" = 1 ]; then
    step "gpu_engine (CUDA vs CPU engine, every fixture)"
    timeout 300 "$TESTS/gpu_engine" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -60
    step "gpu_kernels"
    timeout 120 "$TESTS/gpu_kernels" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -15
    for t in gpu_direct_load gpu_prefill gpu_prefill_engine test_gen_engine; do   # when built (test_gen_engine: the prefix cache on CUDA)
        [ -x "$TESTS/$t" ] || continue
        step "$t"
        timeout 200 "$TESTS/$t" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -15
    done
    if [ -x "${BIN:-build}/borad" ]; then
        step "e2e_gpu_borad (borad on the GPU: direct loader, ids, prefix cache)"
        timeout 120 bash tests/e2e_gpu_borad.sh "${BIN:-build}" 2>&1 | tail -15
    fi
fi
for v in ${ENGINE_VARS:-}; do   # gpu_engine again under BORA_MEGA_* settings (a variant's correctness), e.g. "FLAGS=256"
    envs=$(echo "$v" | tr ';' ' ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g")
    step "gpu_engine, $envs"
    env $envs timeout 300 "$TESTS/gpu_engine" 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' | tail -8
done
RB=${BIN:+$BIN/bench/readbw_probe}; RB=${RB:-build/bench/readbw_probe}
if [ -x "$RB" ]; then   # the read ceiling several ways (the decode figures divide by the best two)
    step "read bandwidth ($RB)"
    timeout 60 "$RB" 2>&1 | tee "$OUT/readbw_probe.txt"
fi
step decode
# DECODE_EXTRA: more runs, ';'-separated (e.g. "mistral-small-24b --precision fp8 --ctx 512 --tokens 64")
IFS=';' read -ra runs <<< "mistral-7b --precision fp8 --ctx 512 --tokens 256;mistral-7b --precision bf16 --ctx 512 --tokens 256;mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 32;${DECODE_EXTRA:-}"
for args in "${runs[@]}"; do
    [ -n "$args" ] && timeout 150 "$BORA" bench decode --preset $args --json
done 2>&1 | tee "$OUT/decode.jsonl"
step "decode, per-kernel step (BORA_DECODE=kernels)"
BORA_DECODE=kernels timeout 100 "$BORA" bench decode --preset mistral-7b --precision fp8 --ctx 512 --tokens 256 --json 2>&1 | tee -a "$OUT/decode.jsonl"
for cb in ${MEGA_CBS:-}; do
    step "decode, persistent, stage rows of $cb bytes (BORA_MEGA_CB)"
    for pr in fp8 bf16; do
        BORA_MEGA_CB=$cb timeout 100 "$BORA" bench decode --preset mistral-7b --precision $pr --ctx 512 --tokens 256 --json 2>&1 | tee -a "$OUT/decode.jsonl"
    done
done
for v in ${MEGA_VARS:-}; do   # e.g. "NS=3 FLAGS=16;DEBUG=4": each a set of BORA_MEGA_* settings
    envs=$(echo "$v" | tr ';' ' ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g")
    step "decode, persistent, $envs"
    for pr in ${MEGA_PRECS:-fp8}; do
        env $envs timeout 100 "$BORA" bench decode --preset mistral-7b --precision $pr --ctx 512 --tokens 256 --json 2>&1 | tee -a "$OUT/decode.jsonl"
    done
done
for v in ${MEDIUM_VARS:-}; do   # the same for Medium 3.5 at 8,192 tokens, persistent forced
    envs=$(echo "$v" | tr ';' ' ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g")
    step "decode, Medium 3.5 persistent, $envs"
    env $envs BORA_DECODE=persistent timeout 150 "$BORA" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 16 --json 2>&1 | tee -a "$OUT/decode.jsonl"
done
for d in ${MEGA_DBGS:-}; do
    step "decode, persistent, diagnostics $d (BORA_MEGA_DEBUG: 1 no math, 2 no grid waits, 4 no attention; results wrong)"
    BORA_MEGA_DEBUG=$d timeout 100 "$BORA" bench decode --preset mistral-7b --precision fp8 --ctx 512 --tokens 256 --json 2>&1 | tee -a "$OUT/decode.jsonl"
done
if [ "${TRACE_7B:-0}" = 1 ]; then   # 7B on the persistent kernel with its trace (BORA_MEGA_TRACE=1), FP8 and BF16
    for pr in fp8 bf16; do
        step "decode, 7B $pr persistent, BORA_MEGA_TRACE=1 ${TRACE_ENV:-}"
        env ${TRACE_ENV:-} BORA_DECODE=persistent BORA_MEGA_TRACE=1 timeout 100 "$BORA" bench decode --preset mistral-7b --precision $pr --ctx 512 --tokens 64 2>&1 | tee -a "$OUT/trace_7b.txt"
    done
fi
if [ "${MEDIUM_TRACE:-0}" = 1 ]; then   # Medium 3.5 on the persistent kernel, forced, then its trace
    step "decode, Medium 3.5 persistent (BORA_DECODE=persistent), then BORA_MEGA_TRACE=1"
    BORA_DECODE=persistent timeout 150 "$BORA" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 32 --json 2>&1 | tee -a "$OUT/decode.jsonl"
    BORA_DECODE=persistent BORA_MEGA_TRACE=1 timeout 150 "$BORA" bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 16 2>&1 | tee "$OUT/medium_trace.txt"
fi
if [ "${PROBE:-0}" = 1 ]; then   # the ring's streaming ceiling alone (bench/stream_probe.cu)
    PB=${BIN:+$BIN/bench/stream_probe}; PB=${PB:-build/bench/stream_probe}
    step "stream probe ($PB)"
    for rb in 4096 8192; do timeout 120 "$PB" $rb; done 2>&1 | tee "$OUT/stream_probe.txt"
fi
step done
