/* bora_client.c — `bora client`: sends one GENERATE over BWP/1 (UDP or TCP) and streams the
 * completion to stdout. Over UDP it repairs loss itself: a gap in seq or a silence triggers
 * RESEND from the first missing frame (and a lost GENERATE is sent again; the server answers
 * the copy with DUPLICATE, which concerns only that copy). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cmd/cli.h"
#include "dataplane/bwp.h"
#include "dataplane/client.h"

#define CLIENT_MAX_PROMPT   (1u << 20)
#define CLIENT_MAX_OUT_IDS  65536
#define CLIENT_RETRY_MS     300        /* UDP: silence before asking again */

static const char *const USAGE =
    "client (--udp|--tcp) HOST:PORT (--prompt TEXT | --chat FILE | --ids LIST) [-n N] [--temperature T] "
    "[--top-p P] [--top-k K] [--seed S] [--ignore-eos] [--deadline-ms MS] [--key HEX] [--timeout-ms MS] [--json]";

struct client_opts {
    const char *addr;
    bool tcp;
    struct bwp_generate g;
    uint8_t *prompt;               /* (CLIENT_MAX_PROMPT) */
    struct bwp_key key;
    int timeout_ms;
    bool json;
};

struct client_state {
    uint32_t next_seq;
    bool accepted, ended;
    uint32_t prompt_tokens, queue_position;
    uint32_t *ids;                 /* (CLIENT_MAX_OUT_IDS) */
    uint32_t n_ids;
    char *text;                    /* whole completion (json) */
    size_t text_len, text_cap;
    struct bwp_done done;
    bool is_done;
    uint16_t error;
    char error_msg[512];
};

static uint64_t now_us(int clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- options ---- */

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "bora client: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: bora %s\n", USAGE);
    return 2;
}

static int parse_ids(struct client_opts *o, const char *s)
{
    uint32_t n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || errno || v > UINT32_MAX || (*end && *end != ',') || *p == '-')
            return usage_error("--ids: expected comma-separated token ids (got '%s')", s);
        if (4 * (n + 1) > CLIENT_MAX_PROMPT)
            return usage_error("--ids: too many ids in '%.40s...'", s);
        bwp_wr32(o->prompt + 4 * n++, (uint32_t)v);
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        return usage_error("--ids: empty list%s", "");
    o->g.prompt_kind = BWP_PROMPT_IDS;
    o->g.prompt_len = 4 * n;
    return 0;
}

static int role_of(const char *r)
{
    static const char *const roles[] = { "system", "user", "assistant", "tool" };
    for (int i = 0; i < 4; i++)
        if (!strcmp(r, roles[i]))
            return i;
    return -1;
}

/* --chat FILE: JSON {"messages": [{"role": "user", "content": "..."}, ...]} or the bare array. */
static int parse_chat(struct client_opts *o, const char *path)
{
    json_error_t je;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "bora client: --chat %s: not a regular file\n", path);
        return 2;
    }
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        if (je.line > 0)
            fprintf(stderr, "bora client: --chat %s: line %d: %s\n", path, je.line, je.text);
        else   /* not a parse error: the file could not be read */
            fprintf(stderr, "bora client: --chat %s: %s\n", path, je.text);
        return 2;
    }
    json_t *msgs = json_is_array(root) ? root : json_object_get(root, "messages");
    int rc = 0;
    size_t i, at = 0;
    json_t *m;
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        fprintf(stderr, "bora client: --chat %s: expected a non-empty \"messages\" array\n", path);
        rc = 2;
    }
    /* BWP/1 chat prompts carry (role, text) messages only: tools and tool calls cannot be sent,
     * and leaving them out silently would change the conversation */
    const json_t *tools = json_is_object(root) ? json_object_get(root, "tools") : NULL;
    if (!rc && tools && !json_is_null(tools) && !(json_is_array(tools) && json_array_size(tools) == 0)) {
        fprintf(stderr, "bora client: --chat %s: has \"tools\", which a BWP/1 chat prompt cannot carry; encode it "
                        "with 'bora chat-encode MODEL %s' and send the ids with --ids\n", path, path);
        rc = 2;
    }
    json_array_foreach(msgs, i, m) {
        if (rc)
            break;
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));
        int r = role ? role_of(role) : -1;
        const json_t *calls = json_object_get(m, "tool_calls");
        const bool has_calls = calls && !json_is_null(calls) && !(json_is_array(calls) && json_array_size(calls) == 0);
        if (has_calls) {   /* a tool message's result is text (role 3); the assistant's structured calls are not */
            fprintf(stderr, "bora client: --chat %s: message %zu has tool_calls, which a BWP/1 chat prompt cannot "
                            "carry; encode the request with 'bora chat-encode' and send --ids\n", path, i);
            rc = 2;
            break;
        }
        if (r < 0 || !content) {
            fprintf(stderr, "bora client: --chat %s: message %zu needs a role (system, user, assistant, "
                    "tool) and a string content\n", path, i);
            rc = 2;
            break;
        }
        size_t len = strlen(content);
        if (at + 5 + len > CLIENT_MAX_PROMPT) {
            fprintf(stderr, "bora client: --chat %s: conversation over %u bytes\n", path, CLIENT_MAX_PROMPT);
            rc = 2;
            break;
        }
        o->prompt[at] = (uint8_t)r;
        bwp_wr32(o->prompt + at + 1, (uint32_t)len);
        memcpy(o->prompt + at + 5, content, len);
        at += 5 + len;
    }
    json_decref(root);
    o->g.prompt_kind = BWP_PROMPT_CHAT;
    o->g.prompt_len = (uint32_t)at;
    return rc;
}

