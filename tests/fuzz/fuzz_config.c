/* fuzz_config.c — fuzz target for config_parse (any bytes as an INI file) and config_set
 * (any bytes as one key's value). Checks that a config that parses cleanly survives
 * config_dump → config_parse unchanged, and that every message names a place. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static const char *const seeds[] = {
    "[model]\npath = /srv/m\nbackend = cuda\nprecision = fp8\nmax_ctx = 4096\nprefix_cache = off\n",
    "[engine]\nthreads = 4\ntensor_parallel = 2\nprefill_chunk = 512\nkv_dtype = fp8\n",
    "[dataplane]\nudp = [::1]:7474\ntcp = 0.0.0.0:80\ndpdk = -l 2\ndpdk_ip = 10.0.0.2\n"
    "dpdk_port = 9\npsk = 000102030405060708090a0b0c0d0e0f\nallow = 10.0.0.0/8, ::1\nrate_limit = 5\n",
    "[limits]\nqueue_depth = 8\nmax_prompt_bytes = 100\nmax_tokens = 9\nrequest_timeout_ms = 1\n"
    "shutdown_grace_ms = 0\n",
    "[console]\nsocket = /tmp/s\nsocket_mode = 0640\nsocket_owner = bora\nsocket_group = 0\n"
    "serial = /dev/ttyS1\nbaud = 9600\nmax_login_failures = 2\nlog_level = debug\n",
    "\xEF\xBB\xBF; c\r\n[model\r\nx\r\n[limits] y\r\nmax_tokens: 5 ; n\r\n  queue_depth = 1\r\n",
};

size_t fuzz_seed_input(int i, const uint8_t **data)
{
    if (i < 0 || (size_t)i >= sizeof seeds / sizeof seeds[0])
        return 0;
    *data = (const uint8_t *)seeds[i];
    return strlen(seeds[i]);
}

static void check_round_trip(const struct bora_config *cfg)
{
    static struct config_diag diag;
    struct bora_config back;
    char *text = NULL, a[512], b[512];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f || config_dump(cfg, f, CONFIG_DUMP_SECRETS))
        abort();
    fclose(f);
    if (config_parse(&back, "dump", text, len, &diag)) {
        fprintf(stderr, "dump does not parse: %s\n%s", diag.msg[0], text);
        abort();
    }
    const char *k;
    for (size_t i = 0; (k = config_key_name(i)); i++)
        if (config_get(cfg, k, a, sizeof a) < 0 || config_get(&back, k, b, sizeof b) < 0 || strcmp(a, b))
            abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config_diag diag;
    struct bora_config cfg;
    int rc = config_parse(&cfg, "fuzz", (const char *)data, size, &diag);
    for (int i = 0; i < diag.n_errors && i < CONFIG_DIAG_MAX; i++)
        if (strncmp(diag.msg[i], "fuzz:", 5))
            abort();
    if (rc == 0)
        check_round_trip(&cfg);

    /* the same bytes as a value for one key, through config_set */
    if (size > 0) {
        char value[600];
        size_t n = size - 1 < sizeof value - 1 ? size - 1 : sizeof value - 1;
        memcpy(value, data + 1, n);
        value[n] = 0;
        size_t n_keys = 0;
        while (config_key_name(n_keys))
            n_keys++;
        struct bora_err err;
        config_defaults(&cfg);
        if (config_set(&cfg, config_key_name(data[0] % n_keys), value, &err) == 0)
            check_round_trip(&cfg);
    }
    return 0;
}
