/* chat.c — the instruct chat template of Mistral's models as mistral-common writes it
 * (v3: [INST]…[/INST] control tokens, system prompt and [AVAILABLE_TOOLS] before the
 * last user message, [TOOL_CALLS], [TOOL_RESULTS]; v7 (Tekken): system messages as
 * [SYSTEM_PROMPT]…[/SYSTEM_PROMPT] in place; v1: "[INST] … [/INST]" as text), plus the
 * ChatCompletionRequest JSON front that re-serialises tools and calls as Python's json.dumps. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

/* ---- growing buffers -------------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const void *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Ids out: counts past cap so the caller learns the size needed. */
struct idout {
    int32_t *ids;
    size_t cap, n;
};

static void out_id(struct idout *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

static int out_text(const struct tokenizer *t, struct idout *o, const char *s, size_t len,
                    struct bora_err *err)
{
    size_t got = 0;
    size_t room = o->n < o->cap ? o->cap - o->n : 0;
    int rc = tokenizer_encode(t, s, len, false, room ? o->ids + o->n : NULL, room, &got, err);
    if (rc && rc != -ENOSPC)
        return rc;
    o->n += got;
    return 0;
}

/* ---- the template ----------------------------------------------------------------------- */

/* One message after JSON processing: for tool calls / results, text is the JSON to encode. */
struct chat_item {
    int role;
    const char *text;
    size_t len;
    bool tool_calls;   /* assistant: text is the [TOOL_CALLS] JSON */
    bool prefix;       /* assistant: the start of the answer to continue, no EOS (last message only) */
    const char *raw;   /* the message's own content (v7: assistant text before [TOOL_CALLS], */
    size_t raw_len;    /* tool result as given) */
    const char *call_id;   /* tool: tool_call_id (v7 writes it after [TOOL_RESULTS]) or NULL */
    size_t call_id_len;
};

/* mistral-common (v2 and later) encodes assistant text with trailing spaces stripped. */
static size_t rstrip_spaces(const char *s, size_t n)
{
    while (n && s[n - 1] == ' ')
        n--;
    return n;
}

static const char *role_name(int role)
{
    static const char *const names[] = { "system", "user", "assistant", "tool" };
    return role >= 0 && role < 4 ? names[role] : "?";
}

/* "a system", "an assistant", ... for messages */
static const char *role_a(int role)
{
    static const char *const names[] = { "a system", "a user", "an assistant", "a tool" };
    return role >= 0 && role < 4 ? names[role] : "an unknown";
}

/* "\n\n".join(system texts) + "\n\n" + text, or NULL when there is no system text. */
static int join_system(const struct chat_item *m, size_t n, const struct chat_item *user,
                       struct sbuf *sb)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].role != CHAT_ROLE_SYSTEM)
            continue;
        if (sb->n)
            sb_put(sb, "\n\n", 2);
        sb_put(sb, m[i].text, m[i].len);
    }
    if (sb->n) {
        sb_put(sb, "\n\n", 2);
        sb_put(sb, user->text, user->len);
    }
    return sb->oom ? -ENOMEM : 0;
}

static int encode_user_v3(const struct tokenizer *t, struct idout *o, const struct chat_item *u,
                          const char *sys, size_t sys_len, struct bora_err *err)
{
    out_id(o, t->chat_id[CHAT_TOK_INST]);
    int rc = sys ? out_text(t, o, sys, sys_len, err) : out_text(t, o, u->text, u->len, err);
    out_id(o, t->chat_id[CHAT_TOK_INST_END]);
    return rc;
}

/* v7: each system message is its own [SYSTEM_PROMPT] text [/SYSTEM_PROMPT] block, where it
 * stands (mistral-common's v7 normalizer keeps system messages apart). */
static int encode_system_v7(const struct tokenizer *t, struct idout *o, const struct chat_item *it,
                            struct bora_err *err)
{
    out_id(o, t->chat_id[CHAT_TOK_SYSTEM_PROMPT]);
    int rc = out_text(t, o, it->text, it->len, err);
    out_id(o, t->chat_id[CHAT_TOK_SYSTEM_PROMPT_END]);
    return rc;
}

