#!/usr/bin/env bash
# gpu_presets_ab.sh — the FP8 decode of several presets under BORA_MEGA_* settings of one binary,
# alternating settings within each round so every setting meets the same machine; a line per run.
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR bash bench/gpu_presets_ab.sh
#   BIN: the folder with bora; PRESETS: "preset:ctx ..." (default "ministral-8b:512
#   mistral-small-24b:512"); VARS: settings groups, space-separated, settings within a group joined
#   by ',' ("-" is the default: "- FLAGS=2048 FLAGS=8192"); ROUNDS (2); TOKENS (128)
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
envs_of() { [ "$1" = - ] && return; echo "$1" | tr ',' ' ' | sed "s/\([A-Z][A-Z0-9_]*=\)/BORA_MEGA_\1/g"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
for pc in ${PRESETS:-ministral-8b:512 mistral-small-24b:512}; do
    preset=${pc%%:*} ctx=${pc##*:}
    for r in $(seq 1 "${ROUNDS:-2}"); do
        for v in ${VARS:--}; do
            line=$(env $(envs_of "$v") timeout 150 "$BIN/bora" bench decode --preset "$preset" --precision fp8 \
                --ctx "$ctx" --tokens "${TOKENS:-128}" --json 2>&1 | tee -a "$OUT/presets_ab.jsonl" | tail -1)
            printf '%s %s ctx %s round %s %-16s %s\n' "$(date -u +%T)" "$preset" "$ctx" "$r" "$v" \
                "$(echo "$line" | grep -o '"ms_per_token":[0-9.]*\|"pct_of_read_bw":[0-9.]*\|"sm_clock_mhz_mean":[0-9]*\|one tensor copy\|of 3[23] KiB' | tr '\n' ' ')"
        done
    done
done
