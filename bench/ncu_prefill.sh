#!/usr/bin/env bash
# ncu_prefill.sh — Nsight Compute on the prefill's row kernels and attention (7B FP8, one
# 2,048-token prompt): speed of light, occupancy, memory and warp states, as text under $OUT.
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR bash bench/ncu_prefill.sh
# NCU_KERNELS: kernel name regex (default: the row kernels and flash attention); NCU_TAG: file prefix
set -uo pipefail
OUT=${OUT:-/tmp/bora-ncu}
mkdir -p "$OUT"
BORA=${BIN:+$BIN/bora}; BORA=${BORA:-build/bora}
K=${NCU_KERNELS:-regex:pf_swiglu|pf_add_norm|pf_qkv_post|pf_quant|fa2?_kernel}
TAG=${NCU_TAG:-prefill}
timeout 400 ncu --clock-control none -k "$K" --launch-skip 40 --launch-count 12 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section SchedulerStats -o "$OUT/$TAG" -f \
    "$BORA" bench ttft --preset mistral-7b --precision fp8 --prompt 2048 --runs 1 2>&1 | tail -5
ncu -i "$OUT/$TAG.ncu-rep" --page details > "$OUT/$TAG.txt" 2>&1
rm -f "$OUT/$TAG.ncu-rep"
wc -c "$OUT/$TAG.txt"
