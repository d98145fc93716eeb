#!/usr/bin/env bash
# e2e_console_borad.sh — the console attached to the real daemon: a burst of concurrent
# `bora client` requests over UDP and TCP, then `boractl --json stats` must show the counts,
# token sums and TTFT / end-to-end / queue-wait percentiles that the clients' DONE frames
# carried; `metrics` parses as Prometheus text; drain refuses new work (SHUTTING_DOWN,
# counted), resume accepts again; a long request running and one queued are listed by
# `requests`, `cancel ID` ends the running one with DONE(cancelled), `reload` waits for it
# and keeps the queued one (served by the reloaded model), a reload of a broken model
# directory fails and the old model keeps serving; `config set` of live limits and the allow
# list takes effect on the next request; SIGTERM drains (status: stopping) and `shutdown` during it is accepted; borad exits 0.
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
# stats_until FILE PYTHON-CONDITION-ON-s: polls `stats --json` into FILE until the condition holds
# (counts land just before the frames that report them are sent: this only guards that race)
stats_until() {
    for _ in $(seq 100); do
        ctl --json stats >"$1" || fail "boractl stats exited $?"
        python3 -c "import json,sys; s=json.load(open('$1')); sys.exit(not ($2))" && return 0
        sleep 0.05
    done
}
read -r udp tcp < <(python3 -c '
import socket
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("127.0.0.1",0))
t=socket.socket(); t.bind(("127.0.0.1",0)); print(u.getsockname()[1], t.getsockname()[1])')
cp -r $fx "$tmp/model"             # a copy: the reload test breaks it for a while
cat >"$tmp/bora.ini" <<INI
[model]
path = $tmp/model
backend = cpu
[engine]
threads = 1
kv_dtype = fp8
[dataplane]
udp = 127.0.0.1:$udp
tcp = 127.0.0.1:$tcp
[limits]
max_tokens = 4000
[console]
socket = $tmp/c.sock
INI
"$build/borad" -c "$tmp/bora.ini" 2>"$tmp/borad.log" & borad=$!
pids+=($borad)
for _ in $(seq 200); do [ -S "$tmp/c.sock" ] && break; kill -0 $borad 2>/dev/null || break; sleep 0.05; done
[ -S "$tmp/c.sock" ] || fail "borad did not open its console socket"
ctl status | grep -q "state *serving" || fail "status"
ctl status | grep -q "^kv cache *fp8$" || fail "status does not name the FP8 KV cache ([engine] kv_dtype): $(ctl status)"
"$build/boractl" -h | grep -q "^usage: boractl" || fail "boractl -h"
out=$("$build/boractl" --socket 2>&1); [ $? -eq 2 ] && grep -q -- "--socket needs a path" <<<"$out" || fail "boractl --socket: $out"
# a console that is not there: with --json the answer is still JSON on stdout (exit 1)
out=$("$build/boractl" --socket "$tmp/none.sock" --json status 2>/dev/null); rc=$?
[ $rc -eq 1 ] && python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(not (d['ok'] is False and 'cannot connect' in d['error']))" "$out" ||
    fail "boractl --json without a console: rc $rc, '$out'"

# a console session that goes away ends that session, not borad (no SIGPIPE): answers nobody
# reads, `stats watch` dropped mid-refresh (an SSH session that dies), a session over the limit
python3 - "$tmp/c.sock" 2>"$tmp/gone.err" <<'PY'; gone_rc=$?
import socket, struct, sys, time
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); return s
for cmd in (b"status\n", b"model\n", b"help\n", b"stats\n"):
    s = conn(); s.sendall(cmd); s.close()
s = conn(); s.sendall(b"stats watch\n"); time.sleep(1.2)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
time.sleep(1.5)                                      # the next refresh meets the closed session
held = [conn() for _ in range(8)]                    # CONSOLE_CLIENTS_MAX sessions
for _ in range(3):
    conn().close()                                   # refused, and gone before the refusal
