#!/usr/bin/env bash
# e2e_cut_file.sh — a checkpoint file cut short under borad (CPU backend, weights read from the
# mapping): the process stays up; the request that meets the cut, and each one after it, ends
# with ERROR INTERNAL naming the file; PING is still answered; the console's status says
# "failing" and why; a sound copy renamed over the file and `boractl reload` serve again; SIGTERM
# still drains.
set -u
build=${1:-build}
bora=$build/bora
borad=$build/borad
src=tests/data/fixtures/mistral-tiny-bf16
. "$(dirname "$0")/support/e2e_lib.sh"
e2e_borad_begin "$src"

fx=$tmp/model
mkdir -p "$fx"
cp "$src/config.json" "$src/model.safetensors" "$fx/"
[ -f "$src/tokenizer.model" ] && cp "$src/tokenizer.model" "$fx/"
port=$(e2e_free_port)
cat >"$tmp/bora.ini" <<INI
[model]
path = $fx
backend = cpu
prefix_cache = off
[engine]
threads = 1
[dataplane]
udp = 127.0.0.1:$port
tcp = 127.0.0.1:$port
[limits]
max_tokens = 16
shutdown_grace_ms = 3000
[console]
socket = $tmp/c.sock
INI
ctl() { "$build/boractl" --socket "$tmp/c.sock" "$@"; }
OMP_WAIT_POLICY=passive "$borad" -c "$tmp/bora.ini" >"$tmp/borad.log" 2>&1 &
pid=$!
wait_banner "$pid" "$tmp/borad.log" "BWP/1 on" 10 borad

ids=1,3,7694,1032,6000
out=$($bora client --tcp 127.0.0.1:$port --ids $ids -n 4 --ignore-eos --json 2>&1) ||
    fail "a request before the cut: $out"

# cut the file a quarter in, at a page boundary: most layers' weights now lie past its end
size=$(stat -c %s "$fx/model.safetensors")
truncate -s $(( size / 4 / 4096 * 4096 )) "$fx/model.safetensors"

for transport in tcp udp; do
    out=$($bora client --$transport 127.0.0.1:$port --ids $ids -n 4 --ignore-eos 2>&1); rc=$?
    [ $rc -eq 1 ] || fail "request after the cut over $transport: exit $rc (want 1), '$out'"
    grep -q "INTERNAL" <<<"$out" && grep -q "cut short" <<<"$out" && grep -qF "$fx/model.safetensors" <<<"$out" ||
        fail "request after the cut over $transport: '$out' (want ERROR INTERNAL naming the file)"
    kill -0 "$pid" 2>/dev/null || fail "borad died after the cut (was SIGBUS before the guard)"
done
python3 - "$port" <<'PY' || fail "no PONG after the cut"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
# BWP/1 header: magic, type PING (0x03), flags, reserved, length 0, seq 0, request_id
hdr = struct.pack("<4sBBHIIQ", b"BWP1", 0x03, 0, 0, 0, 0, 77)
s.sendto(hdr, ("127.0.0.1", int(sys.argv[1])))
d, _ = s.recvfrom(2048)
sys.exit(0 if d[4] == 0x83 else 1)
PY

# the operator sees it: state failing, the file named, what mends it
st=$(ctl status) || fail "boractl status after the cut: $st"
grep -q "^state *failing" <<<"$st" && grep -q "^problem .*cut short" <<<"$st" && grep -qF "$fx/model.safetensors" <<<"$st" ||
    fail "status after the cut: '$st'"
ctl --json status | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(not (d['state'] == 'failing' and 'reload' in d['problem']))" ||
    fail "status --json after the cut: $(ctl --json status)"
# mended without a restart: a sound copy renamed over the file, then reload
cp "$src/model.safetensors" "$fx/.sound" && mv "$fx/.sound" "$fx/model.safetensors"
out=$(ctl reload 2>&1); grep -q "model reloaded" <<<"$out" || fail "reload after restoring the file: $out"
out=$($bora client --tcp 127.0.0.1:$port --ids $ids -n 4 --ignore-eos --json 2>&1) || fail "a request after the reload: $out"
st=$(ctl status); grep -q "^state *serving" <<<"$st" && ! grep -q "^problem" <<<"$st" || fail "status after the reload: '$st'"
ctl --json status | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(not (d['problem'] is None))" ||
    fail "status --json after the reload: $(ctl --json status)"

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
wait "$pid"; rc=$?; pid=
[ $rc -eq 0 ] || fail "borad exited $rc after SIGTERM (want 0)"
echo "PASS: e2e_cut_file (a file cut under borad: ERROR INTERNAL naming it, process up, PONG, status failing, reloaded, drained)"
