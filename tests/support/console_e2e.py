#!/usr/bin/env python3
"""console_e2e.py — helpers for the console end-to-end scripts: drive the serial line as a
person would (through the far end of a socat pty pair), check `stats --json` against
values the clients measured, check Prometheus text exposition independently, and run one
BWP/1 request over TCP with a chosen request_id (written from protocol.md alone)."""
import json, math, os, re, select, socket, struct, sys, time

BWP_HDR = struct.Struct("<4sBBHIIQ")

def bwp_generate(port, rid, ids, max_tokens, ignore_eos=True, timeout=30.0):
    """Sends GENERATE (token ids, greedy, ids streamed) on a TCP connection to 127.0.0.1:port
    and reads until DONE or ERROR. Returns a dict: accepted (queue position), ids, finish,
    completion_tokens, error (code), all None when absent."""
    prompt = b"".join(struct.pack("<I", i) for i in ids)
    body = struct.pack("<HBBffIQII", max_tokens, 2, 1 | (2 if ignore_eos else 0), 0.0, 1.0, 0, 0, 0,
                       len(prompt)) + prompt
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(BWP_HDR.pack(b"BWP1", 1, 0, 0, len(body), 0, rid) + body)
    out = {"rid": rid, "accepted": None, "ids": [], "finish": None, "completion_tokens": None, "error": None}
    data, end = b"", time.time() + timeout
    while time.time() < end:
        while len(data) >= 24:
            magic, t, flags, res, length, seq, r = BWP_HDR.unpack_from(data)
            # an ERROR with request_id 0 names no request (protocol.md: the server could not
            # name one, or refused the connection itself) and ends the connection
            assert magic == b"BWP1" and (r == rid or (r == 0 and t == 0x85)), (magic, r)
            if len(data) < 24 + length:
                break
            b, data = data[24:24 + length], data[24 + length:]
            if t == 0x81:
                out["accepted"] = struct.unpack_from("<I", b)[0]
            elif t == 0x82:
                n_ids = struct.unpack_from("<H", b)[0]
                out["ids"] += list(struct.unpack_from("<%dI" % n_ids, b, 4))
            elif t == 0x84:
                out["finish"] = b[0]
                out["completion_tokens"] = struct.unpack_from("<I", b, 12)[0]
                return out
            elif t == 0x85:
                out["error"] = struct.unpack_from("<H", b)[0]
                return out
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    sys.exit(f"FAIL: request {rid}: no DONE or ERROR (got {out})")

