/* tokenizer.c — the tokenizer front: finds and opens the tokenizer file of a model directory,
 * dispatches encoding to the kind (SentencePiece, HF JSON, Tekken), and decodes ids from the
 * per-id byte table, either whole or streaming (detok), never splitting a code point. */
#include "model/tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/tokenizer_impl.h"

#define TOKENIZER_MAX_FILE (256u << 20)   /* bytes; larger tokenizer files are refused */

static const char REPLACEMENT_CHAR[3] = { (char)0xEF, (char)0xBF, (char)0xBD };

/* ---- UTF-8 ------------------------------------------------------------------------------ */

int utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;           /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else return -1;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n)
            return 0;
        uint8_t b = s[i];
        bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        if (!ok)
            return -i;
    }
    return need;
}

size_t utf8_validate(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        int k = utf8_seq(s + i, len - i);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return len;
}

/* ---- open / close ----------------------------------------------------------------------- */

static int file_read(const char *path, uint8_t **buf, size_t *len, struct bora_err *err)
{
    /* non-blocking, so a FIFO in the file's place is refused below instead of hanging the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return bora_errf(err, -errno, "%s: %s", path, strerror(errno));
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return bora_errf(err, -ENOMEM, "%s: out of memory", path);
    }
    int rc = 0;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = bora_errf(err, -EINVAL, "%s: not a regular file", path);
        goto out;
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);   /* a regular file: reads as usual */
    if ((uint64_t)st.st_size > TOKENIZER_MAX_FILE) {
        rc = bora_errf(err, -EFBIG, "%s: %lld bytes, larger than the %u-byte limit", path,
                       (long long)st.st_size, TOKENIZER_MAX_FILE);
        goto out;
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len + 1);
    if (!*buf) {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(*buf, 1, *len, f) != *len) {
        free(*buf);
        *buf = NULL;
        rc = bora_errf(err, -EIO, "%s: short read", path);
        goto out;
    }
    (*buf)[*len] = 0;
out:
    fclose(f);
    return rc;
}

static bool path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Something is there under that name, usable or not (a dangling link or a FIFO is then
 * reported by file_read rather than skipped for the next name). */
static bool path_present(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* In a model directory: tekken.json, tokenizer.model, tokenizer.model.v*, tokenizer.json. */
static int dir_find(const char *dir, char *out, size_t cap, struct bora_err *err)
{
    static const char *const names[] = {
        "tekken.json", "tokenizer.model", "tokenizer.model.v7", "tokenizer.model.v3",
        "tokenizer.model.v2", "tokenizer.model.v1", "tokenizer.json",
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(names); i++) {
        int n = snprintf(out, cap, "%s/%s", dir, names[i]);
        if (n < 0 || (size_t)n >= cap)
            return bora_errf(err, -ENAMETOOLONG, "%s: path too long", dir);
        if (path_present(out))
            return 0;
    }
    return bora_errf(err, -ENOENT, "%s: no tekken.json, tokenizer.model* or tokenizer.json", dir);
}

/* True if name (a path or a bare file name) ends with suffix; whole: the suffix is the whole
 * last component of the path. */
static bool name_ends_with(const char *name, const char *suffix, bool whole)
{
    size_t n = name ? strlen(name) : 0, k = strlen(suffix);
    return n >= k && !strcmp(name + n - k, suffix) && (!whole || n == k || name[n - k - 1] == '/');
}

/* The kind is chosen by content, with the file name as a hint: a file named *.json is JSON
 * (never protobuf), after an optional UTF-8 byte order mark. JSON with "token_bytes" and
 * "pattern" is Tekken, other JSON with "model" or "added_tokens" Hugging Face; JSON with neither
 * is reported as the kind its name says (tokenizer.json: Hugging Face, else Tekken). */
static int open_kind(struct tokenizer **out, const uint8_t *buf, size_t len, const char *name,
                       struct bora_err *err)
{
    if (!buf || len == 0)
        return bora_errf(err, -EINVAL, "%s: empty file", name);
    size_t i = 0;
    bool bom = len >= 3 && buf[0] == 0xEF && buf[1] == 0xBB && buf[2] == 0xBF;
    if (bom)
        i = 3;
    while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
        i++;
    bool json = name_ends_with(name, ".json", false) || (i < len && buf[i] == '{');
    if (!json)
        return sentencepiece_open(out, buf, len, name, err);
    if (bom) {                                       /* jansson refuses a BOM */
        buf += 3;
        len -= 3;
    }
    /* Tekken files have "config" with a "pattern" and "vocab" entries with "token_bytes"
     * (their token_str values may well contain "model"); HF files a "model" object. */
    bool tekken = memmem(buf, len, "\"token_bytes\"", 13) && memmem(buf, len, "\"pattern\"", 9);
    bool hf = !tekken && (memmem(buf, len, "\"model\"", 7)
                          || memmem(buf, len, "\"added_tokens\"", 14));
    if (!tekken && !hf)
        hf = name_ends_with(name, "tokenizer.json", true);
    if (hf)
        return hfjson_open(out, (const char *)buf, len, name, err);
    return tekken_tokenizer_open(out, (const char *)buf, len, name, err);
}

/* Looks up the instruct control tokens once, so the chat encoder needs no search. */
static void chat_ids_fill(struct tokenizer *t)
{
    static const char *const names[CHAT_TOK_COUNT] = {
        [CHAT_TOK_INST] = "[INST]", [CHAT_TOK_INST_END] = "[/INST]",
        [CHAT_TOK_TOOL_CALLS] = "[TOOL_CALLS]", [CHAT_TOK_AVAILABLE_TOOLS] = "[AVAILABLE_TOOLS]",
        [CHAT_TOK_AVAILABLE_TOOLS_END] = "[/AVAILABLE_TOOLS]",
        [CHAT_TOK_TOOL_RESULTS] = "[TOOL_RESULTS]", [CHAT_TOK_TOOL_RESULTS_END] = "[/TOOL_RESULTS]",
        [CHAT_TOK_SYSTEM_PROMPT] = "[SYSTEM_PROMPT]", [CHAT_TOK_SYSTEM_PROMPT_END] = "[/SYSTEM_PROMPT]",
        [CHAT_TOK_TOOL_CONTENT] = "[TOOL_CONTENT]",
    };
    for (int k = 0; k < CHAT_TOK_COUNT; k++)
        t->chat_id[k] = -1;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!(t->piece_attr[i] & TOK_ATTR_CONTROL))
            continue;
        size_t l;
        const char *p = tokenizer_piece(t, i, &l);
        for (int k = 0; k < CHAT_TOK_COUNT; k++)
            if (t->chat_id[k] < 0 && strlen(names[k]) == l && !memcmp(names[k], p, l))
                t->chat_id[k] = i;
    }
}