/* v7 tool result: [TOOL_RESULTS] call id [TOOL_CONTENT] content as given [/TOOL_RESULTS]. */
static int encode_tool_v7(const struct tokenizer *t, struct idout *o, const struct chat_item *it,
                          struct bora_err *err)
{
    out_id(o, t->chat_id[CHAT_TOK_TOOL_RESULTS]);
    int rc = out_text(t, o, it->call_id ? it->call_id : "", it->call_id_len, err);
    out_id(o, t->chat_id[CHAT_TOK_TOOL_CONTENT]);
    if (rc == 0)
        rc = out_text(t, o, it->raw ? it->raw : "", it->raw_len, err);
    out_id(o, t->chat_id[CHAT_TOK_TOOL_RESULTS_END]);
    return rc;
}

static int encode_v3(const struct tokenizer *t, const struct chat_item *m, size_t n, size_t last_user,
                     const char *tools, size_t tools_len, const struct sbuf *sys, bool v7,
                     struct idout *o, struct bora_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct chat_item *it = &m[i];
        switch (it->role) {
        case CHAT_ROLE_SYSTEM:
            if (v7)
                rc = encode_system_v7(t, o, it, err);
            break;
        case CHAT_ROLE_USER:
            if (i == last_user && tools) {
                out_id(o, t->chat_id[CHAT_TOK_AVAILABLE_TOOLS]);
                rc = out_text(t, o, tools, tools_len, err);
                out_id(o, t->chat_id[CHAT_TOK_AVAILABLE_TOOLS_END]);
            }
            if (rc == 0)
                rc = encode_user_v3(t, o, it, i == last_user && sys->n && !v7 ? sys->p : NULL,
                                    sys->n, err);
            break;
        case CHAT_ROLE_ASSISTANT:
            if (v7 && it->tool_calls && it->raw_len)   /* v7: text, then the calls */
                rc = out_text(t, o, it->raw, rstrip_spaces(it->raw, it->raw_len), err);
            if (it->tool_calls)
                out_id(o, t->chat_id[CHAT_TOK_TOOL_CALLS]);
            if (rc == 0)
                rc = out_text(t, o, it->text, it->tool_calls ? it->len : rstrip_spaces(it->text, it->len),
                              err);
            if (!it->prefix)
                out_id(o, t->eos_id);
            break;
        default:   /* tool */
            if (v7) {
                rc = encode_tool_v7(t, o, it, err);
                break;
            }
            out_id(o, t->chat_id[CHAT_TOK_TOOL_RESULTS]);
            rc = out_text(t, o, it->text, it->len, err);
            out_id(o, t->chat_id[CHAT_TOK_TOOL_RESULTS_END]);
            break;
        }
    }
    return rc;
}

/* v1: "[INST] {system}\n\n{user} [/INST]" as plain text, system prompt on the first user turn. */
static int encode_v1(const struct tokenizer *t, const struct chat_item *m, size_t n, size_t first_user,
                     const struct sbuf *sys, struct idout *o, struct bora_err *err)
{
    int rc = 0;
    struct sbuf b = { 0 };
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct chat_item *it = &m[i];
        if (it->role == CHAT_ROLE_USER) {
            b.n = 0;
            sb_str(&b, "[INST] ");
            if (i == first_user && sys->n)
                sb_put(&b, sys->p, sys->n);
            else
                sb_put(&b, it->text, it->len);
            sb_str(&b, " [/INST]");
            rc = b.oom ? bora_errf(err, -ENOMEM, "out of memory") : out_text(t, o, b.p, b.n, err);
        } else if (it->role == CHAT_ROLE_ASSISTANT) {
            rc = out_text(t, o, it->text, it->len, err);
            if (!it->prefix)
                out_id(o, t->eos_id);
        }
    }
    free(b.p);
    return rc;
}