time.sleep(0.3)
for s in held: s.close()
PY
sleep 0.3
kill -0 $borad 2>/dev/null || fail "borad died when console sessions went away (exit: $(wait $borad; echo $?))"
[ $gone_rc = 0 ] || fail "console sessions that go away: $(tail -2 "$tmp/gone.err")"
ctl status | grep -q "state *serving" || fail "status after sessions that went away"

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
stats_until "$tmp/stats.json" "s['requests']['total'] >= $n"
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
assert t["cached"] == sum(d["cached_tokens"] for d in done), t
pc = stats["prefix_cache"]
assert pc["lookups"] == len(done) and pc["hits"] == sum(d["cached_tokens"] > 0 for d in done), pc
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

# the prefix cache: the same 5-token prompt twice in a row; the second reuses all but its
# last token (which runs for its logits) and continues exactly as the first did
for k in 1 2; do
    "$build/bora" client --tcp 127.0.0.1:$tcp --ids 1,7,8,9,10 -n 4 --ignore-eos --json >"$tmp/p$k.json" ||
        fail "prefix request $k"
done
python3 - "$tmp/p1.json" "$tmp/p2.json" <<'PY' || fail "prefix cache: second request not served from the cache"
import json, sys
a, b = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:3])
assert b["cached_tokens"] == 4 and b["prompt_tokens"] == 5, b
assert len(a["ids"]) == 4 and a["ids"] == b["ids"], (a, b)
PY

# malformed frames are counted per transport: a datagram and a TCP frame with a bad magic
python3 - $udp $tcp <<'PY' || fail "could not send the malformed frames"
import socket, sys, time
bad = b"XWP1" + bytes(28)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(bad, ("127.0.0.1", int(sys.argv[1])))
t = socket.create_connection(("127.0.0.1", int(sys.argv[2]))); t.sendall(bad)
t.settimeout(5); t.recv(4096); t.close()   # the ERROR (BAD_FRAME), then the server closes
PY
stats_until "$tmp/stats.json" "s['dataplane']['udp']['malformed'] >= 1 and s['dataplane']['tcp']['malformed'] >= 1"
python3 -c "import json,sys; d=json.load(open('$tmp/stats.json'))['dataplane']; assert d['udp']['malformed'] == 1 and d['tcp']['malformed'] == 1, d" ||
    fail "malformed frames not counted once per transport"

# ERRORs that answer frames which are not requests are counted by code, not as requests:
# a PING with a payload (UDP and TCP), bytes that are no frame then a close, a truncated
# CANCEL header; a RESEND on TCP is ignored whatever its payload (rule 14), a refused GENERATE
# is a request. A client that stops reading while its answers pile up is a TCP drop.
ctl --json stats >"$tmp/before.json" || fail "stats before the frame errors"
python3 - $udp $tcp <<'PY' || fail "frame errors: the answers were not as the spec says"
import socket, struct, sys, time
udp, tcp = int(sys.argv[1]), int(sys.argv[2])
def hdr(t, rid, n, flags=0): return b"BWP1" + bytes([t, flags]) + b"\0\0" + struct.pack("<IIQ", n, 0, rid)
def error_code(fr): return struct.unpack_from("<H", fr, 24)[0] if fr[4] == 0x85 else None
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(hdr(3, 901, 2) + b"xx", ("127.0.0.1", udp))                  # PING with a payload
assert error_code(u.recv(4096)) == 1
t = socket.create_connection(("127.0.0.1", tcp)); t.settimeout(5)
t.sendall(hdr(4, 902, 7) + b"1234567" + hdr(3, 903, 1) + b"x")        # RESEND (ignored), PING + payload
fr = t.recv(4096); assert fr[4] == 0x85 and struct.unpack_from("<Q", fr, 16)[0] == 903, fr
t.sendall(hdr(1, 904, 4) + b"\0\0\0\0")                                # GENERATE cut short: a refused request
fr = t.recv(4096); assert error_code(fr) == 1 and struct.unpack_from("<Q", fr, 16)[0] == 904, fr
t.close()
g = socket.create_connection(("127.0.0.1", tcp)); g.sendall(b"xyz"); g.shutdown(socket.SHUT_WR)
g.settimeout(5); g.recv(4096); g.close()                                 # short header at the end of the stream
# a client that never reads: PINGs until its 1 MiB of answers cannot be held
d = socket.socket(); d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
d.connect(("127.0.0.1", tcp)); d.settimeout(10)
ping = b"".join(hdr(3, 1000 + i, 0) for i in range(512))
try:
    for _ in range(400):
        d.sendall(ping)