int tokenizer_open_mem(struct tokenizer **out, const uint8_t *buf, size_t len, const char *name,
                       struct bora_err *err)
{
    *out = NULL;
    int rc = open_kind(out, buf, len, name, err);
    if (rc == 0)
        chat_ids_fill(*out);
    return rc;
}

int tokenizer_open(struct tokenizer **out, const char *path, struct bora_err *err)
{
    char file[4096];
    *out = NULL;
    if (path_is_dir(path)) {
        int rc = dir_find(path, file, sizeof file, err);
        if (rc)
            return rc;
    } else {
        int n = snprintf(file, sizeof file, "%s", path);
        if (n < 0 || (size_t)n >= sizeof file)
            return bora_errf(err, -ENAMETOOLONG, "%s: path too long", path);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = file_read(file, &buf, &len, err);
    if (rc)
        return rc;
    rc = tokenizer_open_mem(out, buf, len, file, err);
    free(buf);
    return rc;
}

int tokenizer_open_for(struct tokenizer **out, const char *path, int model_vocab, struct bora_err *err)
{
    int rc = tokenizer_open(out, path, err);
    if (rc)
        return rc;
    if ((*out)->n_vocab > model_vocab) {
        rc = bora_errf(err, -EINVAL, "%s: tokenizer has %d tokens, the model only %d", path, (*out)->n_vocab,
                       model_vocab);
        tokenizer_close(*out);
        *out = NULL;
    }
    return rc;
}

void tokenizer_close(struct tokenizer *t)
{
    if (!t)
        return;
    if (t->destroy)
        t->destroy(t);
    tokenizer_tables_free(t);
    free(t);
}

/* ---- tables ----------------------------------------------------------------------------- */

int tokenizer_tables_build(struct tokenizer *t, const char *const *pieces, const uint32_t *lens,
                           const uint8_t *byte_val, bool sp_spaces, const char *name, struct bora_err *err)
{
    static const uint8_t unk_surface[5] = { ' ', 0xE2, 0x81, 0x87, ' ' };   /* " ⁇ " */
    size_t n = (size_t)t->n_vocab, total = 0, extra = 0;
    for (size_t i = 0; i < n; i++) {
        total += lens[i];
        if (t->piece_attr[i] & TOK_ATTR_UNKNOWN)
            extra += sizeof unk_surface;
    }
    t->piece_off = malloc((n + 1) * sizeof *t->piece_off);
    t->dec_off = malloc((n + 1) * sizeof *t->dec_off);
    t->piece_str = malloc(total + 1);
    t->dec_bytes = malloc(total + extra + 1);   /* decoded ≤ piece (▁ 3 bytes → 1), + " ⁇ " */
    if (!t->piece_off || !t->dec_off || !t->piece_str || !t->dec_bytes)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    if (total + extra > UINT32_MAX - 1)
        return bora_errf(err, -EOVERFLOW, "%s: %zu bytes of pieces, more than 4 GiB", name, total + extra);
    uint32_t po = 0, dq = 0;
    for (size_t i = 0; i < n; i++) {
        t->piece_off[i] = po;
        memcpy(t->piece_str + po, pieces[i], lens[i]);
        po += lens[i];
        t->dec_off[i] = dq;
        uint8_t a = t->piece_attr[i];
        if (a & TOK_ATTR_CONTROL)
            continue;
        if (a & TOK_ATTR_BYTE) {
            t->dec_bytes[dq++] = byte_val[i];
            continue;
        }
        if (a & TOK_ATTR_UNKNOWN) {   /* SentencePiece decodes <unk> as " ⁇ " */
            memcpy(t->dec_bytes + dq, unk_surface, sizeof unk_surface);
            dq += (uint32_t)sizeof unk_surface;
            continue;
        }
        /* A push emits at most 3 held bytes as U+FFFD each (9 bytes), then each ASCII byte of the
         * piece as itself and each other byte as itself or inside a U+FFFD (3 bytes at most): a
         * vocabulary whose every piece stays within DETOK_MAX_DELTA that way never overflows a
         * streamed token's text (dataplane/generator.h). Mistral's longest pieces (Tekken, 76
         * bytes) need ≤ 237; byte and unknown tokens (1 and 5 bytes) always fit. */
        const uint8_t *p = (const uint8_t *)pieces[i];
        size_t w = 9;
        for (uint32_t j = 0; j < lens[i]; j++) {
            if (sp_spaces && j + 2 < lens[i] && p[j] == 0xE2 && p[j + 1] == 0x96 && p[j + 2] == 0x81) {
                if (j == 0)
                    t->piece_attr[i] |= TOK_ATTR_LEAD_SPACE;
                t->dec_bytes[dq++] = ' ';
                w += 1;
                j += 2;
            } else {
                t->dec_bytes[dq++] = p[j];
                w += p[j] < 0x80 ? 1 : 3;
            }
        }
        if (w > DETOK_MAX_DELTA)
            return bora_errf(err, -EMSGSIZE,
                             "%s: token %zu decodes to %u bytes, which could stream as %zu, more than the %d a "
                             "token's text may take", name, i, dq - t->dec_off[i], w, DETOK_MAX_DELTA);
    }
    t->piece_off[n] = po;
    t->dec_off[n] = dq;
    return 0;
}

void tokenizer_tables_free(struct tokenizer *t)
{
    free(t->piece_off);
    free(t->piece_str);
    free(t->dec_off);
    free(t->dec_bytes);
    free(t->piece_attr);
    t->piece_off = t->dec_off = NULL;
    t->piece_str = NULL;
    t->dec_bytes = t->piece_attr = NULL;
}

/* ---- accessors -------------------------------------------------------------------------- */

int tokenizer_vocab_size(const struct tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos_id(const struct tokenizer *t) { return t->bos_id; }
int32_t tokenizer_eos_id(const struct tokenizer *t) { return t->eos_id; }

const char *tokenizer_piece(const struct tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece_str + t->piece_off[id];
}

int32_t tokenizer_piece_id(const struct tokenizer *t, const char *piece)
{
    size_t n = strlen(piece);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t l;
        const char *p = tokenizer_piece(t, i, &l);
        if (l == n && !memcmp(p, piece, n))
            return i;
    }
    return -1;
}

bool tokenizer_is_control(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->piece_attr[id] & TOK_ATTR_CONTROL);
}

