# e2e_lib.sh — shell helpers the e2e scripts share (sourced). wait_banner calls the script's fail.

# wait_banner PID LOG PATTERN SECONDS WHAT: returns once LOG holds PATTERN (the server's banner);
# fails (the caller's fail) when PID exits first or after SECONDS.
wait_banner() {
    local pid=$1 log=$2 pat=$3 secs=$4 what=$5
    for _ in $(seq $((secs * 10))); do
        grep -q "$pat" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || fail "$what exited at start"
        sleep 0.1
    done
    fail "$what printed no '$pat' in $secs s"
}

# e2e_borad_begin FIXTURE: the start of a script that runs borad on loopback with FIXTURE. Skips
# (exit 77, saying why) without python3 or without FIXTURE; sets tmp (a fresh directory) and pid
# (empty: set it to borad's pid); at exit kills borad and removes tmp. Defines fail MSG: prints
# MSG and borad's log ($tmp/borad.log), exits 1.
e2e_borad_begin() {
    command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
    [ -d "$1" ] || { echo "SKIP: fixture $1 missing"; exit 77; }
    tmp=$(mktemp -d)
    pid=
    trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
    fail() { echo "FAIL: $*"; [ -f "$tmp/borad.log" ] && sed 's/^/  borad| /' "$tmp/borad.log"; exit 1; }
}

# e2e_free_port: prints a loopback port free for both TCP and UDP (borad binds one number for both).
e2e_free_port() {
    python3 -c 'import socket
for _ in range(50):
    t=socket.socket(); t.bind(("127.0.0.1",0)); p=t.getsockname()[1]
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    try: u.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass
    finally: t.close(); u.close()'
}