except OSError:
    pass                                                                 # the server dropped it
d.close()
PY
stats_until "$tmp/after.json" "s['dataplane']['tcp']['drop'] >= 1"
python3 - "$tmp/before.json" "$tmp/after.json" <<'PY' || fail "frame errors counted wrongly"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
d = lambda k: b["requests"][k] - a["requests"][k]
assert d("total") == 1 and d("error") == 1, (a["requests"], b["requests"])   # only the GENERATE
bf = b["errors"].get("BAD_FRAME", 0) - a["errors"].get("BAD_FRAME", 0)
assert bf == 4, (a["errors"], b["errors"])          # 2 PINGs, the GENERATE, the short header
assert b["dataplane"]["tcp"]["drop"] >= 1, b["dataplane"]
PY

# drain: a new request is refused with SHUTTING_DOWN and counted; resume: served again
ctl drain >/dev/null || fail "drain"
ctl status | grep -q "state *draining" || fail "status after drain"
"$build/bora" client --udp 127.0.0.1:$udp --ids 1,5,6 -n 2 >"$tmp/d.out" 2>&1 && fail "request served while draining"
grep -qi "SHUTTING_DOWN\|shutting" "$tmp/d.out" || fail "drained request: $(cat "$tmp/d.out")"
ctl --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); assert s["errors"].get("SHUTTING_DOWN")==1, s["errors"]' ||
    fail "SHUTTING_DOWN not counted"
ctl resume >/dev/null || fail "resume"
grep -q "borad: info: console: drain" "$tmp/borad.log" && grep -q "borad: info: console: resume" "$tmp/borad.log" ||
    fail "drain / resume not in the log: $(tail -3 "$tmp/borad.log")"
"$build/bora" client --udp 127.0.0.1:$udp --ids 1,5,6 -n 2 --ignore-eos >/dev/null 2>&1 || fail "request refused after resume"
ctl model | grep -q "layers.*attention.wq" || fail "model"

# ---- requests, cancel, reload: a long request runs, a short one waits behind it ----
gen() { python3 tests/support/console_e2e.py gen $tcp "$@"; }
# polls `requests --json` until the python condition on r (the answer) holds
wait_requests() {
    for _ in $(seq 200); do
        ctl --json requests >"$tmp/req.json" 2>/dev/null &&
            python3 -c "import json,sys; r=json.load(open('$tmp/req.json')); sys.exit(not ($1))" && return 0
        sleep 0.05
    done
    fail "requests never showed: $1 (last: $(cat "$tmp/req.json"))"
}
gen 101 4000 1,5,6 >"$tmp/long.json" & plong=$!; pids+=($plong)
wait_requests 'any(q["id"] == 101 and q["state"] == "running" for q in r["requests"])'
gen 202 3 1,7,8 >"$tmp/queued.json" & pq=$!; pids+=($pq)
wait_requests 'r["total"] == 2'
python3 - "$tmp/req.json" <<'PY' || fail "requests: $(cat "$tmp/req.json")"
import json, sys
r = json.load(open(sys.argv[1]))
run, q = r["requests"]
assert (run["id"], run["state"], q["id"], q["state"]) == (101, "running", 202, "queued"), r
for x in (run, q):
    assert x["client"].startswith("tcp 127.0.0.1:") and x["prompt_tokens"] == 3, x
    assert 0 < x["age_us"] < 30e6, x
assert run["age_us"] > q["age_us"], "the running request was accepted first"
assert q["completion_tokens"] == 0 and run["completion_tokens"] >= 0, r
PY
ctl requests | grep -q "^202 *queued" || fail "text requests: $(ctl requests)"
ctl status | grep -q "1 queued, 1 running" || fail "status counts: $(ctl status)"
ctl reload >"$tmp/reload.out" 2>&1 & preload=$!          # waits for the running request
for _ in $(seq 200); do ctl status | grep -q "state *reloading" && break; sleep 0.05; done
ctl status | grep -q "state *reloading" || fail "status during reload: $(ctl status)"
out=$(ctl cancel 101 2>&1); grep -q "cancelled 101" <<<"$out" || fail "cancel 101: $out; $(ctl requests)"
wait $plong || fail "long request client"
python3 -c "import json,sys; d=json.load(open('$tmp/long.json')); sys.exit(not (d['finish'] == 2 and d['completion_tokens'] < 4000))" ||
    fail "cancelled request: $(cut -c1-300 "$tmp/long.json")"
