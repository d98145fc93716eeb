/* fuzz_bwp.c — fuzz target for the BWP/1 codec: every input is parsed as a UDP datagram, as a
 * TCP frame (framed by bwp_stream_need), keyed and unkeyed, and as a server frame; a frame the
 * parser accepts must re-validate identically and its fields must stay inside the buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/bwp.h"

static const struct bwp_key KEY = { .bytes = "fuzz-key", .len = 8 };

static void check_accepted(const uint8_t *data, size_t size, const struct bwp_client_frame *f)
{
    if (f->h.type != BWP_GENERATE)
        return;
    const uint8_t *end = data + size;
    if (f->gen.prompt < data || f->gen.prompt + f->gen.prompt_len > end)
        abort();
    if (f->gen.max_tokens == 0 || !(f->gen.top_p > 0 && f->gen.top_p <= 1))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct bwp_replay_slot slots[64];
    static struct bwp_replay rp;
    if (!rp.slots)
        bwp_replay_init(&rp, slots, 64);
    struct bwp_limits lim = { .max_prompt_bytes = 300, .max_tokens = 64, .vocab_size = 1000, .max_ctx = 40 };
    struct bwp_client_frame f;
    struct bwp_verdict v = bwp_parse_client(data, size, BWP_UDP, &lim, NULL, 1, 0, &f);
    if (v.code == BWP_OK)
        check_accepted(data, size, &f);
    char why[128];
    const char *m = bwp_verdict_msg(&v, why, sizeof why);
    if (v.code != BWP_OK && (!m || !m[0] || strnlen(m, BWP_WHY_MAX) == BWP_WHY_MAX))
        abort();   /* every refusal names its problem, in a terminated message */
    struct bwp_verdict sv;
    size_t need = bwp_stream_need(data, size, &sv);
    if (need && need != SIZE_MAX && need <= size) {
        if (need > bwp_frame_max(&lim)) {
            (void)bwp_parse_oversize(data, &lim);
        } else {
            v = bwp_parse_client(data, need, BWP_TCP, &lim, NULL, 1, 0, &f);
            if (v.code == BWP_OK)
                check_accepted(data, need, &f);
        }
    }
    lim.key = &KEY;
    v = bwp_parse_client(data, size, BWP_UDP, &lim, &rp, 1, 0, &f);
    struct bwp_server_frame s;
    (void)bwp_parse_server(data, size, &KEY, false, &s);
    if (bwp_parse_server(data, size, NULL, false, &s) == 0 && s.h.type == BWP_TOKEN &&
        (const uint8_t *)s.u.token.text + s.u.token.text_len > data + size)
        abort();
    (void)bwp_utf8_complete(data, size);
    return 0;
}

/* Seeds: one valid frame of each client type and two server frames. */
size_t fuzz_seed_input(int i, const uint8_t **data)
{
    static uint8_t seeds[8][256];
    static size_t lens[8];
    if (!lens[0]) {
        struct bwp_generate g = { .max_tokens = 8, .top_p = 1, .prompt_len = 5, .prompt = (const uint8_t *)"hello" };
        lens[0] = bwp_build_generate(seeds[0], 256, 1, &g, NULL, 0);
        const uint8_t chat[] = { 1, 2, 0, 0, 0, 'h', 'i' };
        g.prompt_kind = 1; g.prompt = chat; g.prompt_len = sizeof chat;
        lens[1] = bwp_build_generate(seeds[1], 256, 2, &g, NULL, 0);
        const uint8_t ids[] = { 1, 0, 0, 0, 7, 0, 0, 0 };
        g.prompt_kind = 2; g.prompt = ids; g.prompt_len = sizeof ids;
        lens[2] = bwp_build_generate(seeds[2], 256, 3, &g, &KEY, 0);
        lens[3] = bwp_build_simple(seeds[3], 256, BWP_CANCEL, 4, NULL, 0);
        lens[4] = bwp_build_simple(seeds[4], 256, BWP_PING, 5, &KEY, 0);
        lens[5] = bwp_build_resend(seeds[5], 256, 6, 2, NULL, 0);
        uint32_t id = 9;
        lens[6] = bwp_build_token(seeds[6], 256, 7, 1, &id, 1, "tok", 3, NULL, 0);
        lens[7] = bwp_build_error(seeds[7], 256, 8, 0, 4, "busy", &KEY, 0);
    }
    if (i < 0 || i >= 8)
        return 0;
    *data = seeds[i];
    return lens[i];
}
