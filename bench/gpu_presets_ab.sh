#!/usr/bin/env bash
# gpu_presets_ab.sh — the FP8 decode of several presets under BORA_MEGA_* settings of one binary,
# alternating settings within each round so every setting meets the same machine; a line per run.
# usage (repo root on the device machine): source .deps/unpack.sh && BIN=DIR bash bench/gpu_presets_ab.sh
#   BIN: the folder with bora; PRESETS: "preset:ctx ..." (default "ministral-8b:512
#   mistral-small-24b:512"); VARS: settings groups, space-separated, settings within a group joined
#   by ',' ("-" is the default: "- FLAGS=2048 FLAGS=8192"; a name without BORA_ is BORA_MEGA_NAME,
#   one with it is taken as written, e.g. BORA_DECODE=persistent); ROUNDS (2); TOKENS (128);
#   PREC (fp8; "fp8 bf16" runs both); KV (the KV cache: bf16; "bf16 fp8" runs both); TRACE=1 adds a BORA_MEGA_TRACE run of each preset and
#   precision (its per-phase table goes to $OUT/trace_PRESET_PREC.txt)
# The trace (BORA_MEGA_TRACE) and the diagnostic switches (BORA_MEGA_DEBUG) need a build made with
# `make MEGA_DIAG=1` (its own BUILD directory); the default build refuses them.
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
. "$(dirname "$0")/ab_env.sh"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
for pc in ${PRESETS:-ministral-8b:512 mistral-small-24b:512}; do
  preset=${pc%%:*} ctx=${pc##*:}
  for prec in ${PREC:-fp8}; do
   for kv in ${KV:-bf16}; do
    if [ "${TRACE:-0}" = 1 ]; then
        BORA_MEGA_TRACE=1 BORA_DECODE=persistent timeout 150 "$BIN/bora" bench decode --preset "$preset" \
            --precision "$prec" --kv "$kv" --ctx "$ctx" --tokens 32 > "$OUT/trace_${preset}_${prec}_$kv.txt" 2>&1
    fi
    for r in $(seq 1 "${ROUNDS:-2}"); do
        for v in ${VARS:--}; do
            line=$(env $(envs_of "$v") timeout 150 "$BIN/bora" bench decode --preset "$preset" --precision "$prec" \
                --kv "$kv" --ctx "$ctx" --tokens "${TOKENS:-128}" --json 2>&1 | tee -a "$OUT/presets_ab.jsonl" | tail -1)
            printf '%s %s %s kv %s ctx %s round %s %-16s %s\n' "$(date -u +%T)" "$preset" "$prec" "$kv" "$ctx" "$r" "$v" \
                "$(echo "$line" | grep -o '"ms_per_token":[0-9.]*\|"pct_of_read_bw":[0-9.]*\|"sm_clock_mhz_mean":[0-9]*\|"path":"[a-z]*"\|"persistent_layout":"[^"]*"' | tr '\n' ' ')"
        done
    done
   done
  done
done
