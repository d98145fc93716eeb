#!/usr/bin/env bash
# ncu_mega.sh — Nsight Compute on one persistent decode step (7B FP8 by default): warp states,
# scheduler statistics and per-SASS-instruction stall samples, as text under $OUT.
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR bash bench/ncu_mega.sh
# NCU_ARGS: bench decode arguments (default: --preset mistral-7b --precision fp8 --ctx 512 --tokens 8)
set -uo pipefail
OUT=${OUT:-/tmp/bora-ncu}
mkdir -p "$OUT"
BORA=${BIN:+$BIN/bora}; BORA=${BORA:-build/bora}
ARGS=${NCU_ARGS:---preset mistral-7b --precision fp8 --ctx 512 --tokens 8}
BORA_DECODE=persistent timeout 400 ncu --clock-control none -k regex:mega_kernel --launch-skip 4 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis -o "$OUT/mega" -f "$BORA" bench decode $ARGS 2>&1 | tail -20
ncu -i "$OUT/mega.ncu-rep" --page details > "$OUT/details.txt" 2>&1
ncu -i "$OUT/mega.ncu-rep" --page source --csv --print-source sass > "$OUT/sass.csv" 2>&1
# every collected metric; the warp stall breakdown (PC sampling, per reason) is in it
ncu -i "$OUT/mega.ncu-rep" --page raw --csv > "$OUT/raw.csv" 2>&1
rm -f "$OUT/mega.ncu-rep"
head -c 300 "$OUT/sass.csv"; echo
wc -c "$OUT"/*
