#!/usr/bin/env bash
# e2e_tekken_model.sh — a Ministral3ForCausalLM directory with a tekken.json works end to end:
# --prompt is BOS + Tekken's ids, --chat uses the Tekken chat template, and the streamed text is
# the detokenized completion.
set -u
build=${1:-build}
bora=$build/bora
tok=tests/data/tokenizers/tekken-nemo-240718.json
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
m=$tmp/ministral3-tekken
$bora synth $m --arch ministral3 --vocab 131072 --tokenizer $tok 2>/dev/null || fail "bora synth"
[ -f $m/tekken.json ] || fail "tekken.json not in the model directory"
$bora info $m | grep -q "Ministral3ForCausalLM" || fail "info"
$bora info $m | grep -q "tekken.json" || fail "info does not name the tokenizer"

text="Hello, how are you?"
want="[1, 22177, 1044, 2606, 1584, 1636, 1063]"   # data/README: Tekken ids of this text, BOS first
got=$($bora tokenize $m --text "$text" --bos)
[ "$got" = "$want" ] || fail "tokenize: $got, want $want"
a=$($bora generate $m --prompt "$text" -n 8 --ignore-eos --backend cpu --json 2>/dev/null | tail -1)
b=$($bora generate $m --ids "$(tr -d '[] ' <<<"$want")" -n 8 --ignore-eos --backend cpu --json 2>/dev/null | tail -1)
[ -n "$a" ] && [ "$a" = "$b" ] || fail "--prompt and --ids disagree: '$a' vs '$b'"
ids=$(python3 -c "import json,sys;print(' '.join(map(str,json.loads(sys.argv[1])['ids'])))" "$a")
txt=$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['text'])" "$a")
[ "$($bora detokenize $m $ids)" = "$txt" ] || fail "--json text is not the detokenized ids"

chat=tests/data/chat-samples/no_tools/sample.json
cids=$($bora chat-encode $m $chat | tr -d '[] ')
c1=$($bora generate $m --chat $chat -n 4 --ignore-eos --backend cpu --json 2>/dev/null | tail -1)
c2=$($bora generate $m --ids "$cids" -n 4 --ignore-eos --backend cpu --json 2>/dev/null | tail -1)
[ -n "$c1" ] && [ "$c1" = "$c2" ] || fail "--chat and chat-encode disagree"
echo "Tekken model directory ok"
