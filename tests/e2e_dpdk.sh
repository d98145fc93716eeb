#!/usr/bin/env bash
# e2e_dpdk.sh — the DPDK port really moving packets: two network namespaces joined by a veth
# pair; borad in one drives its end with DPDK's net_af_packet PMD (--no-huge), the client in the
# other talks plain kernel UDP to the port's own IPv4 address; then again with net_tap behind a
# route, so the client's IP fragments reach the port's own reassembly. Checks ARP resolution, greedy ids
# over DPDK equal `bora generate`, ERROR answers, PONG, a datagram over the MTU, and the port's
# packet counters.
# Skips (77), saying why, without root, ip netns, ethtool, or a borad built with DPDK.
set -u
build=${1:-build}
bora=$build/bora
borad=$build/borad
fx=tests/data/fixtures/mistral-tiny-bf16
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "iproute2 (ip) not installed"
command -v ethtool >/dev/null || skip "ethtool not installed (veth checksum offload must be off)"
command -v python3 >/dev/null || skip "python3 not installed"
ldd "$borad" 2>/dev/null | grep -q librte_ethdev || skip "$borad is built without DPDK (install libdpdk-dev; see the Makefile's DPDK lines)"
[ -d "$fx" ] || skip "fixture $fx missing"

id=$$
ns_s=bora_s$id ns_c=bora_c$id if_s=vbs$id if_c=vbc$id
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    ip netns del "$ns_s" 2>/dev/null
    ip netns del "$ns_c" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/borad.log" ] && sed 's/^/  borad| /' "$tmp/borad.log"; exit 1; }
. "$(dirname "$0")/support/e2e_lib.sh"

ip netns add "$ns_s" && ip netns add "$ns_c" || skip "cannot create network namespaces here"
ip link add "$if_s" type veth peer name "$if_c" || skip "cannot create a veth pair here"
ip link set "$if_s" netns "$ns_s" && ip link set "$if_c" netns "$ns_c" || fail "moving the veth ends"
ip -n "$ns_s" link set lo up && ip -n "$ns_s" link set "$if_s" up
ip -n "$ns_c" link set lo up && ip -n "$ns_c" addr add 10.77.0.1/24 dev "$if_c" && ip -n "$ns_c" link set "$if_c" up
# packets from a local stack over veth carry unfinished checksums (offload): compute them in software
ip netns exec "$ns_c" ethtool -K "$if_c" tx off gso off tso off sg off >/dev/null 2>&1
ip netns exec "$ns_s" ethtool -K "$if_s" tx off rx off gro off >/dev/null 2>&1

cat >"$tmp/bora.ini" <<EOF
[model]
path = $fx
backend = cpu
[engine]
threads = 1
[dataplane]
udp = 127.0.0.1:7474
tcp =
dpdk = --no-huge -m 256 --no-pci --no-telemetry --no-shconf --file-prefix=bora$id --vdev=net_af_packet0,iface=$if_s,framesz=8192,blocksz=8192 -l 0 --log-level=lib.eal:error
dpdk_ip = 10.77.0.2
dpdk_port = 7474
[limits]
max_tokens = 64
shutdown_grace_ms = 2000
[console]
socket =
EOF
OMP_WAIT_POLICY=passive ip netns exec "$ns_s" "$borad" -c "$tmp/bora.ini" >"$tmp/borad.log" 2>&1 &
pid=$!
wait_banner "$pid" "$tmp/borad.log" "over DPDK on 10.77.0.2:7474" 15 borad

in_c() { ip netns exec "$ns_c" "$@"; }
prompt=$(python3 -c "import json;c=json.load(open('$fx/reference.json'))['cases'][0];print(','.join(map(str,c['prompt_ids'])))")
ids_of() { python3 -c "import json,sys;print(','.join(map(str,json.load(sys.stdin)['ids'])))"; }
want=$($bora generate $fx --ids "$prompt" -n 12 --ignore-eos --backend cpu --json | tail -1 | ids_of)
got=$(in_c "$bora" client --udp 10.77.0.2:7474 --ids "$prompt" -n 12 --ignore-eos --json --timeout-ms 10000 2>"$tmp/c.err" | ids_of) ||
    fail "client over DPDK: $(cat "$tmp/c.err")"
[ -n "$want" ] && [ "$got" = "$want" ] || fail "ids over DPDK '$got', bora generate '$want'"
in_c ip neigh show 10.77.0.2 | grep -q lladdr || fail "the DPDK port did not answer ARP"

