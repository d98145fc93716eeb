#!/usr/bin/env bash
# e2e_tok.sh — the tokenizer commands of `bora` end to end: chat-encode reproduces every
# chat sample's tokens_v3.json (mistral-common's ids), tokenize/detokenize agree with the cases.
set -u
build=${1:-build}
bora=$build/bora
v3=tests/data/tokenizers/tokenizer.model.v3
[ -x "$bora" ] || { echo "e2e_tok: $bora not built"; exit 1; }
fail=0
squash() { tr -d ' \n\t'; }
for d in tests/data/chat-samples/*/; do
    want=$(squash < "$d/tokens_v3.json" | sed 's/^{"tokens"://; s/}$//')
    got=$("$bora" chat-encode "$v3" "$d/sample.json" | squash)
    if [ "$got" != "$want" ]; then echo "e2e_tok: chat-encode $d differs"; fail=1; fi
done
got=$("$bora" tokenize "$v3" --text "Hello world!" --bos | squash)
[ "$got" = "[1,23325,2294,29576]" ] || { echo "e2e_tok: tokenize gave $got"; fail=1; }
err=$("$bora" tokenize "$v3" --text 2>&1); [ $? -eq 2 ] && grep -q -- "--text needs a value" <<<"$err" ||
    { echo "e2e_tok: tokenize --text without a value said: $err"; fail=1; }
got=$("$bora" detokenize "$v3" 1 23325 2294 29576)
[ "$got" = "Hello world!" ] || { echo "e2e_tok: detokenize gave '$got'"; fail=1; }
printf 'caf\xc3\xa9 \xf0\x9f\xa6\x99' > "${TMPDIR:-/tmp}/e2e_tok.$$"
ids=$("$bora" tokenize tests/data/tokenizers --file "${TMPDIR:-/tmp}/e2e_tok.$$" | tr -d '[],')
got=$("$bora" detokenize tests/data/tokenizers $ids)
rm -f "${TMPDIR:-/tmp}/e2e_tok.$$"
[ "$got" = "café 🦙" ] || { echo "e2e_tok: round trip gave '$got'"; fail=1; }
# errors: exit status 1 with a message, usage 2
"$bora" tokenize "$v3" --text $'\xff' 2>/dev/null && { echo "e2e_tok: invalid UTF-8 accepted"; fail=1; }
"$bora" detokenize "$v3" 99999 2>/dev/null && { echo "e2e_tok: bad id accepted"; fail=1; }
"$bora" tokenize "$v3" >/dev/null 2>&1; [ $? -eq 2 ] || { echo "e2e_tok: usage not 2"; fail=1; }
exit $fail