static int parse_key(struct client_opts *o, const char *hex)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > BWP_KEY_MAX || n == 0)
        return usage_error("--key: expected up to 128 hex digits (got '%s')", hex);
    for (size_t i = 0; i < n; i++)   /* every character a hex digit ("%2x" took "1g" as 0x01) */
        if (!isxdigit((unsigned char)hex[i]))
            return usage_error("--key: not hex: '%s'", hex);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return usage_error("--key: not hex: '%s'", hex);
        o->key.bytes[i] = (uint8_t)v;
    }
    o->key.len = n / 2;
    return 0;
}

static int parse_number(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(d) || d < lo || d > hi) {
        fprintf(stderr, "bora client: %s: expected a number in [%g, %g] (got '%s')\n", opt, lo, hi, v);
        return 2;
    }
    *out = d;
    return 0;
}

static int parse_opts(struct client_opts *o, int argc, char **argv)
{
    o->g = (struct bwp_generate){ .max_tokens = 32, .top_p = 1, .options = BWP_OPT_IDS };
    o->timeout_ms = 120000;
    bool have_prompt = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        int rc = 0;
        if (!strcmp(a, "--json")) { o->json = true; continue; }
        if (!strcmp(a, "--ignore-eos")) { o->g.options |= BWP_OPT_IGNORE_EOS; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("usage: bora %s\n", USAGE); exit(0); }
        static const char *const valued[] = { "--udp", "--tcp", "--prompt", "--chat", "--ids", "-n", "--temperature",
                                              "--top-p", "--top-k", "--seed", "--deadline-ms", "--timeout-ms", "--key" };
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++)
            known |= !strcmp(a, valued[k]);
        if (!known)
            return usage_error("unknown option '%s'", a);
        if (!v)
            return usage_error("option '%s' needs a value", a);
        i++;
        if (!strcmp(a, "--udp") || !strcmp(a, "--tcp")) {
            if (o->addr)
                return usage_error("one server address only: --udp or --tcp, once (again at '%s')", a);
            o->addr = v;
            o->tcp = a[2] == 't';
        } else if (!strcmp(a, "--prompt")) {
            size_t n = strlen(v);
            if (n > CLIENT_MAX_PROMPT)
                return usage_error("--prompt longer than 1 MiB%s", "");
            memcpy(o->prompt, v, n);
            o->g.prompt_kind = BWP_PROMPT_TEXT;
            o->g.prompt_len = (uint32_t)n;
        } else if (!strcmp(a, "--chat")) {
            rc = parse_chat(o, v);
        } else if (!strcmp(a, "--ids")) {
            rc = parse_ids(o, v);
        } else if (!strcmp(a, "-n")) {
            if (!(rc = parse_number(a, v, 1, 65535, &d))) o->g.max_tokens = (uint16_t)d;
        } else if (!strcmp(a, "--temperature")) {
            if (!(rc = parse_number(a, v, 0, 100, &d))) o->g.temperature = (float)d;
        } else if (!strcmp(a, "--top-p")) {
            if (!(rc = parse_number(a, v, 1e-9, 1, &d))) o->g.top_p = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            if (!(rc = parse_number(a, v, 0, 4294967295.0, &d))) o->g.top_k = (uint32_t)d;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->g.seed = strtoull(v, &end, 0);
            if (*end || errno || v[0] == '-')
                return usage_error("--seed: expected an unsigned integer (got '%s')", v);
        } else if (!strcmp(a, "--deadline-ms")) {
            if (!(rc = parse_number(a, v, 0, 4294967295.0, &d))) o->g.deadline_ms = (uint32_t)d;
        } else if (!strcmp(a, "--timeout-ms")) {
            if (!(rc = parse_number(a, v, 1, 86400000, &d))) o->timeout_ms = (int)d;
        } else if (!strcmp(a, "--key")) {
            rc = parse_key(o, v);
        } else {
            return usage_error("unknown option '%s'", a);
        }
        if (rc)
            return rc;
        if (!strcmp(a, "--prompt") || !strcmp(a, "--chat") || !strcmp(a, "--ids")) {
            if (have_prompt)
                return usage_error("give one of --prompt, --chat, --ids (second: %s)", a);
            have_prompt = true;
        }
    }
    if (!o->addr)
        return usage_error("--udp HOST:PORT or --tcp HOST:PORT is required%s", "");
    {   /* the address's form is an option's: refused here (exit 2, nothing on stdout); a host that does
         * not resolve or answer is the transport's (exit 1) */
        const char *colon = strrchr(o->addr, ':');
        char *end = NULL;
        const long port = colon && colon[1] ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == o->addr || !end || *end || port < 1 || port > 65535)
            return usage_error(o->tcp ? "--tcp: expected HOST:PORT with a port 1..65535 (got '%s')"
                                      : "--udp: expected HOST:PORT with a port 1..65535 (got '%s')",
                               o->addr);
    }
    if (!have_prompt)
        return usage_error("one of --prompt, --chat, --ids is required%s", "");
    o->g.prompt = o->prompt;
    return 0;
}

