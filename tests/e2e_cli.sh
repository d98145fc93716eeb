#!/usr/bin/env bash
# e2e_cli.sh — the `bora` command's interfaces other tools rely on: `bora logits` writes
# float32 rows that match the fixture's reference logits; `bora generate --json` prints the
# reference greedy ids; `bora info` describes the model; bad input fails with a clear message.
set -u
build=${1:-build}
bora=$build/bora
fx=tests/data/fixtures/mistral-tiny-bf16
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

ids=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['prompt_ids']+c['greedy_ids'])))")
$bora logits $fx --ids "$ids" --backend cpu --out "$tmp/l.f32" || fail "bora logits exited $?"
python3 - "$fx" "$tmp/l.f32" <<'PY' || fail "bora logits output differs from the reference"
import json, sys, array
fx, out = sys.argv[1], sys.argv[2]
ref = json.load(open(fx + '/reference.json')); V = ref['vocab_size']; c = ref['cases'][0]
got = array.array('f'); got.frombytes(open(out, 'rb').read())
full = array.array('f'); full.frombytes(open(fx + '/logits.f32', 'rb').read())
n = len(c['prompt_ids']) + len(c['greedy_ids'])
assert len(got) == n * V, (len(got), n * V)
for k, p in enumerate(c['full_logits_positions']):
    r = full[k * V:(k + 1) * V]; g = got[p * V:(p + 1) * V]
    m = max(abs(x) for x in r)
    d = max(abs(a - b) for a, b in zip(g, r))
    assert d <= 1e-3 * m, (p, d / m)
PY

prompt=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['prompt_ids'])))")
want=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['greedy_ids'][:12])))")
got=$($bora generate $fx --ids "$prompt" -n 12 --ignore-eos --backend cpu --json | tail -1 |
      python3 -c "import json,sys;print(','.join(map(str,json.load(sys.stdin)['ids'])))")
[ "$got" = "$want" ] || fail "greedy ids $got, want $want"

# --prompt is BOS + the tokenizer's ids; --json's text is the detokenized completion
pids=$($bora tokenize $fx --text "Where is my order #4512?" --bos | tr -d '[] ')
a=$($bora generate $fx --prompt "Where is my order #4512?" -n 10 --ignore-eos --backend cpu --json | tail -1)
b=$($bora generate $fx --ids "$pids" -n 10 --ignore-eos --backend cpu --json | tail -1)
[ "$a" = "$b" ] || fail "--prompt and --ids disagree: $a vs $b"
gids=$(python3 -c "import json,sys;print(' '.join(map(str,json.loads(sys.argv[1])['ids'])))" "$a")
text=$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['text'])" "$a")
[ "$($bora detokenize $fx $gids)" = "$text" ] || fail "--json text is not the detokenized ids"

$bora info $fx | grep -q "MistralForCausalLM" || fail "bora info"
# info opens the tokenizer: a corrupt one is named there, not at the first prompt
mkdir "$tmp/tok" && cp "$fx/config.json" "$fx/model.safetensors" "$tmp/tok/" &&
    head -c 1000 "$fx/tokenizer.model" >"$tmp/tok/tokenizer.model"
out=$($bora info "$tmp/tok" 2>&1 >/dev/null); rc=$?
[ $rc = 1 ] && grep -q "tokenizer.model: a SentencePiece model cut short" <<<"$out" || fail "info, corrupt tokenizer: rc $rc, '$out'"
$bora info $fx | grep -q "^tokenizer: .*tokenizer.model (32768 tokens)" || fail "info: the tokenizer's size"