def expect(fd, pattern, timeout=10.0, buf=None):
    """Reads fd until pattern (regex) appears; returns the text read. Fails after timeout."""
    data = b"" if buf is None else buf
    end = time.time() + timeout
    rx = re.compile(pattern.encode(), re.S)
    while not rx.search(data):
        left = end - time.time()
        if left <= 0:
            sys.exit(f"FAIL: serial: waited {timeout}s for {pattern!r}; got {data[-400:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                sys.exit(f"FAIL: serial: line closed while waiting for {pattern!r}")
            data += chunk
    return data.decode(errors="replace")

def send(fd, text):
    os.write(fd, text.encode())

def serial(tty, password, max_failures):
    import termios, tty as ttymod
    fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    ttymod.setraw(fd)
    # Enter on a blank screen (the banner came long ago): a fresh prompt, never a failed login,
    # however often
    for _ in range(max_failures + 1):
        send(fd, "\r")
        out = expect(fd, r"Password: ")
        assert "Login incorrect" not in out and "locked" not in out, out
    send(fd, "wrong-password\r")
    out = expect(fd, r"Password: ")
    assert "Login incorrect" in out, out
    assert "wrong-password" not in out, "the password was echoed"
    send(fd, password + "\r")
    expect(fd, r"Logged in.*\r\nbora> ")
    send(fd, "stats\r")
    out = expect(fd, r"dataplane.*\r\n.*\r\n.*\r\nbora> ")
    assert "requests" in out and "ttft" in out and "\r\n" in out, out
    send(fd, "status\r")
    out = expect(fd, r"state +\w+.*\r\n.*\r\nbora> ")
    assert "state      serving" in out, out
    send(fd, "stats watch\r")
    out = expect(fd, r"press any key to stop")
    out = expect(fd, r"press any key to stop.*press any key to stop", timeout=5, buf=out.encode())
    assert out.count("\x1b[2J") >= 2, "stats watch did not refresh"
    send(fd, "x")                                      # any key ends it
    expect(fd, r"bora> ")
    send(fd, "frobnicate\r")
    out = expect(fd, r"bora> ")
    assert "unknown command 'frobnicate'" in out, out
    send(fd, "drain" + " " * 1100 + "x\r")          # longer than a command line: refused whole
    out = expect(fd, r"too long.*\r\nbora> ")
    assert "error: command line too long" in out, out
    send(fd, "status\r")
    out = expect(fd, r"state +\w+.*\r\n.*\r\nbora> ")
    assert "state      serving" in out, out        # not drained: nothing of the long line ran
    send(fd, "config\tshow\r")                     # a tab separates words as a space does
    out = expect(fd, r"max_tokens.*bora> ")
    assert "unknown command" not in out, out
    send(fd, "quit\r")
    expect(fd, r"Logged out.*Password: ")
    # lockout: max_failures wrong passwords, then even the right one is refused
    for i in range(max_failures):
        send(fd, f"bad{i}\r")
        out = expect(fd, r"Password: ")
    assert "Login locked" in out, out
    send(fd, password + "\r")
    out = expect(fd, r"Password: ")
    assert "Login locked" in out and "Logged in" not in out, out
    os.close(fd)
    print("serial: empty lines re-prompt, login, wrong password, stats, status, stats watch, an over-long line, "
          "a tab, lockout: ok")

def nearest_rank(v, q):
    v = sorted(v)
    return v[max(1, math.ceil(q * len(v))) - 1]

def bucket_upper(x):
    """Upper edge of the bucket holding x: exact below 8, then 8 buckets per power of two."""
    if x < 8:
        return x
    e = x.bit_length() - 1
    w = 1 << (e - 3)
    return (x // w) * w + w - 1

def check_percentiles(stats, key, values):
    h = stats[key]
    assert h["count"] == len(values), (key, h["count"], len(values))
    for name, q in (("p50", .5), ("p90", .9), ("p99", .99)):
        x = nearest_rank(values, q)
        got = h[name]
        assert x <= got <= bucket_upper(x), f"{key} {name}: server {got}, clients {x}"

def prom_check(text):
    """Prometheus text format 0.0.4: HELP/TYPE lines, names, cumulative histogram buckets."""
    name_rx = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    sample_rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
    types, fams, n = {}, [], 0
    hist = {}
    assert text.endswith("\n"), "no final newline"
    for ln, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            assert name_rx.match(parts[2]), f"line {ln}: bad name {parts[2]!r}"
            if line.startswith("# TYPE "):
                assert parts[2] not in types, f"line {ln}: TYPE twice"
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[parts[2]] = parts[3]
                fams.append(parts[2])
            continue
        m = sample_rx.match(line)
        assert m, f"line {ln}: not a sample: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        float(value)
        fam = fams[-1]
        assert name.startswith(fam), f"line {ln}: {name} outside family {fam}"
        if types[fam] == "histogram":
            suffix = name[len(fam):]
            assert suffix in ("_bucket", "_sum", "_count"), line
            h = hist.setdefault(fam, {"le": [], "c": [], "count": None})
            if suffix == "_bucket":
                le = re.search(r'le="([^"]*)"', labels).group(1)
                h["le"].append(float(le)); h["c"].append(float(value))
            elif suffix == "_count":
                h["count"] = float(value)
        else:
            assert name == fam, line
        n += 1
    for fam, h in hist.items():
        assert h["le"] and h["le"][-1] == math.inf, f"{fam}: no +Inf bucket"
        assert all(a < b for a, b in zip(h["le"], h["le"][1:])), f"{fam}: le not increasing"
        assert all(a <= b for a, b in zip(h["c"], h["c"][1:])), f"{fam}: buckets not cumulative"
        assert h["c"][-1] == h["count"], f"{fam}: +Inf bucket != _count"
    return n, hist

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serial":
        serial(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "stats":          # stats.json values.txt: percentiles vs the recorded values
        stats = json.load(open(sys.argv[2]))
        values = [int(x) for x in open(sys.argv[3]).read().split()]
        check_percentiles(stats, "e2e_us", values)
        assert stats["requests"]["total"] == len(values) + 3, stats["requests"]
        print("stats: counts and percentiles match the recorded values")
    elif cmd == "prom":
        n, hist = prom_check(open(sys.argv[2]).read())
        assert n > 50 and "bora_ttft_seconds" in hist, (n, list(hist))
        print(f"metrics: {n} samples, {len(hist)} histograms parse as Prometheus text")
    elif cmd == "gen":            # gen PORT RID MAX_TOKENS IDS: one request, its outcome as JSON
        ids = [int(x) for x in sys.argv[5].split(",")]
        print(json.dumps(bwp_generate(int(sys.argv[2]), int(sys.argv[3]), ids, int(sys.argv[4]))), flush=True)
    else:
        sys.exit("usage: console_e2e.py serial TTY PASSWORD MAXFAIL | stats JSON VALUES | prom FILE | "
                 "gen PORT RID MAX_TOKENS IDS")