/* ---- the exchange ---- */

static void text_add(struct client_state *st, const char *s, size_t n, bool live)
{
    if (live && n) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
    if (st->text_len + n + 1 > st->text_cap) {
        size_t cap = (st->text_cap + n + 1) * 2;
        char *t = realloc(st->text, cap);
        if (!t)
            return;
        st->text = t;
        st->text_cap = cap;
    }
    memcpy(st->text + st->text_len, s, n);
    st->text_len += n;
    st->text[st->text_len] = 0;
}

/* Applies one in-order frame. */
static void apply(struct client_state *st, const struct bwp_server_frame *f, bool live)
{
    st->next_seq = f->h.seq + 1;
    switch (f->h.type) {
    case BWP_ACCEPTED:
        st->accepted = true;
        st->prompt_tokens = f->u.accepted.prompt_tokens;
        st->queue_position = f->u.accepted.queue_position;
        break;
    case BWP_TOKEN:
        for (uint16_t k = 0; k < f->u.token.n_ids && st->n_ids < CLIENT_MAX_OUT_IDS; k++)
            st->ids[st->n_ids++] = bwp_rd32(f->u.token.ids + 4 * k);
        text_add(st, f->u.token.text, f->u.token.text_len, live);
        break;
    case BWP_DONE:
        st->done = f->u.done;
        st->is_done = st->ended = true;
        break;
    case BWP_ERROR:
        st->error = f->u.error.code;
        {   /* cut at a whole UTF-8 character when the message is longer than the buffer */
            size_t n = f->u.error.msg_len < sizeof st->error_msg - 1 ? f->u.error.msg_len : sizeof st->error_msg - 1;
            if (n < f->u.error.msg_len)
                n = bwp_utf8_complete((const uint8_t *)f->u.error.msg, n);
            memcpy(st->error_msg, f->u.error.msg, n);
            st->error_msg[n] = 0;
        }
        st->ended = true;
        break;
    }
}

