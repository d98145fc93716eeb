#!/usr/bin/env bash
# e2e_fuzz.sh — runs every fuzz target on seeded random and mutated inputs (a smoke run; use
# `make fuzz FUZZ_ITERS=N` or a libFuzzer build for long campaigns). Fails on any crash.
set -u
build=${1:-build}
n=0
for f in "$build"/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    "$f" --iters "${BORA_FUZZ_ITERS:-20000}" >/dev/null || { echo "fuzz target $f crashed"; exit 1; }
    n=$((n + 1))
done
[ $n -gt 0 ] || { echo "no fuzz targets built"; exit 1; }
echo "$n fuzz targets ran clean"
