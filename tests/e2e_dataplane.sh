#!/usr/bin/env bash
# e2e_dataplane.sh — borad serving a fixture model on loopback, talked to by `bora client` and
# by a Python client written from protocol.md alone: greedy ids over UDP and TCP equal
# `bora generate` and the fixture's reference; the server's ERROR codes where the page says
# (BAD_FRAME, BAD_VERSION, TOO_LARGE, BUSY, AUTH, BAD_PARAMS, DUPLICATE);
# PONG; unanswerable datagrams; SIGTERM drains and exits 0.
set -u
t_start=$(date +%s%N); tick() { echo "[$((($(date +%s%N) - t_start) / 1000000)) ms] $*"; }
build=${1:-build}
bora=$build/bora
borad=$build/borad
fx=tests/data/fixtures/mistral-tiny-bf16
. "$(dirname "$0")/support/e2e_lib.sh"
e2e_borad_begin "$fx"

# start_borad PSK_HEX [KV_DTYPE]: writes the config, starts borad, waits for its banner.
start_borad() {
    port=$(e2e_free_port)
    cat >"$tmp/bora.ini" <<EOF
[model]
path = $fx
backend = cpu
[engine]
threads = 1
kv_dtype = ${2:-bf16}
[dataplane]
udp = 127.0.0.1:$port
tcp = 127.0.0.1:$port
psk = $1
[limits]
queue_depth = 2
max_prompt_bytes = 1024
max_tokens = 64
shutdown_grace_ms = 3000
[console]
socket =
EOF
    OMP_WAIT_POLICY=passive "$borad" -c "$tmp/bora.ini" >"$tmp/borad.log" 2>&1 &
    pid=$!
    wait_banner "$pid" "$tmp/borad.log" "BWP/1 on" 10 borad
}

stop_borad() {
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$pid"; local rc=$?
    pid=
    [ $rc -eq 0 ] || fail "borad exited $rc after SIGTERM (want 0)"
    grep -q "drained" "$tmp/borad.log" || fail "borad did not report the drain"
}

tick start; start_borad ""; tick started
grep -qF "$(cd "$(dirname "$bora")" && pwd)/bora client --udp 127.0.0.1:$port" "$tmp/borad.log" ||
    fail "banner does not say how to talk to it (with the bora beside borad): $(grep client "$tmp/borad.log")"

# ---- greedy over the wire == bora generate == reference ----
prompt=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['prompt_ids'])))")
want=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['greedy_ids'][:12])))")
ids_of() { python3 -c "import json,sys;print(','.join(map(str,json.load(sys.stdin)['ids'])))"; }
local_ids=$($bora generate $fx --ids "$prompt" -n 12 --ignore-eos --backend cpu --json | tail -1 | ids_of)
[ "$local_ids" = "$want" ] || fail "bora generate ids $local_ids, reference $want"
for tr in udp tcp; do
    got=$($bora client --$tr 127.0.0.1:$port --ids "$prompt" -n 12 --ignore-eos --json 2>"$tmp/client.err" | ids_of) ||
        fail "bora client --$tr: $(cat "$tmp/client.err")"
    [ "$got" = "$local_ids" ] || fail "$tr greedy ids $got, bora generate $local_ids"
