#!/usr/bin/env bash
# e2e_console_ssh.sh — SSH gives the console and nothing else: a private sshd (own config,
# host key and authorized_keys in a temp dir, 127.0.0.1, a free high port; the system's sshd
# and its config are not touched) whose key has the forced command boractl, as the
# `operator` account of docs/CONSOLE.md has. Needs root and Debian's openssh-server; else 77.
set -u
build=${1:-build}
sshd=/usr/sbin/sshd
[ -x $sshd ] || { echo "SKIP: $sshd not installed (apt-get install openssh-server)"; exit 77; }
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || { echo "SKIP: no ssh client"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "SKIP: a private sshd that switches users needs root"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
tmp=$(mktemp -d); pids=(); made_privsep=0
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null
    [ $made_privsep = 1 ] && rmdir /run/sshd 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/sshd.log" ] && tail -5 "$tmp/sshd.log"; exit 1; }
wait_for() { for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done; return 1; }

# sshd's privilege-separation directory (normally made by the service unit; not config)
[ -d /run/sshd ] || { mkdir -p /run/sshd && chmod 755 /run/sshd && made_privsep=1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=$(id -un)
boractl=$(readlink -f "$build/boractl")
ssh-keygen -q -t ed25519 -N '' -f "$tmp/host_key" || fail "ssh-keygen (host)"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/op_key" || fail "ssh-keygen (client)"
# the forced command: whatever the client asks, it gets boractl (its words as the command)
echo "command=\"$boractl --socket $tmp/c.sock\",restrict,pty $(cat "$tmp/op_key.pub")" >"$tmp/authorized_keys"
cat >"$tmp/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $tmp/host_key
PidFile $tmp/sshd.pid
AuthorizedKeysFile $tmp/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin forced-commands-only
AllowUsers $user
LogLevel ERROR
CFG
$sshd -t -f "$tmp/sshd_config" || fail "sshd rejects the test config"
$sshd -D -e -f "$tmp/sshd_config" 2>"$tmp/sshd.log" & pids+=($!)
cat >"$tmp/bora.ini" <<INI
[console]
socket = $tmp/c.sock
INI
"$build/tests/test_console" --serve "$tmp/bora.ini" --synthetic 50 "$tmp/values.txt" 2>"$tmp/daemon.log" & daemon=$!
pids+=($daemon)
wait_for test -S "$tmp/c.sock" || fail "console socket never appeared"
wait_for python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null ||
    fail "private sshd is not listening on $port"
op() { ssh -q -p "$port" -i "$tmp/op_key" -o BatchMode=yes -o StrictHostKeyChecking=no \
           -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "$user@127.0.0.1" "$@"; }

op stats --json >"$tmp/stats.json" || fail "ssh stats --json exited $?"
python3 tests/support/console_e2e.py stats "$tmp/stats.json" "$tmp/values.txt" || fail "stats over ssh"
op status | grep -q "state *serving" || fail "ssh status"
# a shell command is not run: it is handed to the console, which does not know it
out=$(op cat /etc/passwd 2>&1)
echo "$out" | grep -q "unknown command 'cat'" || fail "ssh ran something other than the console: $out"
echo "$out" | grep -q "root:" && fail "ssh gave a shell"
out=$(op 'boractl --socket /tmp/x status; id' 2>&1)
echo "$out" | grep -q "uid=" && fail "ssh ran a shell command: $out"
# no command: the interactive console (commands from stdin)
out=$(printf 'status\nquit\n' | op 2>&1)
echo "$out" | grep -q "state *serving" || fail "interactive console over ssh: $out"
op shutdown | grep -q "shutting down" || fail "ssh shutdown"
wait $daemon || fail "daemon exited $?"
echo "e2e_console_ssh: ok"