wait $preload || fail "reload: $(cat "$tmp/reload.out")"
grep -q "model reloaded" "$tmp/reload.out" || fail "reload said: $(cat "$tmp/reload.out")"
ctl status | grep -q "^kv cache *fp8$" || fail "the reloaded model's KV cache: $(ctl status)"
wait $pq || fail "queued request client"
gen 203 3 1,7,8 >"$tmp/again.json" || fail "request after reload"
python3 - "$tmp/queued.json" "$tmp/again.json" <<'PY' || fail "queued request across the reload: $(cat "$tmp/queued.json")"
import json, sys
q, again = (json.load(open(f)) for f in sys.argv[1:3])
assert q["accepted"] == 1 and q["finish"] == 1 and q["completion_tokens"] == 3, q
assert q["ids"] == again["ids"] and len(q["ids"]) == 3, (q["ids"], again["ids"])  # same model, greedy
PY
out=$(ctl cancel 101 2>&1) && fail "cancel of a finished request succeeded"
grep -q "no queued or running request has id 101" <<<"$out" || fail "cancel unknown: $out"
# a reload of a broken directory fails; the old model keeps serving
mv "$tmp/model/config.json" "$tmp/model/config.off"
out=$(ctl reload 2>&1) && fail "reload of a broken model succeeded"
grep -q "config.json" <<<"$out" && grep -q "old model keeps serving" <<<"$out" || fail "failed reload said: $out"
mv "$tmp/model/config.off" "$tmp/model/config.json"
# a reload that would lose the tokenizer (its file moved away mid-update) is refused the same way
mv "$tmp/model/tokenizer.model" "$tmp/model/tokenizer.off"
out=$(ctl reload 2>&1) && fail "a reload without the tokenizer succeeded"
grep -q "no tokenizer file" <<<"$out" && grep -q "old model keeps serving" <<<"$out" || fail "reload without tokenizer said: $out"
mv "$tmp/model/tokenizer.off" "$tmp/model/tokenizer.model"
ctl status | grep -q "state *serving" || fail "status after a failed reload"
gen 204 3 1,7,8 >"$tmp/after.json" || fail "request after a failed reload"
cmp -s <(python3 -c "import json; print(json.load(open('$tmp/after.json'))['ids'])") \
       <(python3 -c "import json; print(json.load(open('$tmp/again.json'))['ids'])") || fail "served differently after a failed reload"

# ---- live config: limits and the allow list apply to the next request ----
finish_of() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['error'] if d['error'] else 'done%d' % d['finish'])"; }
ctl config set limits.max_tokens 4 >/dev/null || fail "config set limits.max_tokens 4"
[ "$(gen 301 8 1,5,6 | finish_of)" = 6 ] || fail "max_tokens 8 over a live limit of 4 was not BAD_PARAMS"
[ "$(gen 302 4 1,5,6 | finish_of)" = done1 ] || fail "max_tokens 4 refused under a limit of 4"
ctl config set limits.max_tokens 0 >/dev/null 2>&1 && fail "limits.max_tokens 0 accepted"
ctl config set limits.max_prompt_bytes 999999999 >/dev/null 2>&1 && fail "max_prompt_bytes above the start-up buffers accepted"
ctl config set dataplane.allow 10.0.0.0/8 >/dev/null || fail "config set dataplane.allow"
[ "$(gen 303 2 1,5,6 | finish_of)" = 11 ] || fail "a client outside the live allow list was not FORBIDDEN"
ctl config set dataplane.allow 127.0.0.0/8,10.1.2.3 >/dev/null || fail "config set dataplane.allow back"
# the log shows the value as stored (and as the console's reply shows it), not as typed
grep -q "borad: info: console: dataplane.allow = 127.0.0.0/8,10.1.2.3/32$" "$tmp/borad.log" ||
    fail "the log does not show the stored value: $(grep 'console: dataplane.allow' "$tmp/borad.log")"
