#!/usr/bin/env bash
# gpu_bin_ab.sh — two or more builds of bora, alternating within each round so every build meets the
# same machine: the decode of each preset, a line per run (ms/token, % of the read bandwidth, SM clock).
# usage (repo root on the device machine): source .deps/unpack.sh && A=DIR B=DIR bash bench/gpu_bin_ab.sh
#   A, B: folders with bora (A is printed first); or BINS="DIR DIR ..." for any number of builds,
#   each printed by its folder's name (DIR,NAME=VALUE,... runs that build with those settings, a
#   NAME without BORA_ being BORA_MEGA_NAME: "DIR,FLAGS=32768"); PRESETS "preset:ctx:precision ..."
#   (default "mistral-7b:512:fp8 mistral-7b:512:bf16"); ROUNDS (2); TOKENS (128). Every run's whole
#   output goes to $OUT/bin_ab.log.
set -uo pipefail
. "$(dirname "$0")/ab_env.sh"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
if [ -n "${BINS:-}" ]; then
    read -r -a dirs <<< "$BINS"
else
    dirs=("$A" "$B")
fi
for pc in ${PRESETS:-mistral-7b:512:fp8 mistral-7b:512:bf16}; do
    IFS=: read -r preset ctx prec <<< "$pc"
    for r in $(seq 1 "${ROUNDS:-2}"); do
        for i in "${!dirs[@]}"; do
            dir=${dirs[$i]%%,*} set=-
            [ "$dir" != "${dirs[$i]}" ] && set=${dirs[$i]#*,}
            read -r -a envs <<< "$(envs_of "$set" | tr '\n' ' ')"
            if [ -n "${BINS:-}" ]; then
                name=$(basename "$dir")$([ "$set" != - ] && echo ",$set")
            else
                name=$([ "$i" = 0 ] && echo A || echo B)
            fi
            line=$(env "${envs[@]}" timeout 150 "$dir/bora" bench decode --preset "$preset" --precision "$prec" --ctx "$ctx" \
                --tokens "${TOKENS:-128}" --json 2>&1 | tee -a "${OUT:-/tmp}/bin_ab.log" | tail -1)
            printf '%s %s %s ctx %s round %s %-24s %s\n' "$(date -u +%T)" "$preset" "$prec" "$ctx" "$r" "$name" \
                "$(echo "$line" | grep -o '"ms_per_token":[0-9.]*\|"pct_of_read_bw":[0-9.]*\|"sm_clock_mhz_mean":[0-9]*\|"path":"[a-z]*"' | tr '\n' ' ')"
        done
    done
done