# frames from protocol.md over the PMD: PONG, BAD_VERSION, BAD_PARAMS, and a full text request
in_c python3 - <<'PY' || fail "wire checks over DPDK"
import socket, struct
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("10.77.0.2", 7474)); u.settimeout(5)
H = struct.Struct("<4sBBHIIQ")
u.send(H.pack(b"BWP1", 3, 0, 0, 0, 0, 9))
t, rid = struct.unpack_from("<4xB11xQ", u.recv(2048))
assert (t, rid) == (0x83, 9), (t, rid)
u.send(H.pack(b"BWP3", 3, 0, 0, 0, 0, 10))
d = u.recv(2048); assert d[4] == 0x85 and struct.unpack_from("<H", d, 24)[0] == 2
p = struct.pack("<HBBffIQII", 0, 2, 0, 0.0, 1.0, 0, 0, 0, 4) + struct.pack("<I", 1)
u.send(H.pack(b"BWP1", 1, 0, 0, len(p), 0, 11) + p)
d = u.recv(2048); assert d[4] == 0x85 and struct.unpack_from("<H", d, 24)[0] == 6, d
text = "Hello, où est ma commande?".encode()
p = struct.pack("<HBBffIQII", 5, 0, 0, 0.0, 1.0, 0, 0, 0, len(text)) + text
u.send(H.pack(b"BWP1", 1, 0, 0, len(p), 0, 12) + p)
types = []
while not types or types[-1] not in (0x84, 0x85):
    d = u.recv(2048); types.append(d[4])
assert types[0] == 0x81 and types[-1] == 0x84 and types.count(0x82) == 5, types
# a datagram over the MTU leaves the client in IP fragments (net_af_packet hands it over
# reassembled by the kernel; a NIC PMD hands the fragments to dpdk_port.c's reassembly)
text = ("Où est ma commande? " * 160).encode()[:3000]
p = struct.pack("<HBBffIQII", 3, 0, 0, 0.0, 1.0, 0, 0, 0, len(text)) + text
u.send(H.pack(b"BWP1", 1, 0, 0, len(p), 0, 13) + p)
d = u.recv(2048); assert d[4] == 0x81, d[:8]
assert struct.unpack_from("<I", d, 28)[0] > 500, "prompt_tokens of the 3000-byte prompt"
types = [0x81]
while types[-1] not in (0x84, 0x85):
    d = u.recv(2048); types.append(d[4])
assert types[-1] == 0x84 and types.count(0x82) == 3, types
PY

stop_borad() {
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    wait "$pid"; local rc=$?
    pid=
    [ $rc -eq 0 ] || fail "borad exited $rc after SIGTERM"
}
stop_borad
line=$(grep "dpdk port:" "$tmp/borad.log") || fail "no DPDK counters at exit"
python3 - "$line" <<'PY' || fail "counters: $line"
import re, sys
n = dict((k, int(v)) for v, k in re.findall(r"(\d+) (packets in|out|ARP replies|bad checksums)", sys.argv[1]))
assert n["packets in"] >= 9 and n["out"] >= 25 and n["ARP replies"] >= 1 and n["bad checksums"] == 0, n
PY
echo "af_packet: $line"

# ---- second PMD, net_tap, routed: the client's fragments reach dpdk_port.c's own reassembly ----
ip -n "$ns_s" addr add 10.77.0.254/24 dev "$if_s"
ip netns exec "$ns_s" sysctl -qw net.ipv4.ip_forward=1
ip -n "$ns_c" route add 10.78.0.0/24 via 10.77.0.254
tap=btap$id
sed -i "s|^dpdk = .*|dpdk = --no-huge -m 256 --no-pci --no-telemetry --no-shconf --file-prefix=borat$id --vdev=net_tap0,iface=$tap,mac=02:00:00:00:77:02 -l 0 --log-level=lib.eal:error|; s|^dpdk_ip = .*|dpdk_ip = 10.78.0.2|" "$tmp/bora.ini"
OMP_WAIT_POLICY=passive ip netns exec "$ns_s" "$borad" -c "$tmp/bora.ini" >"$tmp/borad.log" 2>&1 &
pid=$!
wait_banner "$pid" "$tmp/borad.log" "over DPDK on 10.78.0.2:7474" 15 "borad (net_tap)"
ip -n "$ns_s" addr add 10.78.0.1/24 dev "$tap" && ip -n "$ns_s" link set "$tap" up || fail "tap $tap not created"
ip netns exec "$ns_s" ethtool -K "$tap" tx off gso off tso off sg off >/dev/null 2>&1
in_c python3 - <<'PY' || fail "fragmented request over net_tap"
import socket, struct
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("10.78.0.2", 7474)); u.settimeout(5)
H = struct.Struct("<4sBBHIIQ")
text = ("Où est ma commande? " * 160).encode()[:3000]
p = struct.pack("<HBBffIQII", 3, 0, 0, 0.0, 1.0, 0, 0, 0, len(text)) + text
u.send(H.pack(b"BWP1", 1, 0, 0, len(p), 0, 21) + p)
types = []
while not types or types[-1] not in (0x84, 0x85):
    d = u.recv(2048); types.append(d[4])
assert types[0] == 0x81 and types[-1] == 0x84 and types.count(0x82) == 3, types
PY
stop_borad
line2=$(grep "dpdk port:" "$tmp/borad.log") || fail "no DPDK counters at exit (net_tap)"
python3 - "$line2" <<'PY' || fail "net_tap counters: $line2"
import re, sys
n = dict((k, int(v)) for v, k in re.findall(r"(\d+) (fragments|reassembled|bad checksums)", sys.argv[1]))
assert n["fragments"] >= 3 and n["reassembled"] >= 1 and n["bad checksums"] == 0, n
PY
echo "e2e_dpdk: ok (af_packet and net_tap; $line2)"