/* mistral-common's structure (MistralRequestValidator._validate_message_order and
 * _validate_last_message): which role may follow which, and no plain assistant message last (a
 * system message last is folded into the system prompt, as mistral-common does). */
int chat_order_step(size_t i, int prev, int role, struct bora_err *err)
{
    static const unsigned follows[4] = {
        [CHAT_ROLE_SYSTEM] = 1u << CHAT_ROLE_SYSTEM | 1u << CHAT_ROLE_USER | 1u << CHAT_ROLE_ASSISTANT,
        [CHAT_ROLE_USER] = 1u << CHAT_ROLE_SYSTEM | 1u << CHAT_ROLE_USER | 1u << CHAT_ROLE_ASSISTANT,
        [CHAT_ROLE_ASSISTANT] = 1u << CHAT_ROLE_USER | 1u << CHAT_ROLE_ASSISTANT | 1u << CHAT_ROLE_TOOL,
        [CHAT_ROLE_TOOL] = 1u << CHAT_ROLE_ASSISTANT | 1u << CHAT_ROLE_TOOL,
    };
    if (prev < CHAT_ROLE_SYSTEM || prev > CHAT_ROLE_TOOL || role < CHAT_ROLE_SYSTEM || role > CHAT_ROLE_TOOL)
        return bora_errf(err, -EINVAL, "message %zu: unknown role %d (0 system, 1 user, 2 assistant, 3 tool)", i,
                         role < CHAT_ROLE_SYSTEM || role > CHAT_ROLE_TOOL ? role : prev);
    if (!(follows[prev] & 1u << role))
        return bora_errf(err, -EINVAL, "message %zu: %s message cannot follow %s message (mistral-common's "
                         "order: after a system or user message a system, user or assistant message; after an "
                         "assistant message a user, assistant or tool message; after a tool result an assistant "
                         "message or another result)", i, role_a(role), role_a(prev));
    return 0;
}

int chat_order_end(size_t n, bool has_user, int last_role, bool last_prefix, struct bora_err *err)
{
    if (!has_user)
        return bora_errf(err, -EINVAL, "the conversation has no user message");
    if (last_role == CHAT_ROLE_ASSISTANT && !last_prefix)
        return bora_errf(err, -EINVAL, "message %zu: the conversation ends with an assistant message; it must end "
                         "with the user's message, a tool result or a system message (or, in a JSON request, an "
                         "assistant message with \"prefix\": true to continue)", n - 1);
    return 0;
}

static bool chat_is_v7(const struct tokenizer *t)
{
    return t->chat_v7 && t->chat_id[CHAT_TOK_INST] >= 0 && t->chat_id[CHAT_TOK_INST_END] >= 0
           && t->chat_id[CHAT_TOK_SYSTEM_PROMPT] >= 0 && t->chat_id[CHAT_TOK_SYSTEM_PROMPT_END] >= 0;
}

