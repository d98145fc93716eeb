#!/usr/bin/env bash
# e2e_console.sh — the console as an operator meets it, on the test double daemon
# (build/tests/test_console --serve): boractl one-shot and interactive on the UNIX socket,
# stats --json against the recorded values, metrics as Prometheus text, drain/resume, the
# serial line through a socat pty pair (login, wrong password, stats watch, lockout), shutdown.
set -u
build=${1:-build}
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
command -v socat >/dev/null || { echo "SKIP: socat not installed (scripts/deps.sh installs it)"; exit 77; }
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
wait_for() {   # wait_for TEST-EXPRESSION... : polls up to 10 s
    for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done; return 1
}
ctl() { "$build/boractl" --socket "$tmp/c.sock" "$@"; }
py=tests/support/console_e2e.py

pw="correct horse battery"
hash=$(printf '%s\n' "$pw" | "$build/bora" passwd --stdin 2>/dev/null) || fail "bora passwd failed"
case $hash in "password_hash = \$argon2id\$"*) ;; *) fail "bora passwd printed '$hash'" ;; esac
printf '%s\n' "short" | "$build/bora" passwd --stdin 2>"$tmp/err" && fail "bora passwd took a 5-byte password"
grep -q "8..256 bytes" "$tmp/err" || fail "bora passwd: no clear message for a short password"

socat pty,raw,echo=0,link="$tmp/ttyS" pty,raw,echo=0,link="$tmp/ttyOp" 2>"$tmp/socat.log" & pids+=($!)
wait_for test -e "$tmp/ttyOp" -a -e "$tmp/ttyS" || fail "socat made no pty pair"
cat >"$tmp/bora.ini" <<INI
[console]
socket = $tmp/c.sock
serial = $(readlink -f "$tmp/ttyS")
baud = 115200
$hash
max_login_failures = 3
INI
"$build/tests/test_console" --serve "$tmp/bora.ini" --synthetic 500 "$tmp/values.txt" 2>"$tmp/daemon.log" & daemon=$!
pids+=($daemon)
wait_for test -S "$tmp/c.sock" || { cat "$tmp/daemon.log"; fail "the console socket never appeared"; }
[ "$(stat -c %a "$tmp/c.sock")" = 600 ] || fail "socket mode is $(stat -c %a "$tmp/c.sock"), not 600"

# one-shot, text and JSON
ctl status | grep -q "state *serving" || fail "boractl status"
ctl --json stats >"$tmp/stats.json" || fail "boractl --json stats exited $?"
python3 $py stats "$tmp/stats.json" "$tmp/values.txt" || fail "stats do not match the recorded requests"
ctl metrics >"$tmp/metrics.txt" || fail "boractl metrics exited $?"
python3 $py prom "$tmp/metrics.txt" || fail "metrics is not Prometheus text"
ctl requests | grep -q "^101 *running" || fail "boractl requests"
ctl frobnicate 2>&1 | grep -q "unknown command 'frobnicate'" || fail "unknown command message"
ctl frobnicate >/dev/null; [ $? = 2 ] || fail "unknown command should exit 2"
ctl cancel 999 >/dev/null; [ $? = 1 ] || fail "cancel of an unknown id should exit 1"
ctl config set limits.queue_depth 4 2>&1 >/dev/null | grep -q "not live" || fail "non-live key accepted (or its error not on stderr)"
[ -z "$(ctl cancel 999 2>/dev/null)" ] || fail "an error answer went to stdout"
ctl config set limits.max_tokens 99 | grep -q "limits.max_tokens = 99" || fail "live key not set"
ctl config show | grep -q "^max_tokens = 99" || fail "config show does not show the new value"
ctl config show | grep -q 'argon2' && fail "config show reveals the password hash"
# an empty word on boractl's command line reaches the server as one: "" sets an empty value, a
# missing value is a usage error, and `boractl ""` is no command, not the interactive console
ctl config set dataplane.allow "" | grep -q "^dataplane.allow = $" || fail "config set KEY \"\" from boractl's argv"
ctl config set dataplane.allow >/dev/null 2>&1; [ $? = 2 ] || fail "config set KEY with no VALUE should exit 2"
ctl "" </dev/null >/dev/null 2>&1; [ $? = 2 ] || fail "boractl \"\" should exit 2 (no command)"
# drain / resume
ctl drain >/dev/null && ctl status | grep -q "state *draining" || fail "drain"
ctl --json status | python3 -c 'import json,sys; assert json.load(sys.stdin)["state"]=="draining"' || fail "status --json"
ctl resume >/dev/null && ctl status | grep -q "state *serving" || fail "resume"
# interactive (stdin not a terminal: one command per line, same session)
printf 'status\nrequests\nquit\nstatus\n' | ctl >"$tmp/inter.txt" || fail "interactive boractl exited $?"
# piped commands: the exit status is the worst of them (a script sees the failure)
printf 'status\nbogus\nstatus\n' | ctl >/dev/null 2>&1; rc=$?
[ $rc -ne 0 ] || fail "piped boractl with an unknown command exited 0"
printf 'status\nrequests\n' | ctl >/dev/null 2>&1 || fail "piped boractl with good commands exited $?"
# a piped line longer than a command may be is refused whole, not split into two commands
python3 -c "print('x' * 1100 + 'drain')" | ctl >"$tmp/long.txt" 2>&1 && fail "an over-long piped line exited 0"
grep -q "too long" "$tmp/long.txt" || fail "over-long piped line: $(head -c 200 "$tmp/long.txt")"
ctl status | grep -q "state *serving" || fail "the tail of an over-long line ran as a command"
# with --json stdout holds one JSON object per command, a failure's too: the console's own JSON
# error, boractl's refusals, and the session's plain-text ones (too many sessions) wrapped
isfail() { python3 -c 'import json,sys
lines = sys.stdin.read().splitlines()
assert len(lines) == 1, lines
d = json.loads(lines[0]); assert d["ok"] is False and sys.argv[1] in d["error"], d' "$1"; }
ctl --json cancel 999 2>/dev/null | isfail "" || fail "--json cancel 999: no single JSON failure on stdout"
python3 -c "print('x' * 1100)" | ctl --json 2>/dev/null | isfail "too long" || fail "--json over-long piped line"
ctl --json "$(printf '%1100s' x)" 2>/dev/null | isfail "too long" || fail "--json over-long argv"
printf 'status --json\0x\n' | ctl 2>/dev/null | isfail "NUL byte" || fail "a piped NUL line ending in --json"
printf '  --json cancel 999\n' | ctl 2>/dev/null | isfail "" || fail "a piped '  --json cancel 999'"
python3 - "$tmp/c.sock" "$build/boractl" <<'PY' || fail "--json with every console session taken"
import json, socket, subprocess, sys
held = []
for _ in range(8):   # CONSOLE_CLIENTS_MAX
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"status\n")
    buf = b""
    while not (b"\0" in buf and buf.endswith(b"\n")):
        buf += s.recv(4096)
    held.append(s)
