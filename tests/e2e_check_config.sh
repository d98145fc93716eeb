#!/usr/bin/env bash
# e2e_check_config.sh — `borad --check-config`: the shipped config/bora.ini passes (exit 0,
# "FILE: ok"); tests/data/config/bad.ini fails (exit 1) with messages naming file, line and key.
set -u
build=${1:-build}
borad="$build/borad"
[ -x "$borad" ] || { echo "e2e_check_config: $borad not built"; exit 1; }
fail() { echo "e2e_check_config: $*"; exit 1; }
out=$(mktemp); err=$(mktemp); trap 'rm -f "$out" "$err"' EXIT

"$borad" --check-config config/bora.ini >"$out" 2>"$err"; rc=$?
[ $rc -eq 0 ] || fail "config/bora.ini: exit $rc, stderr: $(cat "$err")"
grep -qx 'config/bora.ini: ok' "$out" || fail "config/bora.ini: no 'ok' line: $(cat "$out")"

bad=tests/data/config/bad.ini
"$borad" --check-config "$bad" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] || fail "$bad: exit $rc, wanted 1"
grep -q 'ok' "$out" && fail "$bad: printed ok"
grep -qF "$bad:4: key 'limits.max_tokens': out of range 1..32768 (got '40000')" "$err" || fail "$bad: no line-4 max_tokens error: $(cat "$err")"
grep -qF "$bad:7: key 'model.backend':" "$err" || fail "$bad: no line-7 backend error: $(cat "$err")"
grep -qF "$bad:9: key 'dataplane.udp':" "$err" || fail "$bad: no line-9 udp error: $(cat "$err")"
[ "$(wc -l <"$err")" -eq 3 ] || fail "$bad: expected exactly 3 messages: $(cat "$err")"

"$borad" --check-config tests/data/config/missing.ini >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] || fail "missing file: exit $rc"
grep -qF 'tests/data/config/missing.ini: cannot open' "$err" || fail "missing file: $(cat "$err")"

# [model] path: checked as borad would open it (a folder with config.json or params.json)
tmpd=$(mktemp -d); trap 'rm -f "$out" "$err"; rm -rf "$tmpd"' EXIT
for p in /nonexistent/model tests/data/fixtures/mistral-tiny-bf16/model.safetensors tests/data; do
    printf '[model]\npath = %s\n' "$p" >"$tmpd/m.ini"
    "$borad" --check-config "$tmpd/m.ini" >"$out" 2>"$err"; rc=$?
    [ $rc -eq 1 ] && grep -q "^$tmpd/m.ini:2: key 'model.path': .* (got '$p')\$" "$err" || fail "path $p: exit $rc: $(cat "$err")"
done
grep -q "No such file" "$err" && fail "the last path exists: $(cat "$err")"
printf '[model]\npath = tests/data/fixtures/mistral-tiny-bf16\n' >"$tmpd/m.ini"
"$borad" --check-config "$tmpd/m.ini" >"$out" 2>"$err" || fail "a fixture folder: $(cat "$err")"
# ... opened as borad opens it: a folder with only config.json, a weights file cut short and a
# corrupt tokenizer are each named, not passed
fx=tests/data/fixtures/mistral-tiny-bf16
mkdir "$tmpd/cfgonly" "$tmpd/cut" "$tmpd/tok"
cp "$fx/config.json" "$tmpd/cfgonly/"
cp "$fx/config.json" "$fx/tokenizer.model" "$tmpd/cut/" && head -c 5000 "$fx/model.safetensors" >"$tmpd/cut/model.safetensors"
cp "$fx/config.json" "$fx/model.safetensors" "$tmpd/tok/" && head -c 1000 "$fx/tokenizer.model" >"$tmpd/tok/tokenizer.model"
for c in "cfgonly:no model.*safetensors" "cut:model.safetensors" "tok:tokenizer.model: a SentencePiece model cut short"; do
    d=${c%%:*} want=${c#*:}
    printf '[model]\npath = %s/%s\n' "$tmpd" "$d" >"$tmpd/m.ini"
    "$borad" --check-config "$tmpd/m.ini" >"$out" 2>"$err"; rc=$?
    [ $rc -eq 1 ] && grep -q "^$tmpd/m.ini:2: key 'model.path': .*$want" "$err" || fail "model $d: exit $rc: $(cat "$err")"
done

# what the console's start would refuse is reported by the check too
for kv in "socket_owner = no-such-user-bora:no such user" "socket_group = no-such-group-bora:no such group" \
          "serial = /dev/ttyNOPE-bora:No such file" "serial = /dev/shm:not a character device" \
          "serial = /dev/null:not a terminal"; do
    printf '[console]\nsocket = %s/c.sock\n%s\n' "$tmpd" "${kv%%:*}" >"$tmpd/c.ini"
    line=3
    case ${kv%%:*} in serial*) sed -i '2d' "$tmpd/c.ini"; line=2 ;; esac
    "$borad" --check-config "$tmpd/c.ini" >"$out" 2>"$err"; rc=$?
    [ $rc -eq 1 ] && grep -qF "${kv#*:}" "$err" && grep -qF "$tmpd/c.ini:$line: key 'console.${kv%% *}'" "$err" ||
        fail "${kv%%:*}: exit $rc: $(cat "$err")"
