#!/usr/bin/env bash
# e2e_plan.sh — `bora plan` from the command line: a preset and a fixture directory, the
# fits / does-not-fit exit status, and usage errors. CPU only.
set -u
b=${1:-build}/bora
[ -x "$b" ] || { echo "no $b"; exit 1; }
fail() { echo "e2e_plan: $*"; exit 1; }
out=$("$b" plan --preset mistral-7b --precision fp8 --ctx 512 --gpu h200) || fail "7b fp8 on h200 should fit"
grep -q "fp8 fits" <<<"$out" || fail "no verdict: $out"
grep -qE "decode tok/s, bandwidth bound +[0-9.]+ +[0-9.]+" <<<"$out" || fail "no tok/s row: $out"
"$b" plan --preset mistral-medium-3.5 --precision bf16 --ctx 8192 >/tmp/e2e_plan.$$ 2>&1
rc=$?; out=$(cat /tmp/e2e_plan.$$); rm -f /tmp/e2e_plan.$$
[ $rc -eq 1 ] || fail "medium bf16 on h200 should not fit (rc $rc)"
grep -q "does not fit" <<<"$out" || fail "no refusal text: $out"
out=$("$b" plan --preset mistral-medium-3.5 --precision fp8 --ctx 8192) || fail "medium fp8 ctx 8192 should fit an h200"
grep -qE "^prefill chunk \(tokens\) +2048 +2048$" <<<"$out" || fail "medium at 8192: no 2048-token prefill row: $out"
grep -qE "^prefill workspace \(GB\) +0\.55 " <<<"$out" || fail "medium at 8192: no prefill workspace row: $out"
# near the limit the arena fits and the prefill workspace beside it shrinks, as the engine's does
out=$("$b" plan --preset mistral-medium-3.5 --precision fp8 --ctx 59000) || fail "medium fp8 ctx 59000 should fit an h200"
grep -q "does not fit beside it: prompts" <<<"$out" && grep -q "are prefilled in 512-token chunks" <<<"$out" ||
    fail "medium at 59000: no 512-token prefill note: $out"
out=$("$b" plan --preset mistral-medium-3.5 --precision fp8 --ctx 60000) || fail "medium fp8 ctx 60000 should fit an h200"
grep -qE "^prefill chunk \(tokens\) +none " <<<"$out" && grep -q "prompts run one decode step per token" <<<"$out" &&
    grep -q "GB for 32):" <<<"$out" ||
    fail "medium at 60000: no token-by-token note: $out"
# an FP8 KV cache: half the KV bytes, so Medium 3.5 at 100,000 tokens fits with full prefill chunks
# (BF16's cache does not fit at all there); the prefill workspace grows by the bf16 copy of a layer
out=$("$b" plan --preset mistral-medium-3.5 --precision fp8 --ctx 100000 --kv fp8) || fail "medium fp8 with an fp8 cache at 100000 should fit"
grep -q "KV cache for 100000 tokens (fp8)" <<<"$out" || fail "the GPU line does not name the fp8 cache: $out"
grep -qE "^KV cache \(GB\) +18\.02 " <<<"$out" || fail "medium at 100000: an fp8 cache is 18.02 GB: $out"
grep -qE "^prefill chunk \(tokens\) +2048 " <<<"$out" || fail "medium at 100000 with an fp8 cache: no 2048-token chunks: $out"
grep -qE "^prefill workspace \(GB\) +0\.95 " <<<"$out" || fail "medium at 100000: the workspace with the bf16 copy: $out"
"$b" plan --preset mistral-medium-3.5 --precision fp8 --ctx 100000 >/dev/null && fail "medium with a bf16 cache at 100000 should not fit"
err=$("$b" plan --preset mistral-7b --kv fp16 2>&1); [ $? -eq 2 ] && grep -q "expected bf16 or fp8 (got 'fp16')" <<<"$err" ||
    fail "--kv fp16: $err"
out=$("$b" plan tests/data/fixtures/mistral-tiny-bf16 --gpu rtx4090) || fail "tiny fixture should fit an rtx4090"
echo "$out" | grep -q "4 layers, dim 64" || fail "fixture dir not read"
echo "$out" | grep -q "KV cache for 4096 tokens (bf16), the model's context" ||
    fail "a model directory's plan is not sized to its context (max_position_embeddings 4096)"