r = subprocess.run([sys.argv[2], "--socket", sys.argv[1], "--json", "status"], capture_output=True, timeout=10)
d = json.loads(r.stdout)
assert r.returncode == 1 and d["ok"] is False and "too many console sessions" in d["error"], (r, d)
PY
# a line with a NUL byte is refused whole (the part before it would have run as the command), on
# the socket and from boractl's stdin
python3 - "$tmp/c.sock" >"$tmp/nul.txt" <<'PY' || fail "NUL line on the socket: $(cat "$tmp/nul.txt")"
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"drain\x00junk\n")
buf = b""
while not (b"\0" in buf and buf.endswith(b"\n")):
    d = s.recv(4096)
    if not d: break
    buf += d
text, code = buf.split(b"\0", 1)
print(text.decode())
assert b"NUL byte" in text and code.strip() == b"2", buf
PY
printf 'drain\0junk\n' | ctl >/dev/null 2>"$tmp/nul.err"; rc=$?
[ $rc = 2 ] && grep -q "NUL byte: not sent" "$tmp/nul.err" || fail "NUL line from boractl's stdin: exit $rc, $(cat "$tmp/nul.err")"
ctl status | grep -q "state *serving" || fail "the part of a NUL line before the NUL ran as a command"
# --json first on the line: still a watch (the end of stdin ends it), JSON lines
echo '--json stats watch' | timeout 10 "$build/boractl" --socket "$tmp/c.sock" >"$tmp/w.json" ||
    fail "piped '--json stats watch' exited $? (hung?)"
head -1 "$tmp/w.json" | python3 -m json.tool >/dev/null || fail "'--json stats watch' gave no JSON line"
[ "$(grep -c 'state *serving' "$tmp/inter.txt")" = 1 ] || fail "interactive: quit did not end the session"
# stats watch ends on a key (stdin here: a byte after two refreshes)
( sleep 1.5; printf 'x' ) | ctl --json stats watch >"$tmp/watch.txt" || fail "stats watch exited $?"
[ "$(wc -l <"$tmp/watch.txt")" -ge 2 ] || fail "stats watch did not refresh"
# piped commands after a watch: the next line ends the watch and runs; it is not eaten as the key
( echo 'stats watch'; sleep 1.2; echo status; echo 'cancel 999' ) |
    timeout 20 "$build/boractl" --socket "$tmp/c.sock" >"$tmp/wp.txt" 2>&1; rc=$?
[ $rc = 1 ] || fail "watch, status, cancel 999 piped: exit $rc, not 1 (the commands after the watch lost?)"
grep -q "state *serving" "$tmp/wp.txt" || fail "the status piped after a watch did not run"
# an SSH command longer than a command may be is refused, not cut short and run
SSH_ORIGINAL_COMMAND="drain$(printf '%1100s' '')x" ctl >/dev/null 2>"$tmp/ssh.err"; rc=$?
[ $rc = 2 ] && grep -q "too long" "$tmp/ssh.err" || fail "over-long SSH command: exit $rc, $(cat "$tmp/ssh.err")"
ctl status | grep -q "state *serving" || fail "an over-long SSH command ran cut short"

# the serial line, as a person at a terminal
python3 $py serial "$tmp/ttyOp" "$pw" 3 || fail "serial console"

# shutdown ends the daemon
ctl shutdown | grep -q "shutting down" || fail "shutdown"
for _ in $(seq 200); do kill -0 $daemon 2>/dev/null || break; sleep 0.05; done
kill -0 $daemon 2>/dev/null && fail "daemon still running after shutdown"
wait $daemon || fail "daemon exited $? after shutdown"
[ -e "$tmp/c.sock" ] && fail "socket left behind"
ctl status 2>&1 | grep -q "cannot connect" || fail "boractl without daemon: no clear message"
echo "e2e_console: ok"
