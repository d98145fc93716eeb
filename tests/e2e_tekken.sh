#!/usr/bin/env bash
# e2e_tekken.sh — `bora tokenize/detokenize/chat-encode` on a Tekken tokenizer end to end: the
# README's reference ids, a byte-exact round trip, a model directory holding tekken.json, and the
# instruct format picked from the file (NeMo's config.version v3 → v3 layout; v7 → [SYSTEM_PROMPT]).
set -u
build=${1:-build}
bora=$build/bora
tk=tests/data/tokenizers/tekken-nemo-240718.json
[ -x "$bora" ] || { echo "e2e_tekken: $bora not built"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/e2e_tekken.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
squash() { tr -d ' \n\t'; }
got=$("$bora" tokenize "$tk" --text "Hello, how are you?" --bos | squash)
[ "$got" = "[1,22177,1044,2606,1584,1636,1063]" ] || { echo "e2e_tekken: tokenize gave $got"; fail=1; }
got=$("$bora" detokenize "$tk" 1 22177 1044 2606 1584 1636 1063)
[ "$got" = "Hello, how are you?" ] || { echo "e2e_tekken: detokenize gave '$got'"; fail=1; }
# a model directory with tekken.json; emoji split over byte-level tokens come back whole
mkdir "$tmp/model" && ln -s "$PWD/$tk" "$tmp/model/tekken.json"
printf 'caf\xc3\xa9 \xf0\x9f\xa6\x99 \xf0\x9f\x8f\xb4\xe2\x80\x8d\xe2\x98\xa0\xef\xb8\x8f\n\tx' > "$tmp/text"
ids=$("$bora" tokenize "$tmp/model" --file "$tmp/text" | tr -d '[],')
"$bora" detokenize "$tmp/model" $ids > "$tmp/back"
printf '\n' >> "$tmp/text"                     # detokenize ends its output with a newline
cmp -s "$tmp/text" "$tmp/back" || { echo "e2e_tekken: round trip differs"; fail=1; }
# chat formats: v3 as shipped (no [SYSTEM_PROMPT]=17), v7 when the file says so
sed 's/"version":"v3"/"version":"v7"/' "$tk" > "$tmp/tekken-v7.json"
for d in tests/data/chat-samples/*/; do
    v3=$("$bora" chat-encode "$tk" "$d/sample.json" | squash) || { echo "e2e_tekken: chat-encode v3 $d failed"; fail=1; }
    v7=$("$bora" chat-encode "$tmp/tekken-v7.json" "$d/sample.json" | squash) || { echo "e2e_tekken: chat-encode v7 $d failed"; fail=1; }
    case "$v3" in \[1,*) ;; *) echo "e2e_tekken: v3 $d does not start with <s>"; fail=1 ;; esac
    case ",${v3#[}" in *,17,*) echo "e2e_tekken: v3 $d has [SYSTEM_PROMPT]"; fail=1 ;; esac
    if grep -q '"system"' "$d/sample.json"; then
        case "$v7" in \[1,17,*) ;; *) echo "e2e_tekken: v7 $d does not open with [SYSTEM_PROMPT]"; fail=1 ;; esac
    fi
    if grep -q '"tool"' "$d/sample.json"; then
        case "$v7" in *,19,*) ;; *) echo "e2e_tekken: v7 $d has no [TOOL_CONTENT]"; fail=1 ;; esac
    fi
done
# bad files: a clear message naming the file, exit status 1
head -c 100000 "$tk" > "$tmp/truncated.json"
msg=$("$bora" tokenize "$tmp/truncated.json" --text x 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [[ "$msg" == *truncated.json*JSON* ]] || { echo "e2e_tekken: truncated file: rc $rc '$msg'"; fail=1; }
exit $fail
