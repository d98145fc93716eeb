#!/usr/bin/env bash
# libfuzzer.sh — the fuzz targets under clang's libFuzzer with AddressSanitizer and
# UndefinedBehaviorSanitizer: coverage-guided, where `make fuzz` (any compiler, tests/fuzz/driver.c)
# feeds random and mutated inputs blind. Builds the library and the targets into build-fuzz/
# (needs clang with its compiler-rt, Debian's clang package), then runs each target for SECONDS
# (default 60) from the repository root. A finding stops that target and leaves its input in
# build-fuzz/artifacts/; the script exits non-zero if any target found one.
# usage: bash tests/fuzz/libfuzzer.sh [SECONDS] [TARGET ...]     (TARGET: bwp, config, console, ...)
set -uo pipefail
secs=${1:-60}
shift || true
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
flags="-std=c11 -D_GNU_SOURCE -O1 -g -I. -pthread -fopenmp $san"
make -j"$(nproc)" BUILD=build-fuzz CC=clang CUDA=0 DPDK=0 CFLAGS="$flags -MMD -MP -fsanitize=fuzzer-no-link" \
    build-fuzz/libbora.a >/dev/null || exit 1
mkdir -p build-fuzz/lf build-fuzz/artifacts build-fuzz/corpus
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=($(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||'))
status=0
for t in "${targets[@]}"; do
    clang $flags -fsanitize=fuzzer "tests/fuzz/fuzz_$t.c" build-fuzz/libbora.a -o "build-fuzz/lf/fuzz_$t" \
        -linih -ljansson -lpcre2-8 -lsodium -luring -lm -lpthread || exit 1
    mkdir -p "build-fuzz/corpus/$t"
    echo "== fuzz_$t, $secs s"
    if ! "build-fuzz/lf/fuzz_$t" "build-fuzz/corpus/$t" -max_total_time="$secs" -max_len=4096 \
            -artifact_prefix="build-fuzz/artifacts/$t-" -print_final_stats=1 2>&1 |
            grep -E 'ERROR|SUMMARY|runtime error|stat::number_of_executed_units|Done'; then
        :
    fi
    ls build-fuzz/artifacts/"$t"-* >/dev/null 2>&1 && { echo "fuzz_$t: FINDING in build-fuzz/artifacts"; status=1; }
done
exit $status
