#!/usr/bin/env bash
# e2e_coldstart.sh — `bora coldstart` on the tiny preset (CPU, page cache kept: CI must not drop
# the machine's cache): writes the checkpoint, measures all three figures, the streamer and
# the naive loader agree on the first token, and the JSON carries every figure.
set -u
build=${1:-build}
mkdir -p "$build/tmp"
dir="$build/tmp/e2e-coldstart-$$"
trap 'rm -rf "$dir"' EXIT
out=$("$build/bora" coldstart --preset tiny --dir "$dir" --prompt 16 --backend cpu --no-drop --json 2>/dev/null) ||
    { echo "e2e_coldstart: bora coldstart failed" >&2; exit 1; }
echo "$out"
for k in raw_gbs stream_first_token_s naive_first_token_s budget_s; do
    grep -q "\"$k\":[0-9.]*[1-9]" <<<"$out" || { echo "e2e_coldstart: no positive $k" >&2; exit 1; }
done
grep -q '"tokens_agree":true' <<<"$out" || { echo "e2e_coldstart: streamer and naive loader disagree" >&2; exit 1; }
"$build/bora" coldstart --preset huge --dir "$dir" 2>&1 | grep -q "not one of tiny" ||
    { echo "e2e_coldstart: bad preset not named" >&2; exit 1; }
# a directory holding something else (a real checkpoint given by mistake) is refused, untouched
mkdir -p "$dir-real" && echo '{"keep": 1}' >"$dir-real/config.json"
"$build/bora" coldstart --preset tiny --dir "$dir-real" --no-drop --backend cpu 2>"$dir-real.err" &&
    { echo "e2e_coldstart: overwrote a directory it did not make" >&2; exit 1; }
grep -q "not empty" "$dir-real.err" && grep -qx '{"keep": 1}' "$dir-real/config.json" ||
    { echo "e2e_coldstart: foreign directory: $(cat "$dir-real.err")" >&2; exit 1; }
rm -rf "$dir-real" "$dir-real.err"
exit 0
