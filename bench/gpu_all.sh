#!/usr/bin/env bash
# gpu_all.sh — everything bora measures on the H200, in one device call: build with CUDA, every
# GPU test, decode (bandwidth), prefill (TTFT) and cold-start figures. Logs land under $OUT.
# usage (repo root on the device machine): source .deps/unpack.sh && bash bench/gpu_all.sh
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
log=$OUT/log
status=0
export BORA_DEPS_EXTRAS=0
step() { echo; echo "=== $(date -u +%T) $*" | tee -a "$log"; }
run() { timeout "${T:-200}" "$@" 2>&1 | tee -a "$log"; local rc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] || { echo "FAILED ($rc): $*" | tee -a "$log"; status=1; }; return 0; }

step "machine"
run nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv
step "build"
# the libraries come from .deps there (no package manager): skip the install step
mkdir -p build && touch build/.deps-ok
make -j16 CUDA=1 all >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log" | tee -a "$log"; echo "build failed" | tee -a "$log"; exit 1; }
step "GPU tests"
timeout 300 bash tests/run.sh --gpu build 2>&1 | tee "$OUT/test-gpu.log" | grep -vE '^\[ (RUN|      OK) ' | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
step "decode"
for args in "mistral-7b --precision fp8 --ctx 512 --tokens 256" "mistral-7b --precision bf16 --ctx 512 --tokens 256" \
            "mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 32"; do
    T=150 run build/bora bench decode --preset $args --json
done | tee "$OUT/decode.jsonl"
step "ttft"
T=200 run build/bora bench ttft --preset mistral-7b --precision fp8 --prompt 128,512,2048,8192 --json | tee "$OUT/ttft.jsonl"
T=60 run build/bora bench ttft --preset mistral-7b --precision fp8 --prompt 2048 --profile
T=150 run build/bora bench ttft --preset mistral-medium-3.5 --precision fp8 --prompt 2048 --runs 3 --json | tee -a "$OUT/ttft.jsonl"
if [ "${BORA_COLDSTART:-1}" = 1 ]; then
    step "cold start (mistral-7b fp8)"
    dir=/var/tmp/bora-coldstart-mistral-7b
    ulimit -l unlimited 2>/dev/null || true
    T=240 run build/bora coldstart --preset mistral-7b --precision fp8 --dir "$dir" --backend cuda --prompt 512 --json | tee "$OUT/coldstart.json"
    T=150 run build/bora coldstart --preset mistral-7b --precision fp8 --dir "$dir" --backend cuda --prompt 512 --qd 16 --buf 4194304 --json | tee -a "$OUT/coldstart.json"
fi
step "done (status $status)"
exit $status