done
# text (BOS + text) and chat (template) prompts: ids and text equal bora generate's
ids_text() { python3 -c "import json,sys;o=json.load(sys.stdin);print(','.join(map(str,o['ids'])), o['text'])"; }
text='Hello there, où est la gare?'
local_t=$($bora generate $fx --prompt "$text" -n 16 --ignore-eos --backend cpu --json | tail -1 | ids_text)
wire_t=$($bora client --udp 127.0.0.1:$port --prompt "$text" -n 16 --ignore-eos --json 2>/dev/null | ids_text)
[ -n "$local_t" ] && [ "$wire_t" = "$local_t" ] || fail "--prompt over UDP '$wire_t', bora generate '$local_t'"
echo '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Où est ma commande #4512?"}]}' >"$tmp/chat.json"
local_c=$($bora generate $fx --chat "$tmp/chat.json" -n 10 --ignore-eos --backend cpu --json | tail -1 | ids_text)
wire_c=$($bora client --tcp 127.0.0.1:$port --chat "$tmp/chat.json" -n 10 --ignore-eos --json 2>/dev/null | ids_text)
[ -n "$local_c" ] && [ "$wire_c" = "$local_c" ] || fail "--chat over TCP '$wire_c', bora generate '$local_c'"
# a chat prompt (kind 1) whose roles mistral-common would refuse: BAD_PARAMS naming the message
echo '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"a"}]}' >"$tmp/chat_bad.json"
out=$($bora client --tcp 127.0.0.1:$port --chat "$tmp/chat_bad.json" -n 4 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "BAD_PARAMS" <<<"$out" && grep -q "message 1: the conversation ends with an assistant message" <<<"$out" ||
    fail "chat ending with an assistant message: rc $rc, '$out'"
# sampling over the wire is bora generate's on the same CPU sampler: the temperature, top-k, top-p
# and seed of the GENERATE reach the generator (each set here changes the ids when it is lost)
for opts in "--temperature 0.8 --seed 42" "--temperature 1.5 --top-k 3 --seed 7" "--temperature 1.5 --top-p 0.5 --seed 9"; do
    want_s=$($bora generate $fx --ids "$prompt" -n 8 --ignore-eos --backend cpu $opts --json | tail -1 | ids_of)
    for tr in tcp udp; do
        got_s=$($bora client --$tr 127.0.0.1:$port --ids "$prompt" -n 8 --ignore-eos $opts --json 2>/dev/null | ids_of)
        [ -n "$want_s" ] && [ "$got_s" = "$want_s" ] || fail "$tr $opts: ids '$got_s', bora generate '$want_s'"
    done
done

# ---- UDP loss: a proxy drops the first GENERATE and the first copy of every third frame;
#      bora client repairs by seq gaps, RESEND and resending the GENERATE ----
cat >"$tmp/lossy.py" <<'PY'
import os, select, signal, socket, struct, sys
server, listen_port, stats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def save(*_):   # whole file or none: the test may stop the proxy at any instant
    with open(stats + ".tmp", "w") as f: f.write(f"{gens} {dropped}\n")
    os.replace(stats + ".tmp", stats)
def stop(*_):
    save(); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); up.connect(("127.0.0.1", server))
down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); down.bind(("127.0.0.1", listen_port))
client, seen, gens, dropped = None, set(), 0, 0
save()   # bound: the test starts its client once this file is there
while True:
    r, _, _ = select.select([up, down], [], [], 20)
    if not r: break
    for s in r:
        d = s.recv(70000) if s is up else None
        if s is down:
            d, client = down.recvfrom(70000)
            if d[4] == 1:
                gens += 1
                if gens == 1: continue                  # the first GENERATE is lost
            up.send(d)
        elif client:
            seq, rid = struct.unpack_from("<IQ", d, 12)
            if seq % 3 == 1 and (rid, seq) not in seen:  # first copy of every third frame lost
                seen.add((rid, seq)); dropped += 1
                continue
            down.sendto(d, client)
    save()
PY
lport=$(e2e_free_port)
python3 "$tmp/lossy.py" "$port" "$lport" "$tmp/lossy.txt" &
proxy=$!
for _ in $(seq 200); do [ -s "$tmp/lossy.txt" ] && break; sleep 0.05; done   # the proxy is bound
got=$($bora client --udp 127.0.0.1:$lport --ids "$prompt" -n 12 --ignore-eos --json 2>"$tmp/c.err" | ids_of) ||
    fail "client through the lossy proxy: $(cat "$tmp/c.err")"
kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null
[ "$got" = "$local_ids" ] || fail "ids through loss '$got', bora generate '$local_ids'"
read -r gens dropped <"$tmp/lossy.txt"
[ "$gens" -ge 2 ] && [ "$dropped" -ge 4 ] || fail "the proxy saw $gens GENERATEs and dropped $dropped frames"
echo "lossy proxy: $gens GENERATEs seen (first dropped), $dropped frames dropped, completion intact"

