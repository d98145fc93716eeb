/* bwp.h — BWP/1 codec (protocol.md): parses and validates client frames in the exact order
 * of the edge rules, builds every server frame (and, for clients and tests, every client frame
 * and a server-frame parser), and the AUTH trailer (HMAC-SHA-256) with its replay window.
 * Pure functions over caller buffers: no allocation, no I/O, no clock (time is a parameter). */
#ifndef BORA_DATAPLANE_BWP_H
#define BORA_DATAPLANE_BWP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define BWP_HDR_SIZE        24
#define BWP_GEN_FIXED       32          /* bytes of GENERATE before the prompt */
#define BWP_TRAILER_SIZE    40          /* u64 timestamp_us + 32-byte HMAC-SHA-256 */
#define BWP_MAC_SIZE        32
#define BWP_KEY_MAX         64          /* bytes of pre-shared key kept */
#define BWP_UDP_MAX_DGRAM   65507       /* largest IPv4 UDP payload */
#define BWP_TCP_SKIP_MAX    (16u << 20) /* rule 7: oversize TCP payloads up to this are skipped */
#define BWP_AUTH_SKEW_US    30000000ull /* rule: timestamp within 30 s of the server clock */
#define BWP_RESEND_KEEP     256         /* frames retained per request */
#define BWP_FLAG_AUTH       0x01
#define BWP_OPT_IDS         0x01        /* GENERATE options bit 0: ids in TOKEN frames */
#define BWP_OPT_IGNORE_EOS  0x02        /* GENERATE options bit 1 */
#define BWP_PONG_LOADED     0x01
#define BWP_PONG_DRAINING   0x02

enum bwp_type {
    BWP_GENERATE = 0x01, BWP_CANCEL = 0x02, BWP_PING = 0x03, BWP_RESEND = 0x04,
    BWP_ACCEPTED = 0x81, BWP_TOKEN = 0x82, BWP_PONG = 0x83, BWP_DONE = 0x84, BWP_ERROR = 0x85,
};

enum bwp_code {
    BWP_OK = 0, BWP_E_BAD_FRAME = 1, BWP_E_BAD_VERSION = 2, BWP_E_TOO_LARGE = 3, BWP_E_BUSY = 4,
    BWP_E_AUTH = 5, BWP_E_BAD_PARAMS = 6, BWP_E_DUPLICATE = 7, BWP_E_INTERNAL = 8,
    BWP_E_SHUTTING_DOWN = 9, BWP_E_RATE_LIMITED = 10, BWP_E_FORBIDDEN = 11,
};

enum bwp_finish {
    BWP_FINISH_EOS = 0, BWP_FINISH_MAX_TOKENS = 1, BWP_FINISH_CANCELLED = 2,
    BWP_FINISH_DEADLINE = 3, BWP_FINISH_SHUTDOWN = 4,
};

enum bwp_prompt_kind { BWP_PROMPT_TEXT = 0, BWP_PROMPT_CHAT = 1, BWP_PROMPT_IDS = 2 };
enum bwp_transport { BWP_UDP = 0, BWP_TCP = 1 };

struct bwp_header {
    uint8_t type, flags;
    uint16_t reserved;
    uint32_t length;        /* payload bytes after the header (trailer included) */
    uint32_t seq;
    uint64_t request_id;
};

/* GENERATE fields as on the wire; prompt points into the parsed buffer. */
struct bwp_generate {
    uint16_t max_tokens;
    uint8_t prompt_kind, options;
    float temperature, top_p;
    uint32_t top_k;
    uint64_t seed;
    uint32_t deadline_ms;
    uint32_t prompt_len;
    const uint8_t *prompt;
};

#define BWP_WHY_MAX 384                 /* the longest: a chat-order refusal (model/chat.c), ≈ 340 bytes */

/* A validated client frame (pointers into the caller's buffer). */
struct bwp_client_frame {
    struct bwp_header h;
    uint64_t auth_ts_us;            /* trailer timestamp when AUTH was verified, else 0 */
    struct bwp_generate gen;        /* GENERATE */
    uint32_t from_seq;              /* RESEND */
    char why[BWP_WHY_MAX];          /* a refusal's message that holds numbers (the verdict's msg points
                                     * here): the parser keeps nothing of its own, so it stays pure.
                                     * Last, and not cleared: only a refusal writes it */
};

/* What to do with a frame: answer with an ERROR, answer nothing, and/or close (TCP). */
struct bwp_verdict {
    uint16_t code;          /* BWP_OK when the frame is valid; else the ERROR code */
    bool answer;            /* send ERROR(code) with request_id below */
    bool close;             /* TCP: close the connection after the ERROR */
    bool no_trailer;        /* answering an authentication failure: no AUTH trailer */
    uint64_t request_id;
    const char *msg;        /* the ERROR message: static text, or the why of the frame the verdict
                             * came with (bwp_parse_client's out): read it while that frame lives */
    uint32_t limit;         /* TOO_LARGE: the max_prompt_bytes it was judged by (0: none); bwp_verdict_msg adds it */
};