static int chat_encode_items(const struct tokenizer *t, const struct chat_item *m, size_t n,
                             const char *tools, size_t tools_len, int32_t *ids, size_t cap,
                             size_t *n_out, struct bora_err *err)
{
    *n_out = 0;
    if (t->kind != TOKENIZER_TEKKEN && t->chat_id[CHAT_TOK_SYSTEM_PROMPT] >= 0)
        return bora_errf(err, -ENOTSUP, "the vocabulary has [SYSTEM_PROMPT]: its v7 instruct format is "
                         "not implemented for SentencePiece models");
    bool v3 = t->chat_id[CHAT_TOK_INST] >= 0 && t->chat_id[CHAT_TOK_INST_END] >= 0;
    bool v7 = chat_is_v7(t);
    size_t first_user = n, last_user = n;
    for (size_t i = 0; i < n; i++) {
        if (m[i].role < CHAT_ROLE_SYSTEM || m[i].role > CHAT_ROLE_TOOL)
            return bora_errf(err, -EINVAL, "message %zu: unknown role %d (0 system, 1 user, 2 assistant, 3 tool)",
                             i, m[i].role);
        if (m[i].len && !m[i].text)
            return bora_errf(err, -EINVAL, "message %zu: no text", i);
        if (utf8_validate((const uint8_t *)m[i].text, m[i].len) != m[i].len)
            return bora_errf(err, -EINVAL, "message %zu (%s): invalid UTF-8 at byte %zu", i,
                             role_name(m[i].role), utf8_validate((const uint8_t *)m[i].text, m[i].len));
        if (m[i].role == CHAT_ROLE_USER) {
            if (first_user == n)
                first_user = i;
            last_user = i;
        }
        if (!v3 && (m[i].role == CHAT_ROLE_TOOL || m[i].tool_calls))
            return bora_errf(err, -ENOTSUP, "message %zu: tool messages need a v3 vocabulary ([TOOL_CALLS])", i);
        if (v3 && (m[i].role == CHAT_ROLE_TOOL || m[i].tool_calls)
            && (t->chat_id[CHAT_TOK_TOOL_CALLS] < 0 || t->chat_id[CHAT_TOK_TOOL_RESULTS] < 0
                || t->chat_id[CHAT_TOK_TOOL_RESULTS_END] < 0))
            return bora_errf(err, -ENOTSUP, "message %zu: the vocabulary has no tool tokens", i);
        if (v7 && m[i].role == CHAT_ROLE_TOOL && t->chat_id[CHAT_TOK_TOOL_CONTENT] < 0)
            return bora_errf(err, -ENOTSUP, "message %zu: the vocabulary has no [TOOL_CONTENT]", i);
    }
    int rc;
    if (last_user == n)
        return chat_order_end(n, false, 0, false, err);   /* "no user message" */
    for (size_t i = 1; i < n; i++)
        if ((rc = chat_order_step(i, m[i - 1].role, m[i].role, err)))
            return rc;
    if ((rc = chat_order_end(n, true, m[n - 1].role, m[n - 1].prefix, err)))
        return rc;
    if (tools && (!v3 || t->chat_id[CHAT_TOK_AVAILABLE_TOOLS] < 0))
        return bora_errf(err, -ENOTSUP, "tools need a v3 vocabulary ([AVAILABLE_TOOLS])");
    struct sbuf sys = { 0 };
    rc = join_system(m, n, v3 ? &m[last_user] : &m[first_user], &sys);
    if (rc) {
        free(sys.p);
        return bora_errf(err, rc, "out of memory");
    }
    struct idout o = { ids, cap, 0 };
    if (t->bos_id >= 0)
        out_id(&o, t->bos_id);
    rc = v3 ? encode_v3(t, m, n, last_user, tools, tools_len, &sys, v7, &o, err)
            : encode_v1(t, m, n, first_user, &sys, &o, err);
    free(sys.p);
    *n_out = o.n;
    if (rc == 0 && o.n > cap)
        rc = -ENOSPC;
    return rc;
}

int chat_encode_messages(const struct tokenizer *t, const struct chat_message *m, size_t n,
                         int32_t *ids, size_t cap, size_t *n_out, struct bora_err *err)
{
    struct chat_item *items = malloc((n ? n : 1) * sizeof *items);
    if (!items)
        return bora_errf(err, -ENOMEM, "out of memory for %zu messages", n);
    for (size_t i = 0; i < n; i++)
        items[i] = (struct chat_item){ m[i].role, m[i].text, m[i].len, false, false, m[i].text,
                                       m[i].len, NULL, 0 };
    int rc = chat_encode_items(t, items, n, NULL, 0, ids, cap, n_out, err);
    free(items);
    return rc;
}

/* ---- Python json.dumps ------------------------------------------------------------------ */