echo "$out" | grep -q "compute capability 8.9; bora's CUDA backend needs 9.0" || fail "no note that the CUDA backend needs Hopper"
echo "$out" | grep -q "^model checkpoint checked as a load checks it" || fail "a directory with weights: no checkpoint check line"
# a checkpoint plan would load: its weights are checked as a load checks them, not only its config
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/cut" "$tmp/cfg" "$tmp/fifo"
cp tests/data/fixtures/mistral-tiny-bf16/* "$tmp/cut/"
truncate -s 4096 "$tmp/cut/model.safetensors"
err=$("$b" plan "$tmp/cut" 2>&1 >/dev/null); [ $? -eq 1 ] || fail "a truncated checkpoint should be refused"
grep -q "model.safetensors" <<<"$err" || fail "the refusal does not name the file: $err"
cp tests/data/fixtures/mistral-tiny-bf16/config.json "$tmp/cfg/"   # a config alone: planned, and said so
out=$("$b" plan "$tmp/cfg" --gpu h200) || fail "a config alone should be planned"
grep -q "configuration only: no \*.safetensors there, the weights are not checked" <<<"$out" || fail "no config-only note: $out"
# a config alone plans in the precision it declares: FP8 from a Hugging Face quantization_config
# and from Mistral's native params.json ("quantization": {"qformat_weight": "fp8_e4m3"})
mkdir "$tmp/hf8" "$tmp/nat8" "$tmp/natq" "$tmp/nat16"
sed 's/^{/{"quantization_config": {"quant_method": "fp8", "activation_scheme": "static"},/' \
    tests/data/fixtures/mistral-tiny-bf16/config.json >"$tmp/hf8/config.json"
grep -q "^fp8 fits" <<<"$("$b" plan "$tmp/hf8" --gpu h200)" || fail "an FP8 config.json alone should plan fp8"
native='{"dim": 64, "n_layers": 2, "head_dim": 16, "hidden_dim": 192, "n_heads": 4, "n_kv_heads": 2,
 "norm_eps": 1e-05, "vocab_size": 32768, "rope_theta": 1000000.0, "comment": "fp8"'
echo "$native}" >"$tmp/nat16/params.json"    # the text fp8 declares nothing
grep -q "^bf16 fits" <<<"$("$b" plan "$tmp/nat16" --gpu h200)" || fail "a native BF16 params.json alone should plan bf16"
echo "$native, \"quantization\": {\"qformat_weight\": \"fp8_e4m3\", \"qscheme_act\": \"TENSOR\"}}" >"$tmp/nat8/params.json"
grep -q "^fp8 fits" <<<"$("$b" plan "$tmp/nat8" --gpu h200)" || fail "a native FP8 params.json alone should plan fp8"
sed 's/fp8_e4m3/int4/' "$tmp/nat8/params.json" >"$tmp/natq/params.json"
err=$("$b" plan "$tmp/natq" 2>&1 >/dev/null); [ $? -eq 1 ] || fail "a native int4 params.json should be refused"
grep -q "key 'quantization.qformat_weight': only 'fp8_e4m3' is supported (got 'int4')" <<<"$err" || fail "int4 message: $err"
mkfifo "$tmp/fifo/config.json"   # refused, never opened for reading (a FIFO would block)
err=$(timeout 20 "$b" plan "$tmp/fifo" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "a FIFO config.json should be refused (rc $rc)"
grep -q "not a regular file (a FIFO)" <<<"$err" || fail "FIFO message: $err"
"$b" plan --preset mistral-7b --gpu h100 | grep -q "compute capability" && fail "an h100 runs the CUDA backend: no note expected"
"$b" plan --preset nope >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown preset should be a usage error"
"$b" plan >/dev/null 2>&1; [ $? -eq 2 ] || fail "no model should be a usage error"
"$b" plan /nonexistent >/dev/null 2>&1; [ $? -eq 1 ] || fail "missing dir should fail"
err=$("$b" plan --preset mistral-7b --gpu a100 2>&1 >/dev/null); [ $? -eq 2 ] || fail "an unknown GPU should be a usage error"
grep -q "unknown GPU .a100." <<<"$err" || fail "unknown GPU message: $err"
echo "e2e_plan: ok"