# ---- bora client errors: message, exit 1 ----
out=$($bora client --udp 127.0.0.1:$port --ids 1,40000 -n 4 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "BAD_PARAMS" <<<"$out" || fail "id >= vocab: rc $rc, '$out'"
out=$($bora client --tcp 127.0.0.1:$port --ids 1,2 -n 65 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "BAD_PARAMS" <<<"$out" || fail "-n over max_tokens: rc $rc, '$out'"
out=$($bora client --tcp 127.0.0.1:$port 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "usage" <<<"$out" || fail "no arguments: rc $rc, '$out'"

# ---- an independent client from protocol.md ----
cat >"$tmp/wire.py" <<'PY'
import hmac, hashlib, socket, struct, sys, time
port, key = int(sys.argv[1]), bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else b""
HDR = struct.Struct("<4sBBHIIQ")
def frame(t, rid, payload=b"", flags=0, magic=b"BWP1", reserved=0, auth=bool(key)):
    if auth:
        length = len(payload) + 40
        head = HDR.pack(magic, t, flags | 1, reserved, length, 0, rid)
        ts = struct.pack("<Q", int(time.time() * 1e6))
        mac = hmac.new(key, head + payload, hashlib.sha256).digest()   # rule 17: not the timestamp
        return head + payload + ts + mac
    return HDR.pack(magic, t, flags, reserved, len(payload), 0, rid) + payload
def generate(rid, ids, max_tokens=4, kind=2, options=0, top_p=1.0, prompt=None):
    p = prompt if prompt is not None else b"".join(struct.pack("<I", i) for i in ids)
    return frame(1, rid, struct.pack("<HBBffIQII", max_tokens, kind, options, 0.0, top_p, 0, 0, 0, len(p)) + p)
def parse(b):
    magic, t, flags, res, length, seq, rid = HDR.unpack_from(b)
    assert magic == b"BWP1" and res == 0 and len(b) == 24 + length, b[:24]
    body = b[24:]
    if flags & 1:
        assert key, "trailer from a server without key"
        assert hmac.compare_digest(hmac.new(key, b[:-40], hashlib.sha256).digest(), b[-32:]), "bad server MAC"
        body = body[:-40]
    return t, seq, rid, body, bool(flags & 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("127.0.0.1", port)); u.settimeout(3)
def recv():
    return parse(u.recv(70000))
def expect_error(rid, code, what):
    t, seq, r, body, _ = recv()
    assert t == 0x85, f"{what}: type {t:#x}"
    c, ml = struct.unpack_from("<HH", body)
    assert (c, r, seq) == (code, rid, 0), f"{what}: got code {c} rid {r} seq {seq}"
    assert ml > 0 and len(body) == 4 + ml
def pong(rid):
    u.send(frame(3, rid))
    t, seq, r, body, _ = recv()
    assert (t, r, seq) == (0x83, rid, 0), (t, r, seq)
    depth, flags = struct.unpack("<II", body)
    assert flags & 1, "model loaded bit"
    return depth
if key:
    u.send(frame(3, 5, auth=False))              # no trailer on a keyed server
    t, seq, r, body, signed = recv()
    assert t == 0x85 and struct.unpack_from("<H", body)[0] == 5 and not signed, "AUTH"
    bad = bytearray(frame(3, 6)); bad[-1] ^= 1   # wrong MAC
    u.send(bytes(bad)); t, _, _, body, signed = recv()
    assert t == 0x85 and struct.unpack_from("<H", body)[0] == 5 and not signed, "AUTH (MAC)"
    same = frame(3, 7)
    u.send(same); t, _, _, _, signed = recv(); assert t == 0x83 and signed, "signed PING"
    u.send(same); t, _, _, body, _ = recv()
    assert t == 0x85 and struct.unpack_from("<H", body)[0] == 5, "AUTH (replay)"
    u.send(generate(8, [1, 3, 7694]))
    seen = []
    while True:
        t, seq, r, body, signed = recv(); assert signed and r == 8; seen.append(t)
        if t in (0x84, 0x85): break
    assert seen[0] == 0x81 and seen[-1] == 0x84 and seen.count(0x82) == 4, seen
    print("auth ok"); sys.exit(0)
u.send(b"BWP")                                   # rule 2: under 24 bytes, no answer
u.send(b"XWP1" + bytes(20))                      # bad magic, no answer
assert pong(1) == 0
u.send(frame(3, 2, magic=b"BWP9")); expect_error(2, 2, "BAD_VERSION")
u.send(frame(3, 0)); expect_error(0, 1, "request_id 0")
u.send(frame(3, 3, reserved=1)); expect_error(3, 1, "reserved")
u.send(frame(3, 4, flags=2)); expect_error(4, 1, "unknown flag")
g = generate(5, [1, 2]); u.send(g[:-1]); expect_error(5, 1, "size != 24 + length")
u.send(generate(6, [], prompt=b"x" * 1025, kind=0)); expect_error(6, 3, "TOO_LARGE")
u.send(generate(7, [1], options=4)); expect_error(7, 6, "unknown option bit")
u.send(generate(8, [1], top_p=0.0)); expect_error(8, 6, "top_p 0")
u.send(generate(9, [1], kind=2, prompt=b"\x01\x00\x00")); expect_error(9, 6, "ids not a multiple of 4")
u.send(generate(10, [1], kind=0, prompt=b"\xc3\x28")); expect_error(10, 1, "invalid UTF-8")
u.send(frame(1, 11, b"\x00" * 10)); expect_error(11, 1, "truncated GENERATE")
# a full request, then DUPLICATE while in flight and BUSY when the queue (2) is full
for rid in range(20, 30):
    u.send(generate(rid, [1, 3, 7694, 1117], max_tokens=16, options=2))
u.send(generate(20, [1], max_tokens=2))
ends, dup = {}, 0
while len(ends) < 10:
    t, seq, r, body, _ = recv()
    if t == 0x85 and struct.unpack_from("<H", body)[0] == 7:
        assert r == 20 and seq == 0; dup += 1; continue
    if t in (0x84, 0x85):
        assert r not in ends, f"second end for {r}"
        ends[r] = (t, struct.unpack_from("<H", body)[0] if t == 0x85 else body[0])
busy = [r for r, e in ends.items() if e == (0x85, 4)]
done = [r for r, e in ends.items() if e == (0x84, 1)]
assert len(busy) + len(done) == 10 and busy and len(done) >= 2, ends
assert dup == 1 or 20 in done, "DUPLICATE while 20 was in flight"
# RESEND replays retained frames byte for byte
u.send(generate(40, [1, 3], max_tokens=3)); got = []
while True:
    d = u.recv(70000); got.append(d)
    if d[4] == 0x84: break
u.send(frame(4, 40, struct.pack("<I", 1)))
for want in got[1:]:
    assert u.recv(70000) == want, "RESEND copy differs"
print("wire ok")
PY
tick wire; python3 "$tmp/wire.py" "$port" || fail "wire client (see the assertion above)"

# TCP: bad magic → ERROR BAD_FRAME request_id 0, then close
python3 - "$port" <<'PY' || fail "TCP bad magic"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while True:
    d = s.recv(4096)
    if not d: break
    data += d
magic, t, fl, res, length, seq, rid = struct.unpack_from("<4sBBHIIQ", data)
assert (magic, t, rid, len(data)) == (b"BWP1", 0x85, 0, 24 + length), data
assert struct.unpack_from("<H", data, 24)[0] == 1
PY

# ---- SIGTERM: in-flight requests finish, new ones get SHUTTING_DOWN, exit 0 ----
# the request must be running when SIGTERM arrives: wait for its first streamed text
$bora client --tcp 127.0.0.1:$port --ids "$prompt" -n 64 --ignore-eos >"$tmp/inflight.txt" 2>"$tmp/inflight.err" &
cpid=$!
for _ in $(seq 200); do [ -s "$tmp/inflight.txt" ] && break; sleep 0.05; done
[ -s "$tmp/inflight.txt" ] || fail "in-flight request produced no text: $(cat "$tmp/inflight.err")"
tick stop; stop_borad; tick stopped
wait $cpid || fail "in-flight request during drain: $(cat "$tmp/inflight.err")"

# ---- AUTH on a keyed server ----
psk=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
tick start2; start_borad $psk; tick started2
python3 "$tmp/wire.py" "$port" "$psk" || fail "AUTH wire client"
out=$($bora client --udp 127.0.0.1:$port --ids 1,2 -n 2 --timeout-ms 2000 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "AUTH" <<<"$out" || fail "client without key: rc $rc, '$out'"
$bora client --udp 127.0.0.1:$port --ids 1,2 -n 2 --key $psk >/dev/null 2>&1 || fail "client with key"
# a wrong key: the server's ERROR AUTH comes without a trailer (rule 17) and the client reports it
bad=ff${psk:2}
for t in udp tcp; do
    out=$($bora client --$t 127.0.0.1:$port --ids 1,2 -n 2 --key $bad --timeout-ms 3000 2>&1); rc=$?
    [ $rc -eq 1 ] && grep -q "AUTH" <<<"$out" || fail "$t client with a wrong key: rc $rc, '$out'"
done
tick stop; stop_borad; tick stopped

# ---- [engine] kv_dtype = fp8 reaches the engine: the ids over the wire are bora generate --kv fp8's,
#      which part from the BF16 cache's on this prompt (else the check would prove nothing) ----
tick start3; start_borad "" fp8; tick started3
grep -q "fp8 KV cache" "$tmp/borad.log" || fail "the banner does not name the FP8 KV cache: $(grep serving "$tmp/borad.log")"
kv8=$($bora generate $fx --ids "$prompt" -n 48 --ignore-eos --backend cpu --kv fp8 --json | tail -1 | ids_of)
kv16=$($bora generate $fx --ids "$prompt" -n 48 --ignore-eos --backend cpu --kv bf16 --json | tail -1 | ids_of)
[ -n "$kv8" ] && [ "$kv8" != "$kv16" ] || fail "bora generate --kv fp8 gives the BF16 cache's ids ($kv8)"
got=$($bora client --tcp 127.0.0.1:$port --ids "$prompt" -n 48 --ignore-eos --json 2>"$tmp/client.err" | ids_of) ||
    fail "FP8 KV cache over TCP: $(cat "$tmp/client.err")"
[ "$got" = "$kv8" ] || fail "FP8 KV cache over TCP: ids $got, bora generate --kv fp8 $kv8"
tick stop; stop_borad; tick stopped
echo "e2e_dataplane: ok"
