#!/usr/bin/env bash
# coldstart.sh — the whole H200 cold-start measurement in one device call: builds with CUDA,
# runs `bora coldstart` for mistral-7b FP8 (cold page cache, then warm) into the largest local
# disk, and tees everything to $OUT/coldstart.log (and the JSON to $OUT/coldstart.json).
# usage (repo root, on the device machine): bash bench/coldstart.sh [PRESET]
set -u
preset=${1:-mistral-7b}
out=${OUT:-/tmp}
log="$out/coldstart.log"
mkdir -p "$out"
exec > >(tee -a "$log") 2>&1
echo "== $(date -u +%FT%TZ) coldstart $preset on $(hostname)"
source .deps/unpack.sh || { echo "coldstart.sh: .deps/unpack.sh failed"; exit 1; }
make -j16 CUDA=1 all >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; echo "coldstart.sh: build failed"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# the disk with the most free space among /var/tmp, /tmp and the repo's own
best="" best_free=0
for d in /var/tmp /tmp "$PWD/build"; do
    mkdir -p "$d" 2>/dev/null || continue
    f=$(df -Pk "$d" | awk 'NR==2 {print $4}')
    [ "${f:-0}" -gt "$best_free" ] && { best=$d; best_free=$f; }
done
dir="$best/bora-coldstart-$preset"
echo "checkpoint dir: $dir ($((best_free / 1048576)) GiB free); $(df -PT "$best" | awk 'NR==2 {print $1, $2}')"
ulimit -l unlimited 2>/dev/null || echo "note: cannot raise RLIMIT_MEMLOCK ($(ulimit -l) KiB)"
# raw device figures first (plain read(), O_DIRECT, io_uring) on a file the benchmark writes
build/bora coldstart --preset "$preset" --precision fp8 --dir "$dir" --backend cuda --prompt 512
build/bora coldstart --preset "$preset" --precision fp8 --dir "$dir" --backend cuda --prompt 512 --json \
    | tee "$out/coldstart.json"
for qd in 16 64; do
    for buf in 1048576 4194304; do
        echo "-- qd $qd, reads of $buf bytes"
        build/bench/bench_wstream "$dir/model.safetensors" --qd "$qd" --buf "$buf" || true
    done
done
build/bora coldstart --alloc
echo "== done"