# bad input: a clear message naming the problem, non-zero exit, no crash
out=$($bora client --udp 127.0.0.1:9 --tcp 127.0.0.1:9 --prompt hi 2>&1); rc=$?   # which server? not the last
[ $rc -eq 2 ] && grep -q "one server address only" <<<"$out" || fail "client --udp and --tcp: rc $rc, '$out'"
# -n past the model's context (max_position_embeddings 4096) is refused, not served on a context
# silently stretched past it; --ctx says so explicitly and is noted
out=$($bora generate $fx --ids 1 -n 5000 --backend cpu 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "more than the model's context of 4096" <<<"$out" || fail "-n past the context: rc $rc, '$out'"
out=$($bora generate $fx --ids 1 -n 2 --ctx 4100 --backend cpu 2>&1 >/dev/null); rc=$?
[ $rc -eq 0 ] && grep -q "past the model's context of 4096" <<<"$out" || fail "--ctx past the context: rc $rc, '$out'"
out=$($bora logits /nonexistent --ids 1 --out "$tmp/x" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "/nonexistent" <<<"$out" || fail "missing dir: rc $rc, '$out'"
out=$($bora logits $fx --ids 1,99999 --out "$tmp/x" 2>&1); rc=$?
[ $rc -ne 0 ] || fail "out-of-vocabulary id accepted"
out=$($bora generate $fx --ids 1,abc 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "abc" <<<"$out" || fail "bad --ids: rc $rc, '$out'"
out=$($bora generate $fx --ids 1 --temperature -1 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "temperature" <<<"$out" || fail "bad --temperature: rc $rc, '$out'"
# "default" names the built-in default model wherever a model directory is taken: its
# tokenizer is Mistral's real v3 one, so it must tokenize as that file does
export BORA_HOME="$tmp/home"
want=$($bora tokenize tests/data/tokenizers/tokenizer.model.v3 --text "Where is my order?" --bos) || fail "tokenize v3"
got=$($bora tokenize default --text "Where is my order?" --bos 2>/dev/null) || fail "tokenize default exited $?"
[ "$got" = "$want" ] || fail "tokenize default: $got, the v3 tokenizer: $want"
ids=$(echo "$want" | tr -d '[] ')
$bora detokenize default ${ids//,/ } 2>/dev/null | grep -q "Where is my order?" || fail "detokenize default"
$bora chat-encode default tests/data/chat-samples/no_tools/sample.json >/dev/null 2>&1 || fail "chat-encode default"
$bora plan default --gpu h200 2>/dev/null | grep -q "fits" || fail "plan default"
# a damaged cached copy of the built-in model: the refusal says how to get a sound one back
$bora generate default --ids 1,2 -n 2 >/dev/null 2>&1 || fail "generate default"
dm=$(ls -d "$BORA_HOME"/default-model-v*) && truncate -s 100000 "$dm/model.safetensors"
$bora generate default --ids 1,2 -n 2 >/dev/null 2>"$tmp/dm.err" && fail "generate default from a cut cache succeeded"
grep -q "file truncated" "$tmp/dm.err" && grep -qF "cached copy in $dm is damaged; delete that folder" "$tmp/dm.err" ||
    fail "a cut default cache: $(cat "$tmp/dm.err")"
rm -rf "$dm"
$bora generate default --ids 1,2 -n 2 >/dev/null 2>&1 || fail "generate default after deleting the damaged cache"
# bora synth with a vocabulary smaller than the default tokenizer's: no tokenizer, and the
# model it wrote runs on ids (it used to copy the 32,768-token tokenizer, which generate refused)
$bora synth "$tmp/small" --vocab 1000 --layers 1 2>"$tmp/synth.err" || fail "synth --vocab 1000: $(cat "$tmp/synth.err")"
grep -q "no tokenizer written" "$tmp/synth.err" || fail "synth --vocab 1000 did not say it wrote no tokenizer"
[ -e "$tmp/small/tokenizer.model" ] && fail "synth --vocab 1000 wrote the 32,768-token tokenizer"
$bora generate "$tmp/small" --ids 1,5,7 -n 3 --json 2>/dev/null | grep -q '"ids":\[' || fail "generate on the small synthetic model"
# the command line: help everywhere, and bad or conflicting options refused (exit 2, named)
for c in "tokenize" "detokenize" "synth" "plan" "bench decode" "passwd" "coldstart" "generate" "client"; do
    out=$($bora $c --help 2>/dev/null); rc=$?
    [ $rc = 0 ] && grep -q "^usage: bora ${c%% *}" <<<"$out" || fail "bora $c --help: exit $rc, '$out'"
done
expect_usage() {   # expect_usage FRAGMENT ARGS...: exit 2 with FRAGMENT on stderr
    local frag=$1; shift
    "$bora" "$@" >/dev/null 2>"$tmp/u.err"; local rc=$?
    [ $rc = 2 ] && grep -qF -- "$frag" "$tmp/u.err" || fail "bora $*: exit $rc, stderr: $(cat "$tmp/u.err")"
}
expect_usage "unknown option '--bogus'" generate "$fx" --prompt hi --bogus
expect_usage "unknown option '--bogus'" client --udp 127.0.0.1:1 --ids 1 --bogus
expect_usage "option '--seed' needs a value" client --udp 127.0.0.1:1 --ids 1 --seed
expect_usage "usage: bora detokenize" detokenize default
expect_usage "unknown option '--ids'" info "$fx" --ids 1
expect_usage "give one of --prompt, --chat and --ids" generate "$fx" --prompt hi --ids 1,2
expect_usage "--prompt given twice" generate "$fx" --prompt a --prompt b
expect_usage "-n: expected a whole number" generate "$fx" --prompt hi -n 1.5
expect_usage "--prompt: empty" generate "$fx" --prompt ''
expect_usage "trailing ','" generate "$fx" --ids 1, -n 2
expect_usage "no prompt" generate "$fx"
expect_usage "takes no arguments" run-default --bogus
expect_usage "is not a multiple of --kv-heads 2" synth "$tmp/bad1" --heads 3 --kv-heads 2
expect_usage "more than --vocab 100" synth "$tmp/bad2" --tokenizer tests/data/tokenizers/tokenizer.model.v3 --vocab 100
[ -e "$tmp/bad1" ] || [ -e "$tmp/bad2" ] && fail "a refused synth left a directory behind"
$bora logits "$fx" --ids 1,99999 --out "$tmp/l.f32" 2>"$tmp/u.err" && fail "logits took an id outside the vocabulary"
grep -q "token id 99999 is outside the vocabulary" "$tmp/u.err" || fail "logits: $(cat "$tmp/u.err")"
expect_usage 'has "tools", which a BWP/1 chat prompt cannot carry' client --tcp 127.0.0.1:1 \
    --chat tests/data/chat-samples/get_weather_full/sample.json
# a directory where a file belongs is named as one; a key with a non-hex digit is refused
for c in "generate $fx --chat $tmp" "tokenize $fx --file $tmp" "chat-encode $fx $tmp"; do
    $bora $c >/dev/null 2>"$tmp/u.err" && fail "bora $c succeeded"
    grep -q "not a regular file (a directory)" "$tmp/u.err" || fail "bora $c: $(cat "$tmp/u.err")"
done
expect_usage "--key: not hex" client --tcp 127.0.0.1:1 --key 1g1g --prompt hi
# an address of the wrong form is a bad option: exit 2, nothing on stdout even with --json
for addr in nohost 127.0.0.1:99999 127.0.0.1:0 :7474; do
    expect_usage "expected HOST:PORT with a port 1..65535 (got '$addr')" client --udp "$addr" --prompt hi --json
    [ -z "$($bora client --udp "$addr" --prompt hi --json 2>/dev/null)" ] || fail "client --udp $addr printed on stdout"
done
# client --json with no server: exit 1, and stdout still holds one object that says why
out=$($bora client --tcp 127.0.0.1:1 --prompt hi --json 2>"$tmp/u.err"); rc=$?
[ $rc = 1 ] || fail "client --json without a server: exit $rc"
python3 - "$out" <<'PY' || fail "client --json without a server printed: '$out'"
import json, sys
o = json.loads(sys.argv[1])
assert o["error"] == "TRANSPORT" and o["ids"] == [] and "127.0.0.1:1" in o["message"], o
PY
echo "bora CLI ok"
