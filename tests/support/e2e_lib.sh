# e2e_lib.sh — shell helpers the e2e scripts share (sourced; each script defines its own fail).

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