/* ---- encode ----------------------------------------------------------------------------- */

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool bos,
                     int32_t *ids, size_t cap, size_t *n_out, struct bora_err *err)
{
    *n_out = 0;
    if (unlikely(len > TOKENIZER_MAX_TEXT))
        return bora_errf(err, -E2BIG, "text of %zu bytes is longer than the %u-byte limit", len,
                         TOKENIZER_MAX_TEXT);
    size_t bad = utf8_validate((const uint8_t *)text, len);
    if (unlikely(bad != len))
        return bora_errf(err, -EINVAL, "invalid UTF-8 at byte %zu (0x%02x)", bad,
                         (unsigned)(uint8_t)text[bad]);
    size_t pre = 0;
    if (bos && t->bos_id >= 0) {
        if (cap > 0)
            ids[0] = t->bos_id;
        pre = 1;
    }
    size_t n = 0;
    int rc = t->encode(t, text, len, cap > pre ? ids + pre : NULL, cap > pre ? cap - pre : 0, &n, err);
    *n_out = n + pre;
    if (rc == 0 && *n_out > cap)
        rc = -ENOSPC;
    return rc;
}

/* ---- streaming decode ------------------------------------------------------------------- */

void detok_init(struct detok *d, const struct tokenizer *t)
{
    memset(d, 0, sizeof *d);
    d->t = t;
    d->at_start = true;
}