[ "$(gen 304 2 1,5,6 | finish_of)" = done1 ] || fail "allowed again"
# max_conns_per_addr through borad's console: with one connection held open, the next one from
# 127.0.0.1 is told BUSY (request_id 0) when it connects; with the cap off again it is served
ctl config set dataplane.max_conns_per_addr 1 >/dev/null || fail "config set dataplane.max_conns_per_addr 1"
exec 7<>"/dev/tcp/127.0.0.1/$tcp" || fail "cannot hold a TCP connection open"
[ "$(gen 321 2 1,5,6 | finish_of)" = 4 ] || fail "a connection past max_conns_per_addr 1 was not BUSY"
exec 7<&- 7>&-
ctl config set dataplane.max_conns_per_addr 0 >/dev/null || fail "config set dataplane.max_conns_per_addr 0"
[ "$(gen 322 2 1,5,6 | finish_of)" = done1 ] || fail "not served with the cap off"
ctl --json config show | grep -q '"limits.max_tokens": *"4"' || ctl config show | grep -q "max_tokens *= *4" ||
    fail "config show does not show the live value"

# log level: debug adds a line per finished request to borad's log; error removes it again
ctl log level debug >/dev/null || fail "log level debug"
[ "$(gen 305 2 1,5,6 | finish_of)" = done1 ] || fail "request at log level debug"
for _ in $(seq 50); do grep -q "borad: debug: request 305: done" "$tmp/borad.log" && break; sleep 0.05; done
grep -q "borad: debug: request 305: done (max_tokens): prompt 3 tokens" "$tmp/borad.log" ||
    fail "log level debug: no line for request 305: $(tail -3 "$tmp/borad.log")"
ctl log level error >/dev/null || fail "log level error"
[ "$(gen 306 2 1,5,6 | finish_of)" = done1 ] || fail "request at log level error"
sleep 0.2
grep -q "request 306" "$tmp/borad.log" && fail "log level error still logs requests"

# SIGTERM drains: status says stopping (not serving) with the running request counted; the
# console's shutdown during that drain is accepted; the drain ends when the request does
ctl config set limits.max_tokens 4000 >/dev/null || fail "config set limits.max_tokens 4000"
# a UDP client that gives up at --timeout-ms cancels its request: the decoder is free at once
out=$("$build/bora" client --udp 127.0.0.1:$udp --ids 1,5,6 -n 4000 --ignore-eos --timeout-ms 300 2>&1) &&
    fail "a client that timed out exited 0: $out"
grep -q "no complete answer before --timeout-ms (CANCEL sent)" <<<"$out" || fail "timed-out client said: $out"
for _ in $(seq 10); do ctl status | grep -q "0 queued, 0 running" && break; sleep 0.05; done   # 4,000 tokens take seconds
ctl status | grep -q "0 queued, 0 running" || fail "the timed-out request still runs: $(ctl requests)"
gen 307 4000 1,5,6 >"$tmp/drain.json" & pd=$!; pids+=($pd)
wait_requests 'any(q["id"] == 307 and q["state"] == "running" for q in r["requests"])'
kill -TERM $borad
for _ in $(seq 200); do ctl status | grep -q "state *stopping" && break; sleep 0.05; done
ctl status | grep -q "state *stopping" || fail "status during a SIGTERM drain: $(ctl status)"
ctl status | grep -q "0 queued, 1 running" || fail "status counts during the drain: $(ctl status)"
ctl shutdown >/dev/null || fail "shutdown"
out=$(ctl cancel 307 2>&1); grep -q "cancelled 307" <<<"$out" || fail "cancel 307 during the drain: $out"
wait $pd || fail "the request running when SIGTERM came"
python3 -c "import json,sys; d=json.load(open('$tmp/drain.json')); sys.exit(not (d['finish'] == 2))" ||
    fail "request cancelled during the drain: $(cut -c1-300 "$tmp/drain.json")"
for _ in $(seq 200); do kill -0 $borad 2>/dev/null || break; sleep 0.05; done
kill -0 $borad 2>/dev/null && fail "borad still running after the drain"
wait $borad || fail "borad exited $? after the drain"
echo "e2e_console_borad: ok"
