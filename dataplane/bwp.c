/* bwp.c — BWP/1 codec: client-frame validation in rule-1 order, server/client frame builders,
 * the AUTH trailer (libsodium HMAC-SHA-256) and the replay window. See bwp.h and protocol.md. */
#include "dataplane/bwp.h"
#include "model/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/err.h"

/* ---- verdict helpers ---- */

static struct bwp_verdict verdict(uint16_t code, uint64_t rid, const char *msg)
{
    struct bwp_verdict v = { .code = code, .answer = code != BWP_OK, .request_id = rid, .msg = msg };
    return v;
}

static struct bwp_verdict verdict_large(uint64_t rid, const char *msg, const struct bwp_limits *lim)
{
    struct bwp_verdict v = verdict(BWP_E_TOO_LARGE, rid, msg);
    v.limit = lim ? lim->max_prompt_bytes : 0;
    return v;
}

const char *bwp_verdict_msg(const struct bwp_verdict *v, char *buf, size_t n)
{
    if (v->code != BWP_E_TOO_LARGE || !v->limit || !v->msg || n == 0)
        return v->msg;
    snprintf(buf, n, "%s (max_prompt_bytes %u)", v->msg, v->limit);
    return buf;
}

/* A verdict whose message is formatted into the frame's why. */
static struct bwp_verdict verdict_fmt(struct bwp_client_frame *out, uint16_t code, uint64_t rid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static struct bwp_verdict verdict_fmt(struct bwp_client_frame *out, uint16_t code, uint64_t rid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->why, sizeof out->why, fmt, ap);
    va_end(ap);
    return verdict(code, rid, out->why);
}

static struct bwp_verdict verdict_drop(const char *msg)
{
    struct bwp_verdict v = { .code = BWP_E_BAD_FRAME, .answer = false, .msg = msg };
    return v;
}

static struct bwp_verdict verdict_auth(uint64_t rid, const char *msg)
{
    struct bwp_verdict v = verdict(BWP_E_AUTH, rid, msg);
    v.no_trailer = true;
    return v;
}

/* ---- header ---- */

void bwp_put_header(uint8_t *buf, uint8_t type, uint8_t flags, uint32_t length, uint32_t seq,
                    uint64_t rid)
{
    memcpy(buf, "BWP1", 4);
    buf[4] = type;
    buf[5] = flags;
    bwp_wr16(buf + 6, 0);
    bwp_wr32(buf + 8, length);
    bwp_wr32(buf + 12, seq);
    bwp_wr64(buf + 16, rid);
}

void bwp_get_header(const uint8_t *buf, struct bwp_header *h)
{
    h->type = buf[4];
    h->flags = buf[5];
    h->reserved = bwp_rd16(buf + 6);
    h->length = bwp_rd32(buf + 8);
    h->seq = bwp_rd32(buf + 12);
    h->request_id = bwp_rd64(buf + 16);
}

static bool magic_is_bwp(const uint8_t *b)
{
    return b[0] == 'B' && b[1] == 'W' && b[2] == 'P' && b[3] >= '0' && b[3] <= '9';
}

static bool type_is_client(uint8_t t)
{
    return t >= BWP_GENERATE && t <= BWP_RESEND;
}

/* Header checks after magic+version, before AUTH: reserved, flags (rules 1, 6). */
static struct bwp_verdict check_header_bits(const struct bwp_header *h)
{
    if (h->reserved != 0)
        return verdict(BWP_E_BAD_FRAME, h->request_id, "reserved header field is not 0");
    if (h->flags & ~BWP_FLAG_AUTH)
        return verdict(BWP_E_BAD_FRAME, h->request_id, "unknown flags bit set");
    return verdict(BWP_OK, h->request_id, NULL);
}

/* Header fields, checked with the other fields after AUTH and TOO_LARGE (rules 1, 5): request_id
 * 0, type. A frame that fails AUTH is answered AUTH, unsigned, whatever these hold. */
static struct bwp_verdict check_header_ids(const struct bwp_header *h)
{
    if (h->request_id == 0)
        return verdict(BWP_E_BAD_FRAME, 0, "request_id 0 is not allowed");
    if (!type_is_client(h->type))
        return verdict(BWP_E_BAD_FRAME, h->request_id, "unknown frame type");
    return verdict(BWP_OK, h->request_id, NULL);
}

/* ---- UTF-8 ---- */