/* repr(float): shortest round-trip digits; fixed notation for 1e-4 <= |x| < 1e16. */
static void py_float(struct sbuf *b, double x)
{
    char buf[64];
    if (isnan(x)) { sb_str(b, "NaN"); return; }
    if (isinf(x)) { sb_str(b, x < 0 ? "-Infinity" : "Infinity"); return; }
    int p;
    for (p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    snprintf(buf, sizeof buf, "%.*e", p - 1, x);
    /* buf = [-]d[.ddd]e±XX */
    char digits[32];
    size_t nd = 0;
    const char *s = buf;
    bool neg = *s == '-';
    if (neg) s++;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    int exp = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) sb_put(b, "-", 1);
    if (exp >= -5 + 1 && exp < 16) {   /* fixed: -4 <= exp < 16 */
        if (exp < 0) {
            sb_str(b, "0.");
            for (int i = -1; i > exp; i--) sb_put(b, "0", 1);
            sb_put(b, digits, nd);
        } else {
            for (int i = 0; i <= exp; i++) sb_put(b, i < (int)nd ? &digits[i] : "0", 1);
            sb_put(b, ".", 1);
            if ((int)nd > exp + 1) sb_put(b, digits + exp + 1, nd - (size_t)exp - 1);
            else sb_put(b, "0", 1);
        }
    } else {
        sb_put(b, digits, 1);
        if (nd > 1) { sb_put(b, ".", 1); sb_put(b, digits + 1, nd - 1); }
        snprintf(buf, sizeof buf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        sb_str(b, buf);
    }
}

/* json.dumps(s, ensure_ascii=False): only ", \ and control characters are escaped. */
static void py_string(struct sbuf *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) { snprintf(u, sizeof u, "\\u%04x", c); esc = u; }
        }
        if (esc) {
            sb_put(b, s + run, i - run);
            sb_str(b, esc);
            run = i + 1;
        }
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

static void py_dump(struct sbuf *b, const json_t *v, int depth);

static void py_object(struct sbuf *b, const json_t *v, int depth)
{
    const char *k;
    json_t *x;
    bool first = true;
    sb_put(b, "{", 1);
    json_object_foreach((json_t *)v, k, x) {
        if (!first) sb_put(b, ", ", 2);
        first = false;
        py_string(b, k, strlen(k));
        sb_put(b, ": ", 2);
        py_dump(b, x, depth + 1);
    }
    sb_put(b, "}", 1);
}

static void py_dump(struct sbuf *b, const json_t *v, int depth)
{
    char num[32];
    size_t i;
    json_t *x;
    if (depth > 256) { b->oom = true; return; }   /* jansson limits depth too; be safe */
    switch (json_typeof(v)) {
    case JSON_OBJECT: py_object(b, v, depth); break;
    case JSON_ARRAY:
        sb_put(b, "[", 1);
        json_array_foreach((json_t *)v, i, x) {
            if (i) sb_put(b, ", ", 2);
            py_dump(b, x, depth + 1);
        }
        sb_put(b, "]", 1);
        break;
    case JSON_STRING: py_string(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_str(b, num);
        break;
    case JSON_REAL: py_float(b, json_real_value(v)); break;
    case JSON_TRUE: sb_str(b, "true"); break;
    case JSON_FALSE: sb_str(b, "false"); break;
    default: sb_str(b, "null"); break;
    }
}

/* ---- ChatCompletionRequest JSON --------------------------------------------------------- */

struct req {
    json_t *root;
    json_t *made;            /* array owning the objects built for tool calls / results */
    struct chat_item *items;
    struct sbuf *texts;      /* one per message that needs generated JSON text */
    size_t n;
    struct sbuf tools;
    bool v7;                 /* the tokenizer's format allows content with tool_calls */
};

static int role_parse(const char *s)
{
    static const char *const names[] = { "system", "user", "assistant", "tool" };
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i]))
            return i;
    return -1;
}

