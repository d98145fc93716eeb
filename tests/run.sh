#!/usr/bin/env bash
# run.sh — runs every test binary and end-to-end script, then prints one summary line:
#   "N passed, N failed, N skipped". Exit status is non-zero if anything failed.
# usage: tests/run.sh [--gpu] BUILD_DIR [NAME...]   (--gpu: only the GPU tests: gpu_*, test_gen_engine's
#        CUDA case and e2e_gpu_*.sh; NAMEs: only the binaries or scripts so named, e.g.
#        `--gpu build gpu_engine` in one device call and the rest, named, in another)
set -u
gpu_only=0
[ "${1:-}" = --gpu ] && { gpu_only=1; shift; }
build=${1:-build}
[ $# -gt 0 ] && shift
names="$*"
wanted() { [ -z "$names" ] || [[ " $names " == *" $(basename "$1") "* ]]; }
pass=0 fail=0 skip=0 failed_names=()
export CMOCKA_MESSAGE_OUTPUT=STDOUT
log=$(mktemp); trap 'rm -f "$log"' EXIT

count_cmocka() {   # $1 = binary
    local name; name=$(basename "$1")
    "$1" >"$log" 2>&1; local rc=$?
    cat "$log"
    local p f s
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | head -1)
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | head -1)
    s=$(grep -E '^\[  SKIPPED \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | head -1)
    p=${p:-0}; f=${f:-0}; s=${s:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi     # crashed or exited badly
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then f=1; echo "run.sh: $name ran no test"; fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    [ "$f" -gt 0 ] && failed_names+=("$name")
}

count_script() {   # exit 0 pass, 77 skip, else fail
    local name; name=$(basename "$1")
    echo "[ RUN      ] $name"
    bash "$1" "$build"; local rc=$?
    case $rc in
        0) pass=$((pass + 1)); echo "[       OK ] $name" ;;
        77) skip=$((skip + 1)); echo "[  SKIPPED ] $name" ;;
        *) fail=$((fail + 1)); failed_names+=("$name"); echo "[  FAILED  ] $name (exit $rc)" ;;
    esac
}

if [ $gpu_only -eq 0 ]; then
    for t in "$build"/tests/test_*; do [ -x "$t" ] && wanted "$t" && count_cmocka "$t"; done
    for s in tests/e2e_*.sh; do [ -f "$s" ] && wanted "$s" && count_script "$s"; done
fi
for t in "$build"/tests/gpu_*; do [ -x "$t" ] && wanted "$t" && count_cmocka "$t"; done
if [ $gpu_only -eq 1 ]; then   # the GPU halves of tests that also run on the CPU
    [ -x "$build/tests/test_gen_engine" ] && wanted "$build/tests/test_gen_engine" &&
        count_cmocka "$build/tests/test_gen_engine"
    for s in tests/e2e_gpu_*.sh; do [ -f "$s" ] && wanted "$s" && count_script "$s"; done
fi

echo
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
