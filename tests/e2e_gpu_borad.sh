#!/usr/bin/env bash
# e2e_gpu_borad.sh — borad on the GPU (skips without one): it opens a fixture with the direct
# cold-start loader (weights streamed from the shards into the device arena) and says it serves
# on the cuda backend; greedy ids over UDP equal `bora generate --backend cuda` and the
# fixture's reference (Hugging Face) up to its first near-tie; the same prompt again is served
# from the prefix cache with the same ids; a sampled request (temperature 0.8, seed 42) gives
# the ids `bora generate` gives with the same seed (both sample on the GPU); the console shows
# the GPU's memory in `stats` and `metrics`, and `model` the engine's VRAM by region, within
# what the driver counts as used; SIGTERM exits 0.
# Then borad again with `[engine] prefill_chunk = 16`: it says so, and the 20-token prompt,
# prefilled in two chunks, gives the same greedy ids.
set -u
build=${1:-build}
bora=$build/bora
borad=$build/borad
boractl=$build/boractl
fx=tests/data/fixtures/mistral-tiny-bf16
. "$(dirname "$0")/support/e2e_lib.sh"
e2e_borad_begin "$fx"

prompt=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['prompt_ids'])))")
if ! $bora generate $fx --ids "$prompt" -n 8 --ignore-eos --backend cuda --json >"$tmp/gen.json" 2>"$tmp/gen.err"; then
    if grep -qi "no CUDA device\|without CUDA\|no CUDA backend\|compute capability" "$tmp/gen.err"; then
        echo "SKIP: no usable GPU: $(head -1 "$tmp/gen.err")"
        exit 77
    fi
    fail "bora generate --backend cuda: $(cat "$tmp/gen.err")"
fi

$bora generate $fx --ids "$prompt" -n 8 --ignore-eos --backend cuda --temperature 0.8 --seed 42 --json \
    >"$tmp/gens.json" 2>"$tmp/gens.err" || fail "bora generate sampled: $(cat "$tmp/gens.err")"
port=$(python3 -c 'import socket
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("127.0.0.1",0)); print(u.getsockname()[1])')
cat >"$tmp/bora.ini" <<EOF
[model]
path = $fx
backend = cuda
max_ctx = 256
[dataplane]
udp = 127.0.0.1:$port
tcp =
[console]
socket = $tmp/console.sock
EOF
start_borad() {   # start_borad WHAT: borad on $tmp/bora.ini, until it says it serves
    "$borad" -c "$tmp/bora.ini" >"$tmp/borad.log" 2>&1 &
    pid=$!
    wait_banner "$pid" "$tmp/borad.log" "BWP/1 on" 30 "$1"
}
stop_borad() {   # stop_borad WHAT: SIGTERM must drain and exit 0
    kill -TERM "$pid"
    wait "$pid"; local rc=$?
    pid=
    [ $rc -eq 0 ] || fail "$1 exited $rc after SIGTERM"
}
start_borad borad
grep -q "backend cuda" "$tmp/borad.log" || fail "borad does not serve on the cuda backend"
grep -q "weights streamed into GPU memory" "$tmp/borad.log" || fail "borad did not stream the weights (direct loader)"
# first (nothing cached yet, the same path as bora generate): sampled; then greedy twice
$bora client --udp 127.0.0.1:$port --ids "$prompt" -n 8 --ignore-eos --temperature 0.8 --seed 42 --json \
    >"$tmp/s.json" 2>"$tmp/s.err" || fail "sampled client: $(cat "$tmp/s.err")"
for k in 1 2; do
    $bora client --udp 127.0.0.1:$port --ids "$prompt" -n 8 --ignore-eos --json >"$tmp/c$k.json" 2>"$tmp/c$k.err" ||
        fail "client $k: $(cat "$tmp/c$k.err")"
done
python3 - "$tmp/gens.json" "$tmp/s.json" <<'PY' || fail "sampled ids differ from bora generate's"
import json, sys
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
g, s = last(sys.argv[1]), last(sys.argv[2])
assert g["ids"] == s["ids"], (g["ids"], s["ids"])
print("e2e_gpu_borad: sampled (T 0.8, seed 42) ids equal bora generate's:", s["ids"])
PY
python3 - "$fx/reference.json" "$tmp/gen.json" "$tmp/c1.json" "$tmp/c2.json" <<'PY' || fail "ids differ"
import json, sys
c = json.load(open(sys.argv[1]))["cases"][0]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
gen, a, b = (last(f) for f in sys.argv[2:5])
gen_ids = gen["ids"] if "ids" in gen else gen["completion_ids"]
assert a["ids"] == gen_ids, ("borad vs bora generate", a["ids"], gen_ids)
n = len(c["prompt_ids"])
for i, (got, ref) in enumerate(zip(a["ids"], c["greedy_ids"])):
    if c["top1_margin"][n + i - 1] < 1e-2:
        break                                   # a near-tie in the reference: stop comparing
    assert got == ref, ("borad vs the reference at", i, got, ref)