/* json.loads(s) if it parses, else the string itself (mistral-common's _parse_json_content). */
static json_t *parse_or_string(json_t *s)
{
    json_error_t je;
    json_t *v = json_loadb(json_string_value(s), json_string_length(s),
                           JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    return v ? v : json_incref(s);
}

static int req_tool_calls(struct req *r, size_t i, json_t *calls, struct sbuf *out, struct bora_err *err)
{
    json_t *list = json_array();
    size_t k;
    json_t *c;
    int rc = 0;
    json_array_foreach(calls, k, c) {
        json_t *fn = json_object_get(c, "function");
        json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        json_t *id = json_object_get(c, "id");
        if (!json_is_string(name) || !args || (id && !json_is_string(id) && !json_is_null(id))) {
            rc = bora_errf(err, -EINVAL, "messages[%zu].tool_calls[%zu]: needs function.name (string), "
                           "function.arguments and a string id", i, k);
            break;
        }
        json_t *o = json_object();
        json_object_set(o, "name", name);
        json_object_set_new(o, "arguments", json_is_string(args) ? parse_or_string(args) : json_incref(args));
        if (json_is_string(id) && strcmp(json_string_value(id), "null"))
            json_object_set(o, "id", id);
        json_array_append_new(list, o);
    }
    if (rc == 0)
        py_dump(out, list, 0);
    json_decref(list);
    (void)r;
    return rc;
}

static int req_tool_result(size_t i, json_t *msg, json_t *content, struct sbuf *out, struct bora_err *err)
{
    json_t *id = json_object_get(msg, "tool_call_id");
    if (!json_is_string(id))
        return bora_errf(err, -EINVAL, "messages[%zu]: a tool message needs a string tool_call_id", i);
    json_t *o = json_object();
    json_object_set_new(o, "content", content ? parse_or_string(content) : json_string(""));
    json_object_set(o, "call_id", id);
    py_dump(out, o, 0);
    json_decref(o);
    return 0;
}

static int req_message(struct req *r, size_t i, json_t *msg, struct bora_err *err)
{
    if (!json_is_object(msg))
        return bora_errf(err, -EINVAL, "messages[%zu] is not an object", i);
    const char *rs = json_string_value(json_object_get(msg, "role"));
    int role = role_parse(rs);
    if (role < 0)
        return bora_errf(err, -EINVAL, "messages[%zu].role '%s' is not system, user, assistant or tool",
                         i, rs ? rs : "(missing)");
    json_t *content = json_object_get(msg, "content");
    if (content && !json_is_string(content) && !json_is_null(content))
        return bora_errf(err, -EINVAL, "messages[%zu].content is not a string", i);
    if (json_is_null(content))
        content = NULL;
    json_t *calls = json_object_get(msg, "tool_calls");
    if (calls && !json_is_array(calls) && !json_is_null(calls))
        return bora_errf(err, -EINVAL, "messages[%zu].tool_calls is not an array", i);
    bool has_calls = json_is_array(calls) && json_array_size(calls) > 0;
    struct chat_item *it = &r->items[i];
    it->role = role;
    if (json_is_true(json_object_get(msg, "prefix"))) {
        if (role != CHAT_ROLE_ASSISTANT || i + 1 != r->n)
            return bora_errf(err, -EINVAL, "messages[%zu]: only a final assistant message may be a prefix", i);
        it->prefix = true;
    }
    it->text = content ? json_string_value(content) : "";
    it->len = content ? json_string_length(content) : 0;
    it->raw = it->text;
    it->raw_len = it->len;
    if (role == CHAT_ROLE_ASSISTANT) {
        if (has_calls && content && it->len && !r->v7)
            return bora_errf(err, -EINVAL, "messages[%zu]: an assistant message has content or tool_calls, not both", i);
        if (!has_calls && !content)
            return bora_errf(err, -EINVAL, "messages[%zu]: an assistant message needs content or tool_calls", i);
        if (has_calls) {
            int rc = req_tool_calls(r, i, calls, &r->texts[i], err);
            if (rc)
                return rc;
            it->tool_calls = true;
        }
    } else if (role == CHAT_ROLE_TOOL) {
        int rc = req_tool_result(i, msg, content, &r->texts[i], err);
        if (rc)
            return rc;
        json_t *id = json_object_get(msg, "tool_call_id");   /* a string: checked above */
        it->call_id = json_string_value(id);
        it->call_id_len = json_string_length(id);
    } else if (!content) {
        return bora_errf(err, -EINVAL, "messages[%zu]: a %s message needs content", i, rs);
    }
    if (r->texts[i].n || r->texts[i].oom) {
        if (r->texts[i].oom)
            return bora_errf(err, -ENOMEM, "out of memory");
        it->text = r->texts[i].p;
        it->len = r->texts[i].n;
    }
    return 0;
}

/* tools → [{"type": "function", "function": {"name", "description", "parameters"}}] */
static int req_tools(struct req *r, json_t *tools, struct bora_err *err)
{
    json_t *list = json_array();
    size_t k;
    json_t *tl;
    int rc = 0;
    json_array_foreach(tools, k, tl) {
        json_t *fn = json_object_get(tl, "function");
        json_t *name = json_object_get(fn, "name"), *desc = json_object_get(fn, "description");
        json_t *params = json_object_get(fn, "parameters");
        if (!json_is_object(fn) || !json_is_string(name) || (desc && !json_is_string(desc))
            || (params && !json_is_object(params))) {
            rc = bora_errf(err, -EINVAL, "tools[%zu]: needs function.name (string), optional "
                           "description (string) and parameters (object)", k);
            break;
        }
        json_t *f = json_object(), *o = json_object();
        json_object_set(f, "name", name);
        json_object_set_new(f, "description", desc ? json_incref(desc) : json_string(""));
        json_object_set_new(f, "parameters", params ? json_incref(params) : json_object());
        json_object_set_new(o, "type", json_string("function"));
        json_object_set_new(o, "function", f);
        json_array_append_new(list, o);
    }
    if (rc == 0)
        py_dump(&r->tools, list, 0);
    json_decref(list);
    if (rc == 0 && r->tools.oom)
        rc = bora_errf(err, -ENOMEM, "out of memory");
    return rc;
}

static int req_parse(struct req *r, const char *json, size_t len, struct bora_err *err)
{
    json_error_t je;
    r->root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!r->root)
        return bora_errf(err, -EINVAL, "request JSON: line %d column %d: %s", je.line, je.column, je.text);
    json_t *msgs = json_object_get(r->root, "messages");
    if (!json_is_array(msgs))
        return bora_errf(err, -EINVAL, "request JSON: \"messages\" (array) is missing");
    r->n = json_array_size(msgs);
    r->items = calloc(r->n ? r->n : 1, sizeof *r->items);
    r->texts = calloc(r->n ? r->n : 1, sizeof *r->texts);
    if (!r->items || !r->texts)
        return bora_errf(err, -ENOMEM, "out of memory for %zu messages", r->n);
    for (size_t i = 0; i < r->n; i++) {
        int rc = req_message(r, i, json_array_get(msgs, i), err);
        if (rc)
            return rc;
    }
    json_t *tools = json_object_get(r->root, "tools");
    if (tools && !json_is_array(tools) && !json_is_null(tools))
        return bora_errf(err, -EINVAL, "request JSON: \"tools\" is not an array");
    if (json_is_array(tools) && json_array_size(tools) > 0)
        return req_tools(r, tools, err);
    return 0;
}

int chat_encode_request_json(const struct tokenizer *t, const char *json, size_t len,
                             int32_t *ids, size_t cap, size_t *n_out, struct bora_err *err)
{
    *n_out = 0;
    struct req r = { 0 };
    r.v7 = chat_is_v7(t);
    int rc = req_parse(&r, json, len, err);
    if (rc == 0)
        rc = chat_encode_items(t, r.items, r.n, r.tools.n ? r.tools.p : NULL, r.tools.n, ids, cap,
                               n_out, err);
    for (size_t i = 0; r.texts && i < r.n; i++)
        free(r.texts[i].p);
    free(r.texts);
    free(r.items);
    free(r.tools.p);
    json_decref(r.root);
    return rc;
}
