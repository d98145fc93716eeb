/* test_model_direct.c — direct-load plans (mem/model_direct.h) on the golden fixtures: every
 * matrix streamed into a fake arena laid out like the CUDA engine's (q/k/v back to back,
 * gate/up rows interleaved at twice the row pitch), in 1 to 5 parts with the host pitched
 * sink, must land byte for byte where the layout says; parts cover the file in order; bad
 * destinations are refused with a message naming the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem/model_direct.h"
#include "mem/wstream.h"
#include "model/model.h"
#include "tests/support/fixtures.h"

struct fake {
    struct model_direct_dst d[7 * 64 + 2];
    int n;
    uint8_t *arena;
    size_t bytes;
};

static size_t tbytes(const struct wtensor *w)
{
    return (size_t)(w->rows * w->cols) * bora_dtype_size(w->dtype);
}

/* Arena offsets as the engine lays a layer out: qkv block, wo, gate/up interleaved, down. */
static void fake_layout(struct fake *f, const struct model *m)
{
    const struct model_config *c = &m->cfg;
    size_t off = 0;
    f->n = 0;
    f->d[f->n++] = (struct model_direct_dst){ &m->tok_emb, (void *)off, (uint64_t)(tbytes(&m->tok_emb) / (size_t)m->tok_emb.rows),
                                              (uint64_t)(tbytes(&m->tok_emb) / (size_t)m->tok_emb.rows), 0 };
    off += tbytes(&m->tok_emb);
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_weights *L = &m->layers[l];
        const struct wtensor *t[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (int k = 0; k < 7; k++) {
            uint64_t rb = (uint64_t)t[k]->cols * bora_dtype_size(t[k]->dtype);
            if (k == 4) {   /* gate row r at 2r, up row r at 2r + 1 */
                f->d[f->n++] = (struct model_direct_dst){ t[4], (void *)off, rb, 2 * rb, 1 + l };
                f->d[f->n++] = (struct model_direct_dst){ t[5], (void *)(off + rb), rb, 2 * rb, 1 + l };
                off += tbytes(t[4]) + tbytes(t[5]);
                k++;
                continue;
            }
            f->d[f->n++] = (struct model_direct_dst){ t[k], (void *)off, rb, rb, 1 + l };
            off += tbytes(t[k]);
        }
    }
    if (!c->tied) {
        uint64_t rb = (uint64_t)m->output.cols * bora_dtype_size(m->output.dtype);
        f->d[f->n++] = (struct model_direct_dst){ &m->output, (void *)off, rb, rb, c->n_layers + 1 };
        off += tbytes(&m->output);
    }
    f->bytes = off;
    f->arena = malloc(off);
    assert_non_null(f->arena);
    memset(f->arena, 0xA5, off);
    for (int i = 0; i < f->n; i++)
        f->d[i].dst = f->arena + (uintptr_t)f->d[i].dst;
}

static bool open_fixture(const char *name, struct model **m)
{
    char dir[4096];
    if (!fixture_find(name, dir, sizeof dir)) {
        fprintf(stderr, "SKIP: fixture %s not found\n", name);
        return false;
    }
    struct bora_err err = { "" };
    int rc = model_open(m, dir, NULL, &err);
    if (rc)
        fail_msg("%s: %s", name, err.msg);
    return true;
}

static void check_rows(const struct model_direct_dst *d)
{
    const struct wtensor *w = d->w;
    for (int64_t r = 0; r < w->rows; r++)
        if (memcmp((const uint8_t *)d->dst + (size_t)r * d->pitch, (const uint8_t *)w->data + (size_t)r * d->row_bytes,
                   d->row_bytes))
            fail_msg("row %lld of a %lld × %lld tensor (pitch %llu) differs", (long long)r, (long long)w->rows,
                     (long long)w->cols, (unsigned long long)d->pitch);
}

