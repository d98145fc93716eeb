/* bench_tokenizer.c — time to encode a realistic ~2,048-token customer-service prompt with the
 * v3 SentencePiece tokenizer (the encoder sits before prefill on the path to the first token).
 * Budget: 200 µs per call. Also prints the streaming detokenizer cost per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/tokenizer.h"

#define BENCH_TOKENIZER_PATH "tests/data/tokenizers/tokenizer.model.v3"
#define BENCH_TARGET_TOKENS 2048
#define BENCH_BUDGET_US 200.0
#define BENCH_ITERS 300

static const char *const policy[] = {
    "You are Lina, the virtual assistant of NordHome, an online retailer of furniture and home appliances. ",
    "Answer politely and concisely, in the customer's language. Never promise refunds above 500 EUR without a supervisor. ",
    "Orders can be cancelled free of charge until they are shipped; after shipping, the customer must use the return form. ",
    "Returns are accepted within 30 days of delivery if the item is unused and in its original packaging. ",
    "Large items (sofas, wardrobes, fridges) are collected by our carrier; the customer chooses a 4-hour slot. ",
    "Delivery times: 3-5 working days in France, Belgium and Luxembourg; 5-8 working days elsewhere in the EU.\n",
};

static const char *const turns[] = {
    "Customer: Hi, I ordered a three-seat sofa (order #%d) on the %d of March and it still hasn't arrived. Can you check?\n",
    "Agent: Of course! Order #%d left our warehouse in Lyon yesterday; the carrier expects to deliver it within %d days.\n",
    "Customer: The tracking page says \"exception — address incomplete\". My address is 12, rue des Lilas, 69003 Lyon.\n",
    "Agent: Thank you. I have updated the delivery address and asked the carrier to retry; you'll get an SMS with the new slot.\n",
    "Customer: Also, the washing machine I received last week (model WM-%d) makes a loud noise during the spin cycle.\n",
    "Agent: I'm sorry about that. Please check that the transport bolts were removed; if the noise persists, we'll send a technician.\n",
    "Customer: Can I get a partial refund of %d EUR for the delay? It's the second time this happens.\n",
};

/* variant: shifts the order of turns and every number, so each prompt is different text. */
static char *build_prompt(const struct tokenizer *t, int variant, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof policy / sizeof *policy; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s", policy[i]);
    int32_t *ids = malloc(8192 * sizeof *ids);
    for (int k = 0; ids; k++) {
        size_t got = 0;
        tokenizer_encode(t, s, n, true, ids, 8192, &got, NULL);
        if (got >= BENCH_TARGET_TOKENS || n + 512 > cap)
            break;
        const char *f = turns[(k + variant) % (sizeof turns / sizeof *turns)];
        n += (size_t)snprintf(s + n, cap - n, f, 40000 + 37 * k + 7919 * variant, 1 + (k + variant) % 28);
    }
    free(ids);
    *len = n;
    return s;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define BENCH_VARIANTS 64
#define BENCH_COLD_RUNS 5

int main(void)
{
    struct tokenizer *t;
    struct bora_err err = { "" };
    char *text[BENCH_VARIANTS];
    size_t len[BENCH_VARIANTS], n = 0;
    int32_t *ids = malloc(8192 * sizeof *ids);
    double cold = 1e30, warm[BENCH_ITERS];
    for (int r = 0; r < BENCH_COLD_RUNS; r++) {   /* fresh tokenizer: empty word cache */
        if (tokenizer_open(&t, BENCH_TOKENIZER_PATH, &err)) {
            fprintf(stderr, "bench_tokenizer: %s (run from the repository root)\n", err.msg);
            return 1;
        }
        if (r == 0) {   /* built with a throwaway tokenizer so the timed one starts cold */
            for (int v = 0; v < BENCH_VARIANTS; v++)
                text[v] = build_prompt(t, v, &len[v]);
            tokenizer_close(t);
            if (tokenizer_open(&t, BENCH_TOKENIZER_PATH, &err))
                return 1;
        }
        double t0 = now_us();
        if (tokenizer_encode(t, text[0], len[0], true, ids, 8192, &n, &err)) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 1;
        }
        double dt = now_us() - t0;
        if (dt < cold)
            cold = dt;
        if (r < BENCH_COLD_RUNS - 1)
            tokenizer_close(t);
    }
    printf("tokenizer_encode, cold (first prompt after open): %zu bytes -> %zu tokens: %.1f µs per call   budget 200 µs\n",
           len[0], n, cold);
    size_t toks = 0;
    for (int i = 0; i < BENCH_ITERS; i++) {   /* warm server: every call a different prompt */
        int v = 1 + i % (BENCH_VARIANTS - 1);
        double t0 = now_us();
        tokenizer_encode(t, text[v], len[v], true, ids, 8192, &n, NULL);
        warm[i] = now_us() - t0;
        toks += n;
    }
    double sum = 0;
    for (int i = 0; i < BENCH_ITERS; i++)
        sum += warm[i];
    qsort(warm, BENCH_ITERS, sizeof *warm, cmp_double);
    printf("tokenizer_encode, warm (%d different prompts, %zu tokens avg): %.1f µs per call (median; mean %.1f, p90 %.1f)   budget %.0f µs\n",
           BENCH_VARIANTS - 1, toks / BENCH_ITERS, warm[BENCH_ITERS / 2], sum / BENCH_ITERS,
           warm[BENCH_ITERS * 9 / 10], BENCH_BUDGET_US);

    char out[DETOK_MAX_DELTA * 4];
    tokenizer_encode(t, text[0], len[0], true, ids, 8192, &n, NULL);
    double t0 = now_us();
    size_t bytes = 0;
    for (int r = 0; r < 10; r++) {
        struct detok d;
        detok_init(&d, t);
        for (size_t i = 0; i < n; i++) {
            size_t k;
            detok_push(&d, ids[i], out, sizeof out, &k);
            bytes += k;
        }
    }
    printf("detok_push: %.1f ns per token (%zu bytes)\n", (now_us() - t0) * 1e3 / (10.0 * (double)n), bytes / 10);
    for (int v = 0; v < BENCH_VARIANTS; v++)
        free(text[v]);
    free(ids);
    tokenizer_close(t);
    return 0;
}
