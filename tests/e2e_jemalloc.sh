#!/usr/bin/env bash
# e2e_jemalloc.sh — bora and borad really allocate with jemalloc: jemalloc reads MALLOC_CONF
# and prints its statistics at exit (glibc would ignore it), the binaries link libjemalloc,
# and `bora coldstart --alloc` reports malloc resolving into jemalloc with its stats.
set -u
build=${1:-build}
fail() { echo "e2e_jemalloc: $*" >&2; exit 1; }
for b in bora borad; do
    [ -x "$build/$b" ] || fail "$build/$b missing"
    out=$(MALLOC_CONF=stats_print:true "$build/$b" --help 2>&1 >/dev/null)
    grep -q "Begin jemalloc statistics" <<<"$out" || fail "$b: MALLOC_CONF=stats_print:true printed no jemalloc statistics"
    ldd "$build/$b" | grep -q libjemalloc || fail "$b: not linked with libjemalloc"
done
out=$("$build/bora" coldstart --alloc 2>&1) || fail "bora coldstart --alloc failed: $out"
grep -q "allocator: jemalloc" <<<"$out" || fail "bora: malloc is not jemalloc's: $out"
grep -qE "resident [0-9.]+ MiB" <<<"$out" || fail "bora: no jemalloc stats: $out"
exit 0
