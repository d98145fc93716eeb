#!/usr/bin/env bash
# gpu.sh — the GPU job in one device call: build with CUDA, run the GPU tests (all but gpu_engine,
# which needs a call of its own), then the
# decode benchmarks (Mistral-7B FP8/BF16 at ctx 512, Mistral Medium 3.5 FP8 at ctx 8192, 7B FP8
# with an FP8 KV cache at ctx 512 and 8192, Medium 3.5 with it at 8192) and the
# GEMV-alone figures; every log lands under $OUT (default /tmp/bora-gpu).
# usage (repo root, deps unpacked: source .deps/unpack.sh): bash bench/gpu.sh [--quick]
set -uo pipefail
OUT=${OUT:-/tmp/bora-gpu}
mkdir -p "$OUT"
log=$OUT/log
status=0
step() { echo; echo "=== $*" | tee -a "$log"; }
run() { "$@" 2>&1 | tee -a "$log"; local rc=${PIPESTATUS[0]}; [ $rc -eq 0 ] || { echo "FAILED ($rc): $*" | tee -a "$log"; status=1; }; return $rc; }

step "machine"
run nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv
step "build"
# `all` when every library is there (boractl needs libedit, which the deps bundle may lack)
make -j16 CUDA=1 all >"$OUT/build.log" 2>&1 || make -j16 CUDA=1 build/bora $(ls tests/gpu_*.c | sed "s|tests/\(.*\)\.c|build/tests/\1|") >>"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "build failed"; exit 1; }
echo "built" | tee -a "$log"
step "test-gpu"
# every GPU suite but gpu_engine, which takes ≈ 200 s alone, more than this step's share of the
# call (run it in a call of its own: bash tests/run.sh --gpu build gpu_engine); GPU_TESTS names others
timeout 240 bash tests/run.sh --gpu build ${GPU_TESTS:-gpu_direct_load gpu_kernels gpu_prefill gpu_prefill_engine \
    test_gen_engine e2e_gpu_borad.sh} 2>&1 | tee "$OUT/test-gpu.log" | grep -vE '^\[ (RUN|      OK) ' | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
step "gemv alone"
run timeout 200 build/bora bench gemv --preset mistral-7b --precision fp8
run timeout 200 build/bora bench gemv --preset mistral-7b --precision bf16
step "decode"
{
run timeout 200 build/bora bench decode --preset mistral-7b --precision fp8 --ctx 512 --tokens 256 --json
run timeout 200 build/bora bench decode --preset mistral-7b --precision bf16 --ctx 512 --tokens 256 --json
run timeout 200 build/bora bench decode --preset mistral-medium-3.5 --precision fp8 --ctx 8192 --tokens 32 --json
# the FP8 KV cache ([engine] kv_dtype = fp8): short and long context on 7B
run timeout 200 build/bora bench decode --preset mistral-7b --precision fp8 --kv fp8 --ctx 512 --tokens 256 --json
run timeout 200 build/bora bench decode --preset mistral-7b --precision fp8 --kv fp8 --ctx 8192 --tokens 128 --json
run timeout 200 build/bora bench decode --preset mistral-medium-3.5 --precision fp8 --kv fp8 --ctx 8192 --tokens 32 --json
} | tee "$OUT/decode.jsonl"
step "profile (ncu, attention and GEMV of 2 layers)"
if [ "${BORA_NCU:-1}" = 1 ] && command -v ncu >/dev/null; then
    for k in attn_kernel gemv_pipe; do
        timeout 120 ncu --clock-control none -k regex:$k -c 2 \
            --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
            build/bora bench decode --preset mistral-medium-3.5 --layers 2 --ctx 8192 --tokens 4 \
            >>"$OUT/ncu.txt" 2>&1
    done
    grep -E "attn_kernel|gemv_pipe|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Stall|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Block Limit|Issued Ipc" "$OUT/ncu.txt" | head -120 | tee -a "$log"
fi
step "summary"
python3 - "$OUT/decode.jsonl" <<'PY' | tee -a "$log"
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    print(f"{r['preset']:20s} {r['precision']:5s} kv {r.get('kv', 'bf16'):4s} ctx {r['ctx']:6d}  {r['ms_per_token']:8.3f} ms/tok "
          f"{r['tok_per_s']:8.1f} tok/s  {r['gbps']:7.1f} GB/s  {r['pct_of_read_bw']:5.1f} % of {r['read_bw_gbps']:.0f} GB/s  "
          f"mem {r['gpu_mem_used_bytes']/1e9:.1f} GB\n    {r.get('gemv','')}")
PY
exit $status