done

# every problem in one run: the file's own (a bad value), then what it names that the machine
# lacks (the model folder, the socket owner and group, the serial device), each with its line
printf '[model]\npath = /nonexistent/model\n[limits]\nqueue_depth = 0\n[console]\nsocket = %s/c.sock\nsocket_owner = no-such-user-bora\nsocket_group = no-such-group-bora\nserial = /dev/ttyNOPE-bora\n' "$tmpd" >"$tmpd/all.ini"
"$borad" --check-config "$tmpd/all.ini" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] || fail "every problem: exit $rc: $(cat "$err")"
for want in ":4: key 'limits.queue_depth': out of range" ":2: key 'model.path': No such file" \
            ":7: key 'console.socket_owner': no such user" ":8: key 'console.socket_group': no such group" \
            ":9: key 'console.serial': No such file"; do
    grep -qF "$tmpd/all.ini$want" "$err" || fail "every problem: no '$want': $(cat "$err")"
done
[ "$(wc -l <"$err")" -eq 5 ] || fail "every problem: expected exactly 5 messages: $(cat "$err")"
grep -q ok "$out" && fail "every problem: printed ok"

# a socket path taken by something else: the start would refuse it, so the check does
mkdir "$tmpd/taken"
printf '[console]\nsocket = %s/taken\n' "$tmpd" >"$tmpd/t.ini"
"$borad" --check-config "$tmpd/t.ini" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && grep -qF "$tmpd/t.ini:2: key 'console.socket': exists and is not a socket" "$err" ||
    fail "socket path a directory: exit $rc: $(cat "$err")"
# a socket path under a file: the start could not make it, so the check says so; missing folders
# the start would create are fine
printf '[console]\nsocket = %s/t.ini/c.sock\n' "$tmpd" >"$tmpd/u.ini"
"$borad" --check-config "$tmpd/u.ini" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && grep -qF "$tmpd/u.ini:2: key 'console.socket': the socket cannot be made in '$tmpd/t.ini': not a directory" "$err" ||
    fail "socket path under a file: exit $rc: $(cat "$err")"
printf '[console]\nsocket = %s/new/deeper/c.sock\n' "$tmpd" >"$tmpd/v.ini"
"$borad" --check-config "$tmpd/v.ini" >"$out" 2>"$err" || fail "socket in folders to be made: $(cat "$err")"
[ -e "$tmpd/new" ] && fail "the check made the socket's folders"
ls -A "$tmpd" | grep -q bora-check && fail "the check left its probe folder"
# under /proc no folder can be made, even by root (access() says it may): the check tries
if [ -d /proc/self ] && [ ! -e /proc/bora-nope ]; then
    printf '[console]\nsocket = /proc/bora-nope/c.sock\n' >"$tmpd/w.ini"
    "$borad" --check-config "$tmpd/w.ini" >"$out" 2>"$err"; rc=$?
    [ $rc -eq 1 ] && grep -qF "$tmpd/w.ini:2: key 'console.socket': the socket cannot be made in '/proc'" "$err" ||
        fail "socket path under /proc: exit $rc: $(cat "$err")"