static int send_generate(struct bwp_conn *c, const struct client_opts *o, uint64_t rid, uint8_t *buf, size_t cap)
{
    size_t n = bwp_build_generate(buf, cap, rid, &o->g, o->key.len ? &o->key : NULL, now_us(CLOCK_REALTIME));
    if (!n)
        return -EMSGSIZE;
    return bwp_conn_send(c, buf, n);
}

static void send_resend(struct bwp_conn *c, const struct client_opts *o, uint64_t rid, uint32_t from)
{
    uint8_t b[128];
    size_t n = bwp_build_resend(b, sizeof b, rid, from, o->key.len ? &o->key : NULL, now_us(CLOCK_REALTIME));
    bwp_conn_send(c, b, n);
}

static int exchange(struct bwp_conn *c, const struct client_opts *o, uint64_t rid, struct client_state *st)
{
    size_t cap = BWP_HDR_SIZE + BWP_GEN_FIXED + CLIENT_MAX_PROMPT + BWP_TRAILER_SIZE;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    int rc = send_generate(c, o, rid, buf, cap);
    uint64_t start = now_us(CLOCK_MONOTONIC);
    const struct bwp_key *key = o->key.len ? &o->key : NULL;
    while (rc == 0 && !st->ended) {
        int left = o->timeout_ms - (int)((now_us(CLOCK_MONOTONIC) - start) / 1000);
        if (left <= 0) {
            /* giving up: over UDP the server would decode on for nobody, so CANCEL it (rule 13;
             * twice against a lost datagram; over TCP closing the connection cancels) */
            if (!c->tcp) {
                uint8_t cb[128];
                for (int i = 0; i < 2; i++) {   /* each its own timestamp: a keyed copy is no replay */
                    size_t cn = bwp_build_simple(cb, sizeof cb, BWP_CANCEL, rid, key, now_us(CLOCK_REALTIME) + (uint64_t)i);
                    if (cn)
                        bwp_conn_send(c, cb, cn);
                }
            }
            rc = -ETIMEDOUT;
            break;
        }
        int wait = c->tcp ? left : (left < CLIENT_RETRY_MS ? left : CLIENT_RETRY_MS);
        long n = bwp_conn_recv(c, buf, cap, wait);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0) {                      /* UDP silence: ask again */
            if (!st->accepted && st->next_seq == 0)
                rc = send_generate(c, o, rid, buf, cap);
            send_resend(c, o, rid, st->next_seq);
            continue;
        }
        struct bwp_server_frame f;
        int pr = bwp_parse_server(buf, (size_t)n, key, key != NULL, &f);
        if (pr < 0) {
            fprintf(stderr, "bora client: dropped a malformed server frame (%s)\n",
                    pr == -EACCES ? "auth trailer missing or wrong" : "bad layout");
            continue;
        }
        if (f.h.request_id == 0 && f.h.type == BWP_ERROR) {   /* the server could not name us */
            apply(st, &f, false);
            break;
        }
        if (f.h.request_id != rid)
            continue;
        if (f.h.type == BWP_ERROR && f.u.error.code == BWP_E_DUPLICATE)
            continue;                      /* our retransmitted GENERATE: concerns only the copy */
        if (f.h.seq < st->next_seq)
            continue;                      /* already have it */
        if (f.h.seq > st->next_seq) {      /* gap: drop it, ask from the first missing frame */
            if (!c->tcp)
                send_resend(c, o, rid, st->next_seq);
            continue;
        }
        apply(st, &f, !o->json);
    }
    free(buf);
    return rc;
}

/* A string as JSON, or null when its bytes are not UTF-8 (a server that does not follow BWP/1). */
static json_t *json_text(const char *s, size_t n)
{
    json_t *t = json_stringn(s ? s : "", n);
    return t ? t : json_null();
}

/* --json: one object with the ids and text received, then what ended the exchange: the
 * server's DONE (finish, counts, timings) or ERROR (code name, number, message), or, when
 * transport is not NULL, error "TRANSPORT" and why no complete answer came (no connection, a
 * timeout, a closed connection), so a script reading stdout always learns the outcome. */