assert b["cached_tokens"] == n - 1 and b["ids"] == a["ids"], ("prefix cache", b)
print("e2e_gpu_borad: borad on cuda matches bora generate and the reference; cached %d tokens" % b["cached_tokens"])
PY
# GPU memory on the console: sampled from the driver, the engine's regions within it
$boractl --socket "$tmp/console.sock" stats >"$tmp/stats.txt" 2>&1 || fail "boractl stats: $(cat "$tmp/stats.txt")"
grep -Eq "^gpu memory +[0-9.]+ [KMGT]?i?B used of [0-9.]+ [KMGT]?i?B" "$tmp/stats.txt" ||
    fail "stats shows no GPU memory: $(grep -i gpu "$tmp/stats.txt")"
$boractl --socket "$tmp/console.sock" metrics >"$tmp/metrics.txt" 2>&1 || fail "boractl metrics"
$boractl --socket "$tmp/console.sock" --json model >"$tmp/model.json" 2>&1 || fail "boractl model: $(cat "$tmp/model.json")"
python3 - "$tmp/model.json" "$tmp/metrics.txt" <<'PY' || fail "GPU memory figures"
import json, sys
v = json.load(open(sys.argv[1]))["vram"]
for k in ("weights", "kv_cache", "activations", "prefill", "gpu_used_all", "gpu_total"):
    assert v.get(k, 0) > 0, ("vram category missing or zero", k, v)
own = v["weights"] + v["kv_cache"] + v["activations"] + v["prefill"]
assert own <= v["gpu_used_all"] <= v["gpu_total"], ("engine regions not within the driver's use", v)
m = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[2]) if l.startswith("bora_gpu_memory_bytes")}
assert m['bora_gpu_memory_bytes{kind="total"}'] == v["gpu_total"], (m, v)
print("e2e_gpu_borad: GPU memory on the console: engine %d MiB of %d MiB used, %d MiB total"
      % (own >> 20, v["gpu_used_all"] >> 20, v["gpu_total"] >> 20))
PY
# the default chunk (2,048 tokens) is clamped to the 256-token context
grep -q "prompts prefilled in chunks of 256 tokens" "$tmp/borad.log" || fail "borad does not state the prefill chunk"
stop_borad borad

# the prefill chunk from the config: the prompt in chunks of 16 tokens gives the same ids
printf '[engine]\nprefill_chunk = 16\n' >>"$tmp/bora.ini"
start_borad "borad (prefill_chunk = 16)"
grep -q "prompts prefilled in chunks of 16 tokens" "$tmp/borad.log" || fail "borad does not use [engine] prefill_chunk = 16"
$bora client --udp 127.0.0.1:$port --ids "$prompt" -n 8 --ignore-eos --json >"$tmp/p.json" 2>"$tmp/p.err" ||
    fail "client (prefill_chunk = 16): $(cat "$tmp/p.err")"
python3 - "$fx/reference.json" "$tmp/gen.json" "$tmp/p.json" <<'PY' || fail "ids differ with prefill_chunk = 16"
import json, sys
c = json.load(open(sys.argv[1]))["cases"][0]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
gen, p = last(sys.argv[2]), last(sys.argv[3])
n = len(c["prompt_ids"])
assert n > 16, ("the prompt must take two chunks", n)
assert p["cached_tokens"] == 0, ("a fresh borad has nothing cached", p)
gen_ids = gen["ids"] if "ids" in gen else gen["completion_ids"]
k = 0   # other chunks round differently: equal up to the reference's first near-tie
for i, (got, g, ref) in enumerate(zip(p["ids"], gen_ids, c["greedy_ids"])):
    if c["top1_margin"][n + i - 1] < 1e-2:
        break
    assert got == g == ref, ("prefill_chunk 16 at", i, got, g, ref)
    k += 1
assert k > 0, "no id before a near-tie to compare"
print("e2e_gpu_borad: a %d-token prompt in chunks of 16 gives the same %d ids as bora generate and the reference" % (n, k))
PY
stop_borad "borad (prefill_chunk = 16)"
echo "e2e_gpu_borad: ok"