static void stream_parts(const char *fixture, int parts, enum wstream_direct direct)
{
    struct model *m = NULL;
    if (!open_fixture(fixture, &m))
        skip();
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fake_layout(f, m);
    struct model_direct_plan *p = NULL;
    struct bora_err err = { "" };
    assert_int_equal(model_direct_plan_build(&p, m, f->d, f->n, parts, &err), 0);
    const int np = model_direct_plan_parts(p);
    assert_true(np >= 1 && np <= parts);
    uint64_t sum = 0, prev_end = 0;
    int prev_file = -1;
    for (int i = 0; i < np; i++) {
        const struct wstream_plan *pl = model_direct_plan_part(p, i);
        assert_true(pl->n_items > 0);
        for (int k = 0; k < pl->n_items; k++) {   /* file order across parts, no overlap */
            const struct wstream_item *it = &pl->items[k];
            if (it->file == prev_file)
                assert_true(it->offset >= prev_end);
            prev_file = it->file, prev_end = it->offset + it->len;
            sum += it->len;
        }
        struct wstream *ws = NULL;
        struct wstream_opts wo = { .direct = direct, .buf_bytes = 64 << 10 };
        assert_int_equal(wstream_open(&ws, pl, &wo, &err), 0);
        int rc = wstream_run(ws, &model_direct_sink_host, &err);
        if (rc)
            fail_msg("part %d: %s", i, err.msg);
        wstream_close(ws);
    }
    assert_null(model_direct_plan_part(p, np));
    assert_int_equal(sum, model_direct_plan_bytes(p));
    assert_int_equal(sum, f->bytes);   /* the fake arena is exactly the matrices */
    for (int i = 0; i < f->n; i++)
        check_rows(&f->d[i]);
    model_direct_plan_free(p);
    free(f->arena);
    free(f);
    model_close(m);
}

/* A prefix split: the tensors wholly before the middle of the file first, the rest after; both
 * sides streamed (buffered and O_DIRECT) rebuild every tensor. */
static void test_split_before(void **state)
{
    (void)state;
    struct model *m = NULL;
    if (!open_fixture("mistral-tiny-fp8", &m))
        skip();
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fake_layout(f, m);
    const uint64_t mid = m->shards[0].map_bytes / 2;
    const struct wtensor *seen[7 * 64 + 2];
    for (int i = 0; i < f->n; i++)
        seen[i] = f->d[i].w;
    int k = model_direct_split_before(m, f->d, f->n, 0, mid);
    assert_true(k > 0 && k < f->n);
    for (int i = 0; i < f->n; i++) {
        const struct wtensor *w = f->d[i].w;
        uint64_t end = (uint64_t)((const uint8_t *)w->data - (const uint8_t *)m->shards[0].map) + tbytes(w);
        if (i < k)
            assert_true(end <= mid);
        else
            assert_true(end > mid);
        int hits = 0;   /* a permutation: each tensor once */
        for (int j = 0; j < f->n; j++)
            hits += seen[j] == w;
        assert_int_equal(hits, 1);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(f->d[j].w, w);
    }
    assert_int_equal(model_direct_split_before(m, f->d, f->n, 1, 0), f->n);   /* all before a later shard */
    assert_int_equal(model_direct_split_before(m, f->d, f->n, 0, 0), 0);
    k = model_direct_split_before(m, f->d, f->n, 0, mid);
    struct bora_err err = { "" };
    for (int side = 0; side < 2; side++) {
        struct model_direct_plan *p = NULL;
        int first = side ? k : 0, cnt = side ? f->n - k : k;
        assert_int_equal(model_direct_plan_build(&p, m, f->d + first, cnt, 1, &err), 0);
        struct wstream *ws = NULL;
        struct wstream_opts wo = { .direct = side ? WSTREAM_DIRECT_AUTO : WSTREAM_DIRECT_OFF, .buf_bytes = 64 << 10 };
        assert_int_equal(wstream_open(&ws, model_direct_plan_part(p, 0), &wo, &err), 0);
        if (wstream_run(ws, &model_direct_sink_host, &err))
            fail_msg("side %d: %s", side, err.msg);
        wstream_close(ws);
        model_direct_plan_free(p);
    }
    for (int i = 0; i < f->n; i++)
        check_rows(&f->d[i]);
    free(f->arena);
    free(f);
    model_close(m);
}