/* Length of the valid sequence at s (n bytes left), 0 if invalid, -1 if truncated. */
static int utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    int len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
    else return 0;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return -1;
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
        /* reject overlongs and surrogates as soon as the second byte tells */
        if (i == 1) {
            if (len == 3 && c == 0xe0 && s[1] < 0xa0) return 0;
            if (len == 3 && c == 0xed && s[1] >= 0xa0) return 0;
            if (len == 4 && c == 0xf0 && s[1] < 0x90) return 0;
            if (len == 4 && c == 0xf4 && s[1] >= 0x90) return 0;
        }
    }
    (void)cp;
    return len;
}

bool bwp_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        int l = utf8_seq(s + i, n - i);
        if (l <= 0)
            return false;
        i += (size_t)l;
    }
    return true;
}

size_t bwp_utf8_complete(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int l = utf8_seq(s + i, n - i);
        if (l < 0)
            return i;
        i += l == 0 ? 1 : (size_t)l;   /* invalid bytes pass through (not ours to fix) */
    }
    return i;
}

/* ---- kind-1 messages ---- */

int bwp_msg_next(const uint8_t **p, const uint8_t *end, uint8_t *role, const uint8_t **text,
                 uint32_t *len)
{
    const uint8_t *q = *p;
    if (q == end)
        return 0;
    if (end - q < 5)
        return -1;
    uint32_t l = bwp_rd32(q + 1);
    if ((size_t)(end - q - 5) < l)
        return -1;
    *role = q[0];
    *text = q + 5;
    *len = l;
    *p = q + 5 + l;
    return 1;
}

/* ---- AUTH ---- */

static void mac_compute(const struct bwp_key *key, const uint8_t *data, size_t n, uint8_t mac[32])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key->bytes, key->len);
    crypto_auth_hmacsha256_update(&st, data, n);
    crypto_auth_hmacsha256_final(&st, mac);
}

size_t bwp_seal(uint8_t *buf, size_t n, size_t cap, const struct bwp_key *key, uint64_t ts_us)
{
    if (!key || key->len == 0)
        return n;
    if (n < BWP_HDR_SIZE || cap < n + BWP_TRAILER_SIZE)
        return 0;
    buf[5] |= BWP_FLAG_AUTH;
    bwp_wr32(buf + 8, bwp_rd32(buf + 8) + BWP_TRAILER_SIZE);
    bwp_wr64(buf + n, ts_us);
    mac_compute(key, buf, n, buf + n + 8);   /* protocol.md rule 17: header + payload before the trailer */
    return n + BWP_TRAILER_SIZE;
}

/* Verifies the trailer in the last 40 bytes of frame[0..n). The MAC covers [0, n-40): the header
 * as sent and the payload before the trailer, not the timestamp (protocol.md rule 17). */
static bool mac_ok(const struct bwp_key *key, const uint8_t *frame, size_t n)
{
    uint8_t mac[32];
    mac_compute(key, frame, n - BWP_TRAILER_SIZE, mac);
    return sodium_memcmp(mac, frame + n - BWP_MAC_SIZE, BWP_MAC_SIZE) == 0;
}

