#!/usr/bin/env bash
# gpu_bin_ab.sh — two builds of bora, alternating within each round so both meet the same machine:
# the decode of each preset, a line per run (ms/token, % of the read bandwidth, SM clock).
# usage (repo root on the device machine): source .deps/unpack.sh && A=DIR B=DIR bash bench/gpu_bin_ab.sh
#   A, B: folders with bora (A is printed first); PRESETS "preset:ctx:precision ..." (default
#   "mistral-7b:512:fp8 mistral-7b:512:bf16"); ROUNDS (2); TOKENS (128)
set -uo pipefail
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
for pc in ${PRESETS:-mistral-7b:512:fp8 mistral-7b:512:bf16}; do
    IFS=: read -r preset ctx prec <<< "$pc"
    for r in $(seq 1 "${ROUNDS:-2}"); do
        for side in A B; do
            dir=${!side}
            line=$(timeout 150 "$dir/bora" bench decode --preset "$preset" --precision "$prec" --ctx "$ctx" \
                --tokens "${TOKENS:-128}" --json 2>&1 | tail -1)
            printf '%s %s %s ctx %s round %s %s %s\n' "$(date -u +%T)" "$preset" "$prec" "$ctx" "$r" "$side" \
                "$(echo "$line" | grep -o '"ms_per_token":[0-9.]*\|"pct_of_read_bw":[0-9.]*\|"sm_clock_mhz_mean":[0-9]*\|"path":"[a-z]*"' | tr '\n' ' ')"
        done
    done
done