static void test_one_part_direct(void **state)
{
    (void)state;
    stream_parts("mistral-tiny-bf16", 1, WSTREAM_DIRECT_AUTO);
}

static void test_parts_buffered(void **state)
{
    (void)state;
    for (int parts = 2; parts <= 5; parts++)
        stream_parts("mistral-tiny-bf16", parts, WSTREAM_DIRECT_OFF);
}

static void test_fp8_fixture(void **state)
{
    (void)state;
    stream_parts("mistral-tiny-fp8", 3, WSTREAM_DIRECT_OFF);
}

static void test_tied_fixture(void **state)
{
    (void)state;
    stream_parts("mistral-tiny-tied-mqa", 4, WSTREAM_DIRECT_AUTO);
}

static void test_refusals(void **state)
{
    (void)state;
    struct model *m = NULL;
    if (!open_fixture("mistral-tiny-bf16", &m))
        skip();
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fake_layout(f, m);
    struct model_direct_plan *p = NULL;
    struct bora_err err = { "" };
    f->d[3].pitch = f->d[3].row_bytes - 1;   /* pitch below the row */
    assert_int_equal(model_direct_plan_build(&p, m, f->d, f->n, 2, &err), -EINVAL);
    assert_null(p);
    assert_non_null(strstr(err.msg, "tensor 3"));
    f->d[3].pitch = f->d[3].row_bytes;
    f->d[3].row_bytes /= 2;                   /* rows × row_bytes ≠ bytes */
    assert_int_equal(model_direct_plan_build(&p, m, f->d, f->n, 2, &err), -EINVAL);
    f->d[3].row_bytes = f->d[3].pitch;
    struct wtensor fake = *f->d[5].w;        /* data outside every shard */
    fake.data = f->arena;
    f->d[5].w = &fake;
    assert_int_equal(model_direct_plan_build(&p, m, f->d, f->n, 2, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "tensor 5"));
    assert_false(model_direct_all_mapped(m, f->d, f->n));
    f->d[5].w = &m->layers[0].w_gate;
    assert_true(model_direct_all_mapped(m, f->d, f->n));
    assert_int_equal(model_direct_plan_build(&p, m, f->d, f->n, MODEL_DIRECT_PARTS_MAX + 1, &err), -EINVAL);
    free(f->arena);
    free(f);
    model_close(m);
}

/* A BF16 checkpoint opened as FP8 holds its matrices in host memory: not streamable. */
static void test_converted_not_mapped(void **state)
{
    (void)state;
    char dir[4096];
    if (!fixture_find("mistral-tiny-bf16", dir, sizeof dir)) {
        fprintf(stderr, "SKIP: fixture mistral-tiny-bf16 not found\n");
        skip();
    }
    struct model *m = NULL;
    struct bora_err err = { "" };
    struct model_open_opts mo = { .precision = MODEL_PRECISION_FP8 };
    if (model_open(&m, dir, &mo, &err))
        fail_msg("%s", err.msg);
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fake_layout(f, m);
    assert_false(model_direct_all_mapped(m, f->d, f->n));
    assert_true(model_direct_all_mapped(m, f->d, 1));   /* the embedding stays BF16, mapped */
    free(f->arena);
    free(f);
    model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_part_direct),
        cmocka_unit_test(test_parts_buffered),
        cmocka_unit_test(test_fp8_fixture),
        cmocka_unit_test(test_tied_fixture),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_converted_not_mapped),
        cmocka_unit_test(test_split_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