fi
# the configuration a FIFO: refused at once (it waited for a writer), a directory named as one
mkfifo "$tmpd/fifo.ini"
timeout 10 "$borad" --check-config "$tmpd/fifo.ini" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && grep -qF "$tmpd/fifo.ini: not a regular file (a FIFO)" "$err" || fail "FIFO config: exit $rc: $(cat "$err")"

# what borad's start would refuse, --check-config refuses too: no listener at all, and what the
# build lacks (the CUDA backend in a build without nvcc; a DPDK port where libdpdk was absent)
printf '[dataplane]\nudp =\ntcp =\n' >"$tmpd/nl.ini"
"$borad" --check-config "$tmpd/nl.ini" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && grep -qF "$tmpd/nl.ini:2: key 'dataplane.udp': udp, tcp and dpdk are all off" "$err" ||
    fail "no listener: exit $rc: $(cat "$err")"
printf '[model]\nbackend = cuda\n' >"$tmpd/cu.ini"
"$borad" --check-config "$tmpd/cu.ini" >"$out" 2>"$err"; rc=$?
if grep -q -- '-DBORA_CUDA=1' "$build/.flags"; then
    [ $rc -eq 0 ] || fail "backend = cuda in a CUDA build: exit $rc: $(cat "$err")"
else
    [ $rc -eq 1 ] && grep -qF "$tmpd/cu.ini:2: key 'model.backend': this build has no CUDA backend" "$err" ||
        fail "backend = cuda without CUDA: exit $rc: $(cat "$err")"
fi
printf '[dataplane]\ndpdk = -l 0\n' >"$tmpd/dp.ini"
"$borad" --check-config "$tmpd/dp.ini" >"$out" 2>"$err"; rc=$?
if grep -q "this build has no DPDK port" "$err"; then   # a build without DPDK: the usual form, value included
    [ $rc -eq 1 ] && grep -qF "$tmpd/dp.ini:2: key 'dataplane.dpdk': this build has no DPDK port" "$err" &&
        grep -qF "(got '-l 0')" "$err" || fail "dpdk without DPDK: exit $rc: $(cat "$err")"
fi

# the decode kernel's diagnostic switch makes answers wrong: borad refuses to start with it
BORA_MEGA_DEBUG=4 "$borad" --check-config config/bora.ini >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && grep -q "BORA_MEGA_DEBUG" "$err" || fail "BORA_MEGA_DEBUG set: exit $rc: $(cat "$err")"
# a malformed value is refused the same way, in one message (not a warning, then the engine's second)
BORA_MEGA_DEBUG=x1 "$borad" --check-config config/bora.ini >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && [ "$(grep -c BORA_MEGA_DEBUG "$err")" -eq 1 ] && grep -q "BORA_MEGA_DEBUG=x1 is set" "$err" ||
    fail "BORA_MEGA_DEBUG=x1: exit $rc: $(cat "$err")"
BORA_MEGA_DEBUG=0 "$borad" --check-config config/bora.ini >"$out" 2>"$err"; rc=$?
[ $rc -eq 0 ] || fail "BORA_MEGA_DEBUG=0 refused: exit $rc: $(cat "$err")"

"$borad" --bogus >"$out" 2>"$err"; rc=$?
[ $rc -eq 2 ] || fail "--bogus: exit $rc, wanted 2"
"$borad" -c config/bora.ini -c "$bad" >"$out" 2>"$err"; rc=$?   # not silently the last one
[ $rc -eq 2 ] && grep -qF "one -c FILE only" "$err" || fail "-c twice: exit $rc: $(cat "$err")"

# -c with a bad file stops before serving (a good one would start the server).
"$borad" -c "$bad" >"$out" 2>"$err"; rc=$?
[ $rc -eq 1 ] && grep -qF "$bad:4:" "$err" || fail "-c bad: exit $rc: $(cat "$err")"
echo "e2e_check_config: ok"