static void print_json(const struct client_state *st, const char *transport)
{
    json_t *ids = json_array();
    for (uint32_t i = 0; i < st->n_ids; i++)
        json_array_append_new(ids, json_integer(st->ids[i]));
    json_t *o = json_object();
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "text", json_text(st->text, st->text_len));
    if (transport) {
        json_object_set_new(o, "error", json_string("TRANSPORT"));
        json_object_set_new(o, "error_code", json_null());   /* no BWP/1 code: nothing came */
        json_object_set_new(o, "message", json_text(transport, strlen(transport)));
    } else if (st->is_done) {
        json_object_set_new(o, "finish", json_string(bwp_finish_name(st->done.finish)));
        json_object_set_new(o, "prompt_tokens", json_integer(st->done.prompt_tokens));
        json_object_set_new(o, "cached_tokens", json_integer(st->done.cached_tokens));
        json_object_set_new(o, "completion_tokens", json_integer(st->done.completion_tokens));
        json_object_set_new(o, "queue_us", json_integer(st->done.queue_us));
        json_object_set_new(o, "ttft_us", json_integer(st->done.ttft_us));
        json_object_set_new(o, "total_us", json_integer(st->done.total_us));
    } else {
        json_object_set_new(o, "error", json_string(bwp_code_name(st->error)));
        json_object_set_new(o, "error_code", json_integer(st->error));
        json_object_set_new(o, "message", json_text(st->error_msg, strlen(st->error_msg)));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

int cmd_client(int argc, char **argv)
{
    struct client_opts o;
    memset(&o, 0, sizeof o);
    struct client_state st;
    memset(&st, 0, sizeof st);
    o.prompt = malloc(CLIENT_MAX_PROMPT);
    st.ids = malloc(sizeof *st.ids * CLIENT_MAX_OUT_IDS);
    int status = 1;
    struct bwp_conn c = { .fd = -1 };
    if (!o.prompt || !st.ids) {
        fprintf(stderr, "bora client: out of memory\n");
        goto out;
    }
    if ((status = parse_opts(&o, argc, argv)) != 0)
        goto out;
    status = 1;
    struct bora_err err = { "" };
    if (bwp_conn_open(&c, o.addr, o.tcp, &err) < 0) {
        fprintf(stderr, "bora client: %s\n", err.msg);
        if (o.json)
            print_json(&st, err.msg);
        goto out;
    }
    uint64_t rid = now_us(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 40);
    rid |= 1;
    int rc = exchange(&c, &o, rid, &st);
    if (rc < 0 && !st.ended) {
        snprintf(err.msg, sizeof err.msg, "%s %s: %s", o.tcp ? "tcp" : "udp", o.addr,
                 rc == -ETIMEDOUT ? (o.tcp ? "no complete answer before --timeout-ms (connection closed, which cancels it)"
                                           : "no complete answer before --timeout-ms (CANCEL sent)") :
                 rc == -EPIPE ? "server closed the connection" :
                 rc == -EPROTO ? "the reply is not BWP/1 (it does not start with \"BWP1\"): is this a bora server's address?" :
                 strerror(-rc));
        fprintf(stderr, "bora client: %s\n", err.msg);
        if (o.json)
            print_json(&st, err.msg);
        goto out;
    }
    if (o.json) {
        print_json(&st, NULL);
    } else if (st.is_done) {
        if (st.text_len == 0)              /* a server without a tokenizer: show the ids */
            for (uint32_t i = 0; i < st.n_ids; i++)
                printf("%s%u", i ? " " : "", st.ids[i]);
        printf("\n");
    }
    if (st.is_done) {
        fprintf(stderr, "bora client: done (%s): prompt %u tokens (%u from the prefix cache), completion %u, "
                "queue %.3f ms, ttft %.3f ms, total %.3f ms\n", bwp_finish_name(st.done.finish),
                st.done.prompt_tokens, st.done.cached_tokens, st.done.completion_tokens, st.done.queue_us / 1e3,
                st.done.ttft_us / 1e3,
                st.done.total_us / 1e3);
        status = 0;
    } else {
        fprintf(stderr, "bora client: ERROR %s (%u): %s\n", bwp_code_name(st.error), st.error, st.error_msg);
    }
out:
    bwp_conn_close(&c);
    free(o.prompt);
    free(st.ids);
    free(st.text);
    return status;
}