void bwp_replay_init(struct bwp_replay *r, struct bwp_replay_slot *slots, uint32_t n)
{
    r->slots = slots;
    r->n = n;
    memset(slots, 0, sizeof *slots * n);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

int bwp_replay_check(struct bwp_replay *r, uint64_t endpoint, uint64_t request_id,
                     uint64_t ts_us, uint64_t now_us)
{
    uint32_t mask = r->n - 1;
    uint32_t i = (uint32_t)mix64(endpoint ^ mix64(request_id ^ mix64(ts_us))) & mask;
    struct bwp_replay_slot *free_slot = NULL;
    for (uint32_t probe = 0; probe < r->n && probe < 64; probe++, i = (i + 1) & mask) {
        struct bwp_replay_slot *s = &r->slots[i];
        bool live = s->expires_us > now_us;
        if (live && s->endpoint == endpoint && s->request_id == request_id && s->ts_us == ts_us)
            return -EALREADY;
        if (!live && !free_slot)
            free_slot = s;
    }
    if (!free_slot)
        return -ENOSPC;
    free_slot->endpoint = endpoint;
    free_slot->request_id = request_id;
    free_slot->ts_us = ts_us;
    /* a timestamp is accepted while now ≤ ts + the skew: remember it exactly that long (the
     * window then holds about 30 s of authenticated frames, not 60 or more) */
    free_slot->expires_us = ts_us + BWP_AUTH_SKEW_US + 1;
    return 0;
}

void bwp_mac_stream_init(struct bwp_mac_stream *m, const struct bwp_key *key, const uint8_t *hdr)
{
    crypto_auth_hmacsha256_init(&m->st, key->bytes, key->len);
    crypto_auth_hmacsha256_update(&m->st, hdr, BWP_HDR_SIZE);
    m->tail_n = 0;
}

void bwp_mac_stream_feed(struct bwp_mac_stream *m, const uint8_t *d, size_t k)
{
    if (m->tail_n + k <= BWP_TRAILER_SIZE) {
        memcpy(m->tail + m->tail_n, d, k);
        m->tail_n += (uint32_t)k;
        return;
    }
    /* bytes leaving the 40-byte window go into the MAC: first the oldest of the tail */
    size_t out = m->tail_n + k - BWP_TRAILER_SIZE;
    size_t from_tail = out < m->tail_n ? out : m->tail_n;
    crypto_auth_hmacsha256_update(&m->st, m->tail, from_tail);
    crypto_auth_hmacsha256_update(&m->st, d, out - from_tail);
    uint8_t nt[BWP_TRAILER_SIZE];
    size_t keep = m->tail_n - from_tail;
    memcpy(nt, m->tail + from_tail, keep);
    memcpy(nt + keep, d + (out - from_tail), BWP_TRAILER_SIZE - keep);
    memcpy(m->tail, nt, BWP_TRAILER_SIZE);
    m->tail_n = BWP_TRAILER_SIZE;
}

static struct bwp_verdict check_auth(const uint8_t *buf, size_t n, const struct bwp_header *h,
                                     const struct bwp_limits *lim, struct bwp_replay *replay,
                                     uint64_t endpoint, uint64_t now_us, uint64_t *ts_out)
{
    bool keyed = lim->key && lim->key->len > 0;
    uint64_t rid = h->request_id;
    if (!keyed) {
        if (h->flags & BWP_FLAG_AUTH)
            return verdict_auth(rid, "AUTH flag set but no key is configured");
        return verdict(BWP_OK, rid, NULL);
    }
    if (!(h->flags & BWP_FLAG_AUTH))
        return verdict_auth(rid, "auth trailer missing");
    if (h->length < BWP_TRAILER_SIZE || n < BWP_HDR_SIZE + BWP_TRAILER_SIZE)
        return verdict_auth(rid, "auth trailer truncated");
    if (!mac_ok(lim->key, buf, n))
        return verdict_auth(rid, "auth MAC wrong");
    uint64_t ts = bwp_rd64(buf + n - BWP_TRAILER_SIZE);
    uint64_t skew = ts > now_us ? ts - now_us : now_us - ts;
    if (skew > BWP_AUTH_SKEW_US)
        return verdict_auth(rid, "auth timestamp more than 30 s from the server clock");
    if (replay) {
        int rc = bwp_replay_check(replay, endpoint, rid, ts, now_us);
        if (rc == -EALREADY)
            return verdict_auth(rid, "auth trailer replayed");
        if (rc < 0)
            return verdict_auth(rid, "auth replay window full; retry later");
    }
    *ts_out = ts;
    return verdict(BWP_OK, rid, NULL);
}

struct bwp_verdict bwp_mac_stream_verdict(struct bwp_mac_stream *m, const struct bwp_limits *lim,
                                          struct bwp_replay *replay, uint64_t endpoint,
                                          uint64_t request_id, uint64_t now_us)
{
    if (m->tail_n < BWP_TRAILER_SIZE)
        return verdict_auth(request_id, "auth trailer truncated");
    uint8_t mac[32];
    crypto_auth_hmacsha256_final(&m->st, mac);   /* header + payload; the timestamp is not covered */
    if (sodium_memcmp(mac, m->tail + 8, BWP_MAC_SIZE) != 0)
        return verdict_auth(request_id, "auth MAC wrong");
    uint64_t ts = bwp_rd64(m->tail);
    uint64_t skew = ts > now_us ? ts - now_us : now_us - ts;
    if (skew > BWP_AUTH_SKEW_US)
        return verdict_auth(request_id, "auth timestamp more than 30 s from the server clock");
    if (replay) {
        int rc = bwp_replay_check(replay, endpoint, request_id, ts, now_us);
        if (rc == -EALREADY)
            return verdict_auth(request_id, "auth trailer replayed");
        if (rc < 0)
            return verdict_auth(request_id, "auth replay window full; retry later");
    }
    return verdict_large(request_id, "frame over the server's size limit", lim);
}

/* ---- client frame validation ---- */

size_t bwp_frame_max(const struct bwp_limits *lim)
{
    return BWP_HDR_SIZE + BWP_GEN_FIXED + (size_t)lim->max_prompt_bytes + BWP_TRAILER_SIZE;
}

static void read_generate(const uint8_t *p, struct bwp_generate *g)
{
    float f;
    g->max_tokens = bwp_rd16(p);
    g->prompt_kind = p[2];
    g->options = p[3];
    uint32_t u = bwp_rd32(p + 4);
    memcpy(&f, &u, 4);
    g->temperature = f;
    u = bwp_rd32(p + 8);
    memcpy(&f, &u, 4);
    g->top_p = f;
    g->top_k = bwp_rd32(p + 12);
    g->seed = bwp_rd64(p + 16);
    g->deadline_ms = bwp_rd32(p + 24);
    g->prompt_len = bwp_rd32(p + 28);
    g->prompt = p + BWP_GEN_FIXED;
}

/* BAD_FRAME checks of a GENERATE body (sizes, message structure, UTF-8). */
static const char *generate_frame_error(const struct bwp_generate *g, uint32_t body)
{
    if (body < BWP_GEN_FIXED)
        return "GENERATE payload shorter than its 32-byte fixed part";
    if (g->prompt_len != body - BWP_GEN_FIXED)
        return "GENERATE prompt_len disagrees with the frame length";
    if (g->prompt_kind == BWP_PROMPT_TEXT && !bwp_utf8_valid(g->prompt, g->prompt_len))
        return "prompt text is not valid UTF-8";
    if (g->prompt_kind == BWP_PROMPT_CHAT) {
        const uint8_t *p = g->prompt, *end = p + g->prompt_len, *text;
        uint8_t role;
        uint32_t len;
        int rc;
        while ((rc = bwp_msg_next(&p, end, &role, &text, &len)) > 0)
            if (!bwp_utf8_valid(text, len))
                return "chat message text is not valid UTF-8";
        if (rc < 0)
            return "chat message truncated";
    }
    return NULL;
}

/* msg into why (n bytes, n > 0), cut to fit; returns why. */
static const char *copy_msg(char *why, size_t n, const char *msg)
{
    size_t m = strnlen(msg, n - 1);
    memcpy(why, msg, m);
    why[m] = 0;
    return why;
}

/* BAD_PARAMS checks of a GENERATE (rules 6, 10). A message that holds numbers is written into
 * why (n bytes) and returned. */
static const char *generate_params_error(const struct bwp_generate *g, const struct bwp_limits *lim,
                                         char *why, size_t nwhy)
{
    if (g->max_tokens == 0)
        return "max_tokens is 0";
    if (g->max_tokens > lim->max_tokens) {
        snprintf(why, nwhy, "max_tokens %u over the server limit of %u", (unsigned)g->max_tokens,
                 (unsigned)lim->max_tokens);
        return why;
    }
    if (g->options & ~(BWP_OPT_IDS | BWP_OPT_IGNORE_EOS))
        return "unknown options bit set";
    if (!isfinite(g->temperature) || g->temperature < 0)
        return "temperature must be finite and >= 0";
    if (!(g->top_p > 0 && g->top_p <= 1))
        return "top_p must be in (0, 1]";
    if (g->prompt_kind > BWP_PROMPT_IDS)
        return "unknown prompt_kind";
    if (g->prompt_len == 0)
        return "empty prompt";
    if (g->prompt_kind == BWP_PROMPT_CHAT) {
        const uint8_t *p = g->prompt, *end = p + g->prompt_len, *text;
        uint8_t role, prev = 0;
        uint32_t len;
        size_t n = 0;
        bool user = false;
        struct bora_err err;
        while (bwp_msg_next(&p, end, &role, &text, &len) > 0) {
            if (role > 3)
                return "chat message role above 3";
            /* the conversation's order, as the chat template checks it, in rule 1's place (before
             * the queue) */
            if (n && chat_order_step(n, prev, role, &err))
                return copy_msg(why, nwhy, err.msg);
            user = user || role == CHAT_ROLE_USER;
            prev = role;
            n++;
        }
        if (n && chat_order_end(n, user, prev, false, &err))
            return copy_msg(why, nwhy, err.msg);
    }
    if (g->prompt_kind == BWP_PROMPT_IDS) {
        if (g->prompt_len % 4)
            return "token-id prompt length is not a multiple of 4";
        if (lim->vocab_size)
            for (uint32_t i = 0; i < g->prompt_len; i += 4)
                if (bwp_rd32(g->prompt + i) >= lim->vocab_size)
                    return "token id >= vocabulary size";
    }
    return NULL;
}

struct bwp_verdict bwp_parse_client(const uint8_t *buf, size_t n, enum bwp_transport tr,
                                    const struct bwp_limits *lim, struct bwp_replay *replay,
                                    uint64_t endpoint, uint64_t now_us,
                                    struct bwp_client_frame *out)
{
    struct bwp_verdict v;
    memset(out, 0, offsetof(struct bwp_client_frame, why));   /* why: written only for a refusal */
    out->why[0] = 0;
    /* rule 2: unanswerable frames */
    if (n < 4 || (n < BWP_HDR_SIZE && tr == BWP_UDP))
        return verdict_drop("frame shorter than the 24-byte header");
    if (!magic_is_bwp(buf)) {
        if (tr == BWP_UDP)
            return verdict_drop("bad magic");
        v = verdict(BWP_E_BAD_FRAME, 0, "bad magic: not a BWP frame");
        v.close = true;
        return v;
    }
    if (n < BWP_HDR_SIZE) {   /* TCP caller passed a short frame: cannot name it */
        v = verdict(BWP_E_BAD_FRAME, 0, "frame shorter than the 24-byte header");
        v.close = true;
        return v;
    }
    struct bwp_header *h = &out->h;
    bwp_get_header(buf, h);
    uint64_t rid = h->request_id;
    /* rule 3: wrong version */
    if (buf[3] != '1') {
        v = verdict(BWP_E_BAD_VERSION, rid, "unsupported BWP version (this server speaks BWP1)");
        v.close = tr == BWP_TCP;
        return v;
    }
    v = check_header_bits(h);
    if (v.code)
        return v;
    /* AUTH */
    v = check_auth(buf, n, h, lim, replay, endpoint, now_us, &out->auth_ts_us);
    if (v.code)
        return v;
    uint32_t trailer = (h->flags & BWP_FLAG_AUTH) ? BWP_TRAILER_SIZE : 0;
    /* TOO_LARGE */
    if (tr == BWP_UDP && h->length > BWP_UDP_MAX_DGRAM - BWP_HDR_SIZE)
        return verdict(BWP_E_TOO_LARGE, rid, "frame does not fit one UDP datagram");
    /* TCP: the stream reader refuses frames over the limit before they are buffered (rule 7);
     * UDP: a datagram that fits is judged by its prompt_len and its sizes, not its length */
    if (tr == BWP_TCP && (size_t)BWP_HDR_SIZE + h->length > bwp_frame_max(lim))
        return verdict_large(rid, "frame over the server's size limit", lim);
    if (h->type == BWP_GENERATE && h->length >= BWP_GEN_FIXED + trailer &&
        n >= BWP_HDR_SIZE + BWP_GEN_FIXED) {
        uint32_t plen = bwp_rd32(buf + BWP_HDR_SIZE + 28);
        if (plen > lim->max_prompt_bytes)
            return verdict_large(rid, "prompt_len over the server's limit", lim);
        /* token ids: their count is known now, so a prompt the context cannot hold is refused in
         * rule 1's place, not after a queue place (which could answer BUSY first); text and chat
         * prompts are counted when the decoder tokenizes them */
        if (buf[BWP_HDR_SIZE + 2] == BWP_PROMPT_IDS && lim->max_ctx && plen / 4 >= lim->max_ctx) {
            return verdict_fmt(out, BWP_E_TOO_LARGE, rid, "prompt of %u tokens does not fit the context of %u tokens",
                               plen / 4, lim->max_ctx);
        }
    }
    /* BAD_FRAME: header fields, sizes and payload fields (rules 4, 5) */
    if ((v = check_header_ids(h)).code)
        return v;
    if (n != (size_t)BWP_HDR_SIZE + h->length)
        return verdict(BWP_E_BAD_FRAME, rid, "datagram size is not 24 + length");
    uint32_t body = h->length - trailer;
    const uint8_t *p = buf + BWP_HDR_SIZE;
    switch (h->type) {
    case BWP_CANCEL:
    case BWP_PING:
        if (body != 0)
            return verdict(BWP_E_BAD_FRAME, rid, "CANCEL/PING carry no payload");
        break;
    case BWP_RESEND:   /* rule 14: UDP only; on TCP ignored, payload included */
        if (tr == BWP_UDP && body != 4)
            return verdict(BWP_E_BAD_FRAME, rid, "RESEND payload must be 4 bytes");
        out->from_seq = body == 4 ? bwp_rd32(p) : 0;
        break;
    case BWP_GENERATE: {
        const char *why;
        if (body >= BWP_GEN_FIXED)
            read_generate(p, &out->gen);
        if ((why = generate_frame_error(&out->gen, body)))
            return verdict(BWP_E_BAD_FRAME, rid, why);
        if ((why = generate_params_error(&out->gen, lim, out->why, sizeof out->why)))
            return verdict(BWP_E_BAD_PARAMS, rid, why);   /* static text, or out->why */
        break;
    }
    }
    return verdict(BWP_OK, rid, NULL);
}

size_t bwp_stream_need(const uint8_t *buf, size_t avail, struct bwp_verdict *v)
{
    if (avail < 4)
        return 0;
    if (!magic_is_bwp(buf)) {
        *v = verdict(BWP_E_BAD_FRAME, 0, "bad magic: not a BWP frame");
        v->close = true;
        return SIZE_MAX;
    }
    if (avail < BWP_HDR_SIZE)
        return 0;
    if (buf[3] != '1') {
        *v = verdict(BWP_E_BAD_VERSION, bwp_rd64(buf + 16),
                     "unsupported BWP version (this server speaks BWP1)");
        v->close = true;
        return SIZE_MAX;
    }
    return (size_t)BWP_HDR_SIZE + bwp_rd32(buf + 8);
}

struct bwp_verdict bwp_parse_oversize(const uint8_t *hdr, const struct bwp_limits *lim)
{
    struct bwp_header h;
    bwp_get_header(hdr, &h);
    struct bwp_verdict v = check_header_bits(&h);   /* then AUTH, then TOO_LARGE, which comes first */
    if (!v.code) {
        bool keyed = lim->key && lim->key->len > 0;
        if (!keyed && (h.flags & BWP_FLAG_AUTH))
            v = verdict_auth(h.request_id, "AUTH flag set but no key is configured");
        else if (keyed && !(h.flags & BWP_FLAG_AUTH))
            v = verdict_auth(h.request_id, "auth trailer missing");
        else
            v = verdict_large(h.request_id, "frame over the server's size limit", lim);
    }
    v.close = h.length > BWP_TCP_SKIP_MAX;
    return v;
}

/* ---- builders ---- */

size_t bwp_build_accepted(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq,
                          uint32_t queue_position, uint32_t prompt_tokens,
                          const struct bwp_key *key, uint64_t ts_us)
{
    if (cap < BWP_HDR_SIZE + 8)
        return 0;
    bwp_put_header(buf, BWP_ACCEPTED, 0, 8, seq, rid);
    bwp_wr32(buf + 24, queue_position);
    bwp_wr32(buf + 28, prompt_tokens);
    return bwp_seal(buf, 32, cap, key, ts_us);
}

size_t bwp_build_token(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq,
                       const uint32_t *ids, uint16_t n_ids, const char *text, uint16_t text_len,
                       const struct bwp_key *key, uint64_t ts_us)
{
    size_t len = 4 + 4 * (size_t)n_ids + text_len;
    if (cap < BWP_HDR_SIZE + len)
        return 0;
    bwp_put_header(buf, BWP_TOKEN, 0, (uint32_t)len, seq, rid);
    uint8_t *p = buf + BWP_HDR_SIZE;
    bwp_wr16(p, n_ids);
    bwp_wr16(p + 2, text_len);
    p += 4;
    for (uint16_t i = 0; i < n_ids; i++, p += 4)
        bwp_wr32(p, ids[i]);
    if (text_len)
        memcpy(p, text, text_len);
    return bwp_seal(buf, BWP_HDR_SIZE + len, cap, key, ts_us);
}

size_t bwp_build_pong(uint8_t *buf, size_t cap, uint64_t rid, uint32_t queue_depth,
                      uint32_t flags, const struct bwp_key *key, uint64_t ts_us)
{
    if (cap < BWP_HDR_SIZE + 8)
        return 0;
    bwp_put_header(buf, BWP_PONG, 0, 8, 0, rid);
    bwp_wr32(buf + 24, queue_depth);
    bwp_wr32(buf + 28, flags);
    return bwp_seal(buf, 32, cap, key, ts_us);
}

size_t bwp_build_done(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq,
                      const struct bwp_done *d, const struct bwp_key *key, uint64_t ts_us)
{
    if (cap < BWP_HDR_SIZE + 28)
        return 0;
    bwp_put_header(buf, BWP_DONE, 0, 28, seq, rid);
    uint8_t *p = buf + BWP_HDR_SIZE;
    p[0] = d->finish;
    p[1] = p[2] = p[3] = 0;
    bwp_wr32(p + 4, d->prompt_tokens);
    bwp_wr32(p + 8, d->cached_tokens);
    bwp_wr32(p + 12, d->completion_tokens);
    bwp_wr32(p + 16, d->queue_us);
    bwp_wr32(p + 20, d->ttft_us);
    bwp_wr32(p + 24, d->total_us);
    return bwp_seal(buf, BWP_HDR_SIZE + 28, cap, key, ts_us);
}

size_t bwp_build_error(uint8_t *buf, size_t cap, uint64_t rid, uint32_t seq, uint16_t code,
                       const char *msg, const struct bwp_key *key, uint64_t ts_us)
{
    size_t ml = msg ? strlen(msg) : 0;
    size_t room = cap > BWP_HDR_SIZE + 4 + BWP_TRAILER_SIZE ? cap - BWP_HDR_SIZE - 4 - BWP_TRAILER_SIZE : 0;
    if (cap < BWP_HDR_SIZE + 4)
        return 0;
    if (ml > room)
        ml = bwp_utf8_complete((const uint8_t *)msg, room);
    bwp_put_header(buf, BWP_ERROR, 0, (uint32_t)(4 + ml), seq, rid);
    bwp_wr16(buf + 24, code);
    bwp_wr16(buf + 26, (uint16_t)ml);
    if (ml)
        memcpy(buf + 28, msg, ml);
    return bwp_seal(buf, BWP_HDR_SIZE + 4 + ml, cap, key, ts_us);
}

size_t bwp_build_generate(uint8_t *buf, size_t cap, uint64_t rid, const struct bwp_generate *g,
                          const struct bwp_key *key, uint64_t ts_us)
{
    size_t len = BWP_GEN_FIXED + (size_t)g->prompt_len;
    if (cap < BWP_HDR_SIZE + len || len > UINT32_MAX - BWP_TRAILER_SIZE)
        return 0;
    bwp_put_header(buf, BWP_GENERATE, 0, (uint32_t)len, 0, rid);
    uint8_t *p = buf + BWP_HDR_SIZE;
    uint32_t u;
    bwp_wr16(p, g->max_tokens);
    p[2] = g->prompt_kind;
    p[3] = g->options;
    memcpy(&u, &g->temperature, 4);
    bwp_wr32(p + 4, u);
    memcpy(&u, &g->top_p, 4);
    bwp_wr32(p + 8, u);
    bwp_wr32(p + 12, g->top_k);
    bwp_wr64(p + 16, g->seed);
    bwp_wr32(p + 24, g->deadline_ms);
    bwp_wr32(p + 28, g->prompt_len);
    if (g->prompt_len)
        memcpy(p + BWP_GEN_FIXED, g->prompt, g->prompt_len);
    return bwp_seal(buf, BWP_HDR_SIZE + len, cap, key, ts_us);
}

size_t bwp_build_simple(uint8_t *buf, size_t cap, uint8_t type, uint64_t rid,
                        const struct bwp_key *key, uint64_t ts_us)
{
    if (cap < BWP_HDR_SIZE)
        return 0;
    bwp_put_header(buf, type, 0, 0, 0, rid);
    return bwp_seal(buf, BWP_HDR_SIZE, cap, key, ts_us);
}

size_t bwp_build_resend(uint8_t *buf, size_t cap, uint64_t rid, uint32_t from_seq,
                        const struct bwp_key *key, uint64_t ts_us)
{
    if (cap < BWP_HDR_SIZE + 4)
        return 0;
    bwp_put_header(buf, BWP_RESEND, 0, 4, 0, rid);
    bwp_wr32(buf + 24, from_seq);
    return bwp_seal(buf, BWP_HDR_SIZE + 4, cap, key, ts_us);
}

/* ---- server frame parser (clients) ---- */

int bwp_parse_server(const uint8_t *buf, size_t n, const struct bwp_key *key, bool require_auth,
                     struct bwp_server_frame *out)
{
    memset(out, 0, sizeof *out);
    if (n < BWP_HDR_SIZE)
        return -EBADMSG;
    if (memcmp(buf, "BWP1", 4))
        return -EPROTO;
    struct bwp_header *h = &out->h;
    bwp_get_header(buf, h);
    if (n != (size_t)BWP_HDR_SIZE + h->length || h->reserved || (h->flags & ~BWP_FLAG_AUTH))
        return -EBADMSG;
    uint32_t body = h->length;
    if (h->flags & BWP_FLAG_AUTH) {
        if (body < BWP_TRAILER_SIZE)
            return -EBADMSG;
        if (key && key->len && !mac_ok(key, buf, n))
            return -EACCES;
        body -= BWP_TRAILER_SIZE;
    } else if (require_auth &&
               !(h->type == BWP_ERROR && body >= 2 && bwp_rd16(buf + BWP_HDR_SIZE) == BWP_E_AUTH)) {
        return -EACCES;   /* rule 17: only an ERROR answering a frame that failed AUTH is unsigned */
    }
    const uint8_t *p = buf + BWP_HDR_SIZE;
    switch (h->type) {
    case BWP_ACCEPTED:
        if (body != 8)
            return -EBADMSG;
        out->u.accepted.queue_position = bwp_rd32(p);
        out->u.accepted.prompt_tokens = bwp_rd32(p + 4);
        break;
    case BWP_PONG:
        if (body != 8)
            return -EBADMSG;
        out->u.pong.queue_depth = bwp_rd32(p);
        out->u.pong.flags = bwp_rd32(p + 4);
        break;
    case BWP_TOKEN:
        if (body < 4)
            return -EBADMSG;
        out->u.token.n_ids = bwp_rd16(p);
        out->u.token.text_len = bwp_rd16(p + 2);
        if (body != 4 + 4u * out->u.token.n_ids + out->u.token.text_len)
            return -EBADMSG;
        out->u.token.ids = p + 4;
        out->u.token.text = (const char *)p + 4 + 4 * out->u.token.n_ids;
        break;
    case BWP_DONE:
        if (body != 28 || p[1] || p[2] || p[3])
            return -EBADMSG;
        out->u.done.finish = p[0];
        out->u.done.prompt_tokens = bwp_rd32(p + 4);
        out->u.done.cached_tokens = bwp_rd32(p + 8);
        out->u.done.completion_tokens = bwp_rd32(p + 12);
        out->u.done.queue_us = bwp_rd32(p + 16);
        out->u.done.ttft_us = bwp_rd32(p + 20);
        out->u.done.total_us = bwp_rd32(p + 24);
        break;
    case BWP_ERROR:
        if (body < 4)
            return -EBADMSG;
        out->u.error.code = bwp_rd16(p);
        out->u.error.msg_len = bwp_rd16(p + 2);
        if (body != 4u + out->u.error.msg_len)
            return -EBADMSG;
        out->u.error.msg = (const char *)p + 4;
        break;
    default:
        return -EBADMSG;
    }
    return 0;
}

const char *bwp_code_name(uint16_t code)
{
    static const char *const names[] = {
        "OK", "BAD_FRAME", "BAD_VERSION", "TOO_LARGE", "BUSY", "AUTH", "BAD_PARAMS",
        "DUPLICATE", "INTERNAL", "SHUTTING_DOWN", "RATE_LIMITED", "FORBIDDEN",
    };
    return code < BORA_ARRAY_LEN(names) ? names[code] : "UNKNOWN";
}

const char *bwp_finish_name(uint8_t finish)
{
    static const char *const names[] = { "eos", "max_tokens", "cancelled", "deadline", "shutdown" };
    return finish < BORA_ARRAY_LEN(names) ? names[finish] : "unknown";
}