/* Output bytes: copied while they fit, counted always (n = bytes needed). */
struct sink {
    char *out;
    size_t cap, n;
    bool over;
};

static void sink_put(struct sink *s, const void *p, size_t n)
{
    if (!s->over && s->n + n <= s->cap)
        memcpy(s->out + s->n, p, n);
    else
        s->over = true;
    s->n += n;
}

/* Emits what the held bytes make complete. final: nothing more will come (incomplete → U+FFFD). */
static void detok_drain(struct detok *d, struct sink *s, bool final)
{
    while (d->n_pend) {
        int k = utf8_seq(d->pend, d->n_pend);
        if (k == 0 && !final)
            return;
        size_t drop;
        if (k > 0) {
            sink_put(s, d->pend, (size_t)k);
            drop = (size_t)k;
        } else {
            sink_put(s, REPLACEMENT_CHAR, sizeof REPLACEMENT_CHAR);
            size_t m = k == 0 ? d->n_pend : (size_t)-k;
            drop = d->t->utf8_maximal_subpart ? m : 1;
        }
        memmove(d->pend, d->pend + drop, d->n_pend - drop);
        d->n_pend = (uint8_t)(d->n_pend - drop);
    }
}

/* Feeds bytes: runs of complete ASCII/valid sequences go straight out when nothing is held. */
static void detok_feed(struct detok *d, struct sink *s, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (d->n_pend == 0) {
            size_t j = i;
            while (j < n) {
                if (p[j] < 0x80) { j++; continue; }
                int k = utf8_seq(p + j, n - j);
                if (k <= 0)
                    break;
                j += (size_t)k;
            }
            sink_put(s, p + i, j - i);
            i = j;
            if (i == n)
                break;
        }
        d->pend[d->n_pend++] = p[i++];
        detok_drain(d, s, false);
    }
}

/* Feeds one id into d (always committed). */
static void detok_push_sink(struct detok *d, int32_t id, struct sink *s)
{
    const struct tokenizer *t = d->t;
    uint8_t a = t->piece_attr[id];
    if (a & TOK_ATTR_CONTROL) {
        if (t->kind == TOKENIZER_TEKKEN)   /* mistral-common decodes runs between specials apart */
            detok_drain(d, s, true);
        return;
    }
    const uint8_t *p = t->dec_bytes + t->dec_off[id];
    size_t n = t->dec_off[id + 1] - t->dec_off[id];
    if (d->at_start && t->strip_first_space && (a & TOK_ATTR_LEAD_SPACE)) {
        p++;
        n--;
    }
    d->at_start = false;
    detok_feed(d, s, p, n);
}

int detok_push(struct detok *d, int32_t id, char *out, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (unlikely(id < 0 || id >= d->t->n_vocab))
        return -EINVAL;
    struct detok next = *d;
    struct sink s = { out, cap, 0, false };
    detok_push_sink(&next, id, &s);
    *n_out = s.n;
    if (s.over)
        return -ENOSPC;
    *d = next;
    return 0;
}

int detok_flush(struct detok *d, char *out, size_t cap, size_t *n_out)
{
    struct detok next = *d;
    struct sink s = { out, cap, 0, false };
    detok_drain(&next, &s, true);
    *n_out = s.n;
    if (s.over)
        return -ENOSPC;
    *d = next;
    return 0;
}

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char *out,
                     size_t cap, size_t *n_out)
{
    struct detok d;
    detok_init(&d, t);
    struct sink s = { out, out ? cap : 0, 0, false };
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (unlikely(ids[i] < 0 || ids[i] >= t->n_vocab))
            return -EINVAL;
        detok_push_sink(&d, ids[i], &s);
    }
    detok_drain(&d, &s, true);
    *n_out = s.n;
    return s.over ? -ENOSPC : 0;
}
