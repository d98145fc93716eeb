#!/usr/bin/env python3
"""A minimal BWP/1 client: sends one GENERATE over TCP and streams the completion.

usage: bwp_client.py [HOST:PORT] [PROMPT]      (default 127.0.0.1:7474)
Only the standard library; see docs/CLIENTS.md for the frame layouts it uses.
"""
import socket
import struct
import sys

HEADER = struct.Struct("<4sBBHIIQ")          # magic, type, flags, reserved, length, seq, request_id
GENERATE = struct.Struct("<HBBffIQII")       # max_tokens, prompt_kind, options, temperature, top_p,
                                             # top_k, seed, deadline_ms, prompt_len
T_GENERATE, T_ACCEPTED, T_TOKEN, T_DONE, T_ERROR = 0x01, 0x81, 0x82, 0x84, 0x85
FINISH = {0: "eos", 1: "max_tokens", 2: "cancelled", 3: "deadline", 4: "shutdown"}


def frame(ftype, request_id, payload=b""):
    return HEADER.pack(b"BWP1", ftype, 0, 0, len(payload), 0, request_id) + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7474"
    if ":" not in addr or not addr.rsplit(":", 1)[1].isdigit():
        sys.exit(f"bwp_client.py: expected HOST:PORT (got {addr!r}); --help for the usage")
    host, port = addr.rsplit(":", 1)
    prompt = (sys.argv[2] if len(sys.argv) > 2 else "Hello! Where is my order #4512?").encode()
    # prompt_kind 0 = raw text (BOS added by the server); greedy (temperature 0), top_p 1 = off
    payload = GENERATE.pack(64, 0, 0, 0.0, 1.0, 0, 0, 0, len(prompt)) + prompt
    with socket.create_connection((host, int(port))) as s:
        s.sendall(frame(T_GENERATE, 1, payload))
        while True:
            magic, ftype, _flags, _res, length, _seq, _rid = HEADER.unpack(recv_exact(s, HEADER.size))
            body = recv_exact(s, length)
            if ftype == T_ACCEPTED:
                queue_position, prompt_tokens = struct.unpack_from("<II", body)
                print(f"[accepted: {prompt_tokens} prompt tokens, queue position {queue_position}]", file=sys.stderr)
            elif ftype == T_TOKEN:
                n_ids, text_len = struct.unpack_from("<HH", body)
                start = 4 + 4 * n_ids
                sys.stdout.write(body[start:start + text_len].decode())
                sys.stdout.flush()
            elif ftype == T_DONE:
                finish = body[0]
                prompt_tokens, cached, completion, queue_us, ttft_us, total_us = struct.unpack_from("<6I", body, 4)
                print(f"\n[done: {FINISH.get(finish, finish)}, {completion} tokens, ttft {ttft_us} us, "
                      f"total {total_us} us]", file=sys.stderr)
                return 0
            elif ftype == T_ERROR:
                code, msg_len = struct.unpack_from("<HH", body)
                print(f"error {code}: {body[4:4 + msg_len].decode()}", file=sys.stderr)
                return 1


if __name__ == "__main__":
    sys.exit(main())