/* The ERROR message for v: v->msg, with the limit a TOO_LARGE was judged by appended
 * ("... (max_prompt_bytes 4096)") into buf (n bytes). Returns v->msg or buf. */
const char *bwp_verdict_msg(const struct bwp_verdict *v, char *buf, size_t n);

/* Pre-shared key; len 0 = AUTH not configured. */
struct bwp_key {
    uint8_t bytes[BWP_KEY_MAX];
    size_t len;
};

/* Replay window for AUTH: remembers (endpoint, request_id, timestamp) for 2 × the allowed
 * skew in a fixed open-addressing table. Owner: one transport thread (not thread-safe). */
struct bwp_replay_slot {
    uint64_t endpoint, request_id, ts_us;
    uint64_t expires_us;            /* 0 = empty */
};
struct bwp_replay {
    struct bwp_replay_slot *slots;  /* caller-provided array of n (power of two) */
    uint32_t n;
};

/* Server-side limits the parser enforces. */
struct bwp_limits {
    uint32_t max_prompt_bytes;      /* rule 7 */
    uint32_t max_tokens;            /* rule 10: max_tokens in 1 … this */
    uint32_t vocab_size;            /* kind-2 ids must be below; 0 = not checked */
    uint32_t max_ctx;               /* the model's context: a kind-2 prompt of this many ids or more is
                                     * TOO_LARGE here, before the queue (rule 1); 0 = not checked */
    const struct bwp_key *key;      /* NULL or len 0: no key configured */
};

/* Parses and validates one client frame: on UDP buf/n is the datagram, on TCP exactly
 * 24 + length bytes (the stream framing is bwp_stream_need's job). Checks in rule-1 order:
 * header (magic, version, reserved, flags, type, request_id 0) → AUTH (MAC, ±30 s, replay
 * via `replay`, may be NULL) → TOO_LARGE → BAD_FRAME → BAD_PARAMS. Returns the verdict;
 * out is filled when verdict.code == BWP_OK (and out->h whenever the header was readable).
 * `endpoint` keys the replay window. Thread: any; replay is mutated. */
struct bwp_verdict bwp_parse_client(const uint8_t *buf, size_t n, enum bwp_transport tr,
                                    const struct bwp_limits *lim, struct bwp_replay *replay,
                                    uint64_t endpoint, uint64_t now_us,
                                    struct bwp_client_frame *out);

/* TCP framing: given the first `avail` stream bytes of a frame, returns how many bytes the
 * whole frame needs (24 + length), or 0 when more bytes are needed to tell. When the stream
 * cannot be a BWP/1 frame (rule 2 and 3: bad magic or version) fills *v (answer + close) and
 * returns SIZE_MAX. Frames larger than `frame_max` are returned as their size too: the
 * caller then calls bwp_parse_oversize. */
size_t bwp_stream_need(const uint8_t *buf, size_t avail, struct bwp_verdict *v);

/* Verdict for a TCP frame whose header (24 bytes at hdr) announces more than the server can
 * hold: the header checks, AUTH when the flag disagrees with the key, then TOO_LARGE; close is
 * set when length > 16 MiB (rule 7). A keyed server verifies the trailer of a skipped frame
 * with bwp_mac_stream_* before answering TOO_LARGE (beyond 16 MiB it cannot: TOO_LARGE). */
struct bwp_verdict bwp_parse_oversize(const uint8_t *hdr, const struct bwp_limits *lim);

/* Streaming check of the AUTH trailer of a frame too large to hold (TCP, rule 7 skip): the
 * header, then every payload byte as it is skipped; the last 40 bytes are kept aside. */
struct bwp_mac_stream {
    crypto_auth_hmacsha256_state st;
    uint8_t tail[BWP_TRAILER_SIZE];
    uint32_t tail_n;
};
void bwp_mac_stream_init(struct bwp_mac_stream *m, const struct bwp_key *key, const uint8_t *hdr);
void bwp_mac_stream_feed(struct bwp_mac_stream *m, const uint8_t *d, size_t k);
/* After the whole payload: AUTH (MAC wrong, timestamp off, replayed; no trailer) or TOO_LARGE. */
struct bwp_verdict bwp_mac_stream_verdict(struct bwp_mac_stream *m, const struct bwp_limits *lim,
                                          struct bwp_replay *replay, uint64_t endpoint,
                                          uint64_t request_id, uint64_t now_us);

/* Largest frame (24 + length) a server with these limits accepts. */
size_t bwp_frame_max(const struct bwp_limits *lim);

