#!/usr/bin/env bash
# e2e_console_borad.sh — the console attached to the real daemon: a burst of concurrent
# `bora client` requests over UDP and TCP, then `boractl --json stats` must show the counts,
# token sums and TTFT / end-to-end / queue-wait percentiles that the clients' DONE frames
# carried; `metrics` parses as Prometheus text; drain refuses new work (SHUTTING_DOWN,
# counted), resume accepts again; `shutdown` stops borad with exit 0.
set -u
build=${1:-build}
fx=tests/data/fixtures/mistral-tiny-bf16
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
[ -d $fx ] || { echo "SKIP: fixture $fx missing"; exit 77; }
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -5 "$tmp/borad.log" 2>/dev/null; exit 1; }
ctl() { "$build/boractl" --socket "$tmp/c.sock" "$@"; }
read -r udp tcp < <(python3 -c '
import socket
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("127.0.0.1",0))
t=socket.socket(); t.bind(("127.0.0.1",0)); print(u.getsockname()[1], t.getsockname()[1])')
cat >"$tmp/bora.ini" <<INI
[model]
path = $fx
backend = cpu
[engine]
threads = 1
[dataplane]
udp = 127.0.0.1:$udp
tcp = 127.0.0.1:$tcp
[console]
socket = $tmp/c.sock
INI
# OpenMP's spinning workers starve the io and decoder threads on small machines (TTFT of
# seconds instead of milliseconds); passive waiting keeps this test quick (see the report)
OMP_WAIT_POLICY=passive "$build/borad" -c "$tmp/bora.ini" 2>"$tmp/borad.log" & borad=$!
pids+=($borad)
for _ in $(seq 200); do [ -S "$tmp/c.sock" ] && break; kill -0 $borad 2>/dev/null || break; sleep 0.05; done
[ -S "$tmp/c.sock" ] || fail "borad did not open its console socket"
ctl status | grep -q "state *serving" || fail "status"

# the burst: 24 clients at once, half UDP, half TCP, 3..8 tokens each
n=24
for i in $(seq $n); do
    if [ $((i % 2)) = 0 ]; then via="--udp 127.0.0.1:$udp"; else via="--tcp 127.0.0.1:$tcp"; fi
    "$build/bora" client $via --ids "1,$((1000 + i)),$((2000 + i))" -n $((3 + i % 6)) --ignore-eos \
        --seed $i --json >"$tmp/c$i.json" 2>"$tmp/c$i.err" & pids+=($!)
    cpids+=($!)
done
for p in "${cpids[@]}"; do wait "$p" || fail "a client failed: $(cat "$tmp"/c*.err | head -3)"; done
cat "$tmp"/c*.json >"$tmp/clients.jsonl"

# poll until every DONE is counted (it is counted before it is sent; this only guards races)
for _ in $(seq 100); do
    ctl --json stats >"$tmp/stats.json" || fail "boractl stats exited $?"
    python3 -c "import json,sys; sys.exit(json.load(open('$tmp/stats.json'))['requests']['total'] < $n)" && break
    sleep 0.05
done
python3 - "$tmp/stats.json" "$tmp/clients.jsonl" <<'PY' || fail "stats do not match what the clients measured"
import json, sys
sys.path.insert(0, "tests/support")
from console_e2e import check_percentiles
stats = json.load(open(sys.argv[1]))
done = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert len(done) == 24, len(done)
r = stats["requests"]
assert r["total"] == len(done) and r["max_tokens"] == len(done) and r["error"] == 0, r
t = stats["tokens"]
assert t["prompt"] == sum(d["prompt_tokens"] for d in done), t
assert t["completion"] == sum(d["completion_tokens"] for d in done), t
assert t["decoded"] == t["completion"], t
check_percentiles(stats, "ttft_us", [d["ttft_us"] for d in done])
check_percentiles(stats, "e2e_us", [d["total_us"] for d in done])
check_percentiles(stats, "queue_wait_us", [d["queue_us"] for d in done])
assert stats["queue_depth"] == 0, stats["queue_depth"]
dp = stats["dataplane"]
assert dp["udp"]["rx"] >= 12 and dp["tcp"]["rx"] >= 12, dp
assert dp["udp"]["tx"] + dp["tcp"]["tx"] >= sum(d["completion_tokens"] + 2 for d in done), dp
assert stats["host_memory"] and stats["host_memory"]["allocated"] > 0, "jemalloc figures missing"
print("stats match the clients: %d requests, p50/p90/p99 ttft %s/%s/%s us" % (
    len(done), stats["ttft_us"]["p50"], stats["ttft_us"]["p90"], stats["ttft_us"]["p99"]))
PY
ctl stats | grep -q "max_tokens $n" || fail "text stats do not show the burst"
ctl metrics >"$tmp/metrics.txt" || fail "metrics"
python3 tests/support/console_e2e.py prom "$tmp/metrics.txt" || fail "metrics is not Prometheus text"
grep -q "^bora_requests_total{outcome=\"max_tokens\"} $n\$" "$tmp/metrics.txt" || fail "metrics count"

# drain: a new request is refused with SHUTTING_DOWN and counted; resume: served again
ctl drain >/dev/null || fail "drain"
ctl status | grep -q "state *draining" || fail "status after drain"
"$build/bora" client --udp 127.0.0.1:$udp --ids 1,5,6 -n 2 >"$tmp/d.out" 2>&1 && fail "request served while draining"
grep -qi "SHUTTING_DOWN\|shutting" "$tmp/d.out" || fail "drained request: $(cat "$tmp/d.out")"
ctl --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); assert s["errors"].get("SHUTTING_DOWN")==1, s["errors"]' ||
    fail "SHUTTING_DOWN not counted"
ctl resume >/dev/null || fail "resume"
"$build/bora" client --udp 127.0.0.1:$udp --ids 1,5,6 -n 2 --ignore-eos >/dev/null 2>&1 || fail "request refused after resume"
ctl model | grep -q "layers.*attention.wq" || fail "model"

ctl shutdown >/dev/null || fail "shutdown"
for _ in $(seq 200); do kill -0 $borad 2>/dev/null || break; sleep 0.05; done
kill -0 $borad 2>/dev/null && fail "borad still running after shutdown"
wait $borad || fail "borad exited $? after shutdown"
echo "e2e_console_borad: ok"