/* Kind-1 message iterator: *p walks [*p, end); returns 1 with role/text/len set, 0 at end,
 * -1 on a truncated message. */
int bwp_msg_next(const uint8_t **p, const uint8_t *end, uint8_t *role, const uint8_t **text,
                 uint32_t *len);

/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF). */
bool bwp_utf8_valid(const uint8_t *s, size_t n);
/* Length of the longest prefix of s[0..n) made of complete UTF-8 sequences. */
size_t bwp_utf8_complete(const uint8_t *s, size_t n);

/* Replay window. Returns 0 (new, remembered), -EALREADY (seen), -ENOSPC (table full). */
void bwp_replay_init(struct bwp_replay *r, struct bwp_replay_slot *slots, uint32_t n);
int bwp_replay_check(struct bwp_replay *r, uint64_t endpoint, uint64_t request_id,
                     uint64_t ts_us, uint64_t now_us);

/* ---- builders: each writes one frame into buf (cap bytes) and returns its size, or 0 when
 * cap is too small. seq per protocol. If key is not NULL and key->len > 0, the AUTH trailer
 * (ts_us, HMAC) is appended and the AUTH flag set. ---- */
struct bwp_done {
    uint8_t finish;
    uint32_t prompt_tokens, cached_tokens, completion_tokens, queue_us, ttft_us, total_us;
};
size_t bwp_build_accepted(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq,
                          uint32_t queue_position, uint32_t prompt_tokens,
                          const struct bwp_key *key, uint64_t ts_us);
size_t bwp_build_token(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq,
                       const uint32_t *ids, uint16_t n_ids, const char *text, uint16_t text_len,
                       const struct bwp_key *key, uint64_t ts_us);
size_t bwp_build_pong(uint8_t *buf, size_t cap, uint64_t rid, uint32_t queue_depth,
                      uint32_t flags, const struct bwp_key *key, uint64_t ts_us);
size_t bwp_build_done(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq,
                      const struct bwp_done *d, const struct bwp_key *key, uint64_t ts_us);
size_t bwp_build_error(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq, uint16_t code,
                       const char *msg, const struct bwp_key *key, uint64_t ts_us);
/* Client frames (clients, tests, benches). */
size_t bwp_build_generate(uint8_t *buf, size_t cap, uint64_t rid, const struct bwp_generate *g,
                          const struct bwp_key *key, uint64_t ts_us);
size_t bwp_build_simple(uint8_t *buf, size_t cap, uint8_t type, uint64_t rid,
                        const struct bwp_key *key, uint64_t ts_us);     /* CANCEL, PING */
size_t bwp_build_resend(uint8_t *buf, size_t cap, uint64_t rid, uint32_t from_seq,
                        const struct bwp_key *key, uint64_t ts_us);
/* Appends a trailer to a built frame of size n (patching flags and length); returns the new
 * size or 0 if cap is too small. */
size_t bwp_seal(uint8_t *buf, size_t n, size_t cap, const struct bwp_key *key, uint64_t ts_us);
/* Writes the 24-byte header. */
void bwp_put_header(uint8_t *buf, uint8_t type, uint8_t flags, uint32_t length, uint32_t seq,
                    uint64_t rid);
/* Reads the 24-byte header (no checks). */
void bwp_get_header(const uint8_t *buf, struct bwp_header *h);

/* A parsed server frame (clients and tests). */
struct bwp_server_frame {
    struct bwp_header h;
    union {
        struct { uint32_t queue_position, prompt_tokens; } accepted;
        struct { uint16_t n_ids, text_len; const uint8_t *ids; const char *text; } token;
        struct { uint32_t queue_depth, flags; } pong;
        struct bwp_done done;
        struct { uint16_t code, msg_len; const char *msg; } error;
    } u;
};
/* Parses one server frame of exactly n bytes; verifies the trailer when key is set and the
 * AUTH flag is present (require_auth: its absence is an error, except on ERROR AUTH, which
 * answers a frame that failed authentication and has none: protocol.md rule 17). Returns 0 or -EBADMSG
 * (malformed), -EPROTO (bad magic/version), -EACCES (MAC wrong or missing). */
int bwp_parse_server(const uint8_t *buf, size_t n, const struct bwp_key *key, bool require_auth,
                     struct bwp_server_frame *out);

const char *bwp_code_name(uint16_t code);
const char *bwp_finish_name(uint8_t finish);

/* Little-endian field access. */
static inline uint16_t bwp_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t bwp_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t bwp_rd64(const uint8_t *p) { return bwp_rd32(p) | (uint64_t)bwp_rd32(p + 4) << 32; }
static inline void bwp_wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void bwp_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void bwp_wr64(uint8_t *p, uint64_t v) { bwp_wr32(p, (uint32_t)v); bwp_wr32(p + 4, (uint32_t)(v >> 32)); }

#endif
