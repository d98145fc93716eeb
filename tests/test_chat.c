/* test_chat.c — the instruct chat template against mistral-common's own token ids
 * (tests/data/chat-samples/<sample>/tokens_v3.json from sample.json; tokens_v1.json for no_tools),
 * the message-array API, Python json.dumps re-serialisation, and bad requests. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "model/tokenizer.h"

#define SAMPLES "tests/data/chat-samples"
#define V1_PATH "tests/data/tokenizers/tokenizer.model.v1"
#define V3_PATH "tests/data/tokenizers/tokenizer.model.v3"
#define MAX_IDS 8192

static const char *const samples[] = {
    "get_weather_full", "get_weather_no_history", "get_weather_no_system_prompt", "no_tools",
};

static struct tokenizer *open_ok(const char *path)
{
    struct tokenizer *t = NULL;
    struct bora_err err = { "" };
    if (tokenizer_open(&t, path, &err))
        fail_msg("%s: %s", path, err.msg);
    return t;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static size_t expected_tokens(const char *sample, const char *version, int32_t *ids)
{
    char path[256];
    snprintf(path, sizeof path, SAMPLES "/%s/tokens_%s.json", sample, version);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        fail_msg("%s: %s", path, je.text);
    json_t *arr = json_object_get(root, "tokens");
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) ids[i] = (int32_t)json_integer_value(v);
    size_t n = json_array_size(arr);
    json_decref(root);
    return n;
}

static void assert_ids_equal(const char *what, const int32_t *got, size_t n_got, const int32_t *exp, size_t n_exp)
{
    size_t i = 0;
    while (i < n_got && i < n_exp && got[i] == exp[i])
        i++;
    if (i == n_got && i == n_exp)
        return;
    fail_msg("%s: %zu ids vs %zu expected, first difference at %zu (%d vs %d)", what, n_got, n_exp, i,
             i < n_got ? got[i] : -1, i < n_exp ? exp[i] : -1);
}

static void encode_sample(const struct tokenizer *t, const char *sample, int32_t *ids, size_t *n)
{
    char path[256];
    snprintf(path, sizeof path, SAMPLES "/%s/sample.json", sample);
    size_t len;
    char *json = read_file(path, &len);
    struct bora_err err = { "" };
    int rc = chat_encode_request_json(t, json, len, ids, MAX_IDS, n, &err);
    if (rc)
        fail_msg("%s: %s", sample, err.msg);
    free(json);
}

static void test_samples_v3(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    static int32_t got[MAX_IDS], exp[MAX_IDS];
    for (size_t s = 0; s < sizeof samples / sizeof *samples; s++) {
        size_t n, ne = expected_tokens(samples[s], "v3", exp);
        encode_sample(t, samples[s], got, &n);
        assert_ids_equal(samples[s], got, n, exp, ne);
    }
    tokenizer_close(t);
}

static void test_sample_v1(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V1_PATH);
    static int32_t got[MAX_IDS], exp[MAX_IDS];
    size_t n, ne = expected_tokens("no_tools", "v1", exp);
    encode_sample(t, "no_tools", got, &n);
    assert_ids_equal("no_tools v1", got, n, exp, ne);
    /* tools need a v3 vocabulary */
    size_t len;
    char *json = read_file(SAMPLES "/get_weather_full/sample.json", &len);
    struct bora_err err = { "" };
    assert_int_equal(chat_encode_request_json(t, json, len, got, MAX_IDS, &n, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "v3"));
    free(json);
    tokenizer_close(t);
}

/* The message-array API (what BWP/1 carries) gives the same ids as the JSON front. */
static void test_messages_api(void **state)
{
    (void)state;
    struct tokenizer *t3 = open_ok(V3_PATH), *t1 = open_ok(V1_PATH);
    size_t len;
    char *json = read_file(SAMPLES "/no_tools/sample.json", &len);
    json_t *root = json_loads(json, 0, NULL);
    json_t *msgs = json_object_get(root, "messages");
    struct chat_message m[16];
    size_t nm = json_array_size(msgs);
    assert_true(nm <= 16);
    for (size_t i = 0; i < nm; i++) {
        json_t *o = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(o, "role"));
        json_t *c = json_object_get(o, "content");
        m[i] = (struct chat_message){ !strcmp(role, "user") ? CHAT_ROLE_USER : CHAT_ROLE_ASSISTANT,
                                      json_string_value(c), json_string_length(c) };
    }
    static int32_t got[MAX_IDS], exp[MAX_IDS];
    size_t n, ne;
    struct bora_err err = { "" };
    assert_int_equal(chat_encode_messages(t3, m, nm, got, MAX_IDS, &n, &err), 0);
    ne = expected_tokens("no_tools", "v3", exp);
    assert_ids_equal("messages v3", got, n, exp, ne);
    assert_int_equal(chat_encode_messages(t1, m, nm, got, MAX_IDS, &n, &err), 0);
    ne = expected_tokens("no_tools", "v1", exp);
    assert_ids_equal("messages v1", got, n, exp, ne);
    /* -ENOSPC reports the full count */
    size_t need;
    assert_int_equal(chat_encode_messages(t3, m, nm, got, 5, &need, &err), -ENOSPC);
    assert_int_equal(need, expected_tokens("no_tools", "v3", exp));
    json_decref(root);
    free(json);
    tokenizer_close(t3);
    tokenizer_close(t1);
}

static size_t enc(const struct tokenizer *t, const char *s, int32_t *ids)
{
    size_t n;
    assert_int_equal(tokenizer_encode(t, s, strlen(s), false, ids, MAX_IDS, &n, NULL), 0);
    return n;
}

/* System messages are joined with "\n\n" and put before the LAST user message (v3), tool
 * messages are wrapped in [TOOL_RESULTS]; reference built from the template's definition. */
static void test_system_and_tool_placement(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    struct chat_message m[] = {
        { CHAT_ROLE_SYSTEM, "S1", 2 }, { CHAT_ROLE_USER, "u1", 2 }, { CHAT_ROLE_SYSTEM, "S2", 2 },
        { CHAT_ROLE_ASSISTANT, "a1", 2 }, { CHAT_ROLE_USER, "u2", 2 }, { CHAT_ROLE_ASSISTANT, "a2", 2 },
        { CHAT_ROLE_TOOL, "r", 1 },   /* an order mistral-common accepts (no system message after an assistant's) */
    };
    static int32_t got[MAX_IDS], exp[MAX_IDS];
    size_t n, ne = 0;
    int32_t inst = tokenizer_piece_id(t, "[INST]"), inst_end = tokenizer_piece_id(t, "[/INST]");
    int32_t res = tokenizer_piece_id(t, "[TOOL_RESULTS]"), res_end = tokenizer_piece_id(t, "[/TOOL_RESULTS]");
    exp[ne++] = 1;
    exp[ne++] = inst; ne += enc(t, "u1", exp + ne); exp[ne++] = inst_end;
    ne += enc(t, "a1", exp + ne); exp[ne++] = 2;
    exp[ne++] = inst; ne += enc(t, "S1\n\nS2\n\nu2", exp + ne); exp[ne++] = inst_end;
    ne += enc(t, "a2", exp + ne); exp[ne++] = 2;
    exp[ne++] = res; ne += enc(t, "r", exp + ne); exp[ne++] = res_end;
    struct bora_err err = { "" };
    assert_int_equal(chat_encode_messages(t, m, sizeof m / sizeof *m, got, MAX_IDS, &n, &err), 0);
    assert_ids_equal("placement", got, n, exp, ne);
    /* a final assistant "prefix" is continued: its text, no EOS */
    const char *req = "{\"messages\": [{\"role\": \"user\", \"content\": \"u1\"},"
                      " {\"role\": \"assistant\", \"content\": \"a1\", \"prefix\": true}]}";
    ne = 0;
    exp[ne++] = 1;
    exp[ne++] = inst; ne += enc(t, "u1", exp + ne); exp[ne++] = inst_end;
    ne += enc(t, "a1", exp + ne);
    assert_int_equal(chat_encode_request_json(t, req, strlen(req), got, MAX_IDS, &n, &err), 0);
    assert_ids_equal("prefix", got, n, exp, ne);
    tokenizer_close(t);
}

/* Tool-call arguments and results are re-serialised as Python's json.dumps(ensure_ascii=False)
 * writes them; the expected text below was produced by CPython 3.11's json module. */
static void test_python_json(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    const char *req =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
        " {\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"abc123xyz\", \"type\": \"function\","
        "   \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 0.1, \\\"y\\\": 1e-05, \\\"z\\\": 1e16,"
        " \\\"w\\\": 2.5, \\\"v\\\": 0.0001, \\\"u\\\": 123456.789, \\\"big\\\": 12345678901234567,"
        " \\\"s\\\": \\\"caf\\u00e9 \\\\n \\\\u0001 \\\\\\\\ \\\\\\\"q\\\\\\\" /\\\", \\\"n\\\": null, \\\"t\\\": true,"
        " \\\"f\\\": [1, 2.0, -0.5], \\\"e\\\": {}}\"}}]},"
        " {\"role\": \"tool\", \"tool_call_id\": \"abc123xyz\", \"content\": \"sunny\"}]}";
    const char *calls =
        "[{\"name\": \"f\", \"arguments\": {\"x\": 0.1, \"y\": 1e-05, \"z\": 1e+16, \"w\": 2.5, \"v\": 0.0001,"
        " \"u\": 123456.789, \"big\": 12345678901234567, \"s\": \"caf\xc3\xa9 \\n \\u0001 \\\\ \\\"q\\\" /\","
        " \"n\": null, \"t\": true, \"f\": [1, 2.0, -0.5], \"e\": {}}, \"id\": \"abc123xyz\"}]";
    const char *result = "{\"content\": \"sunny\", \"call_id\": \"abc123xyz\"}";
    static int32_t got[MAX_IDS], exp[MAX_IDS];
    size_t n, ne = 0;
    exp[ne++] = 1;
    exp[ne++] = tokenizer_piece_id(t, "[INST]"); ne += enc(t, "hi", exp + ne);
    exp[ne++] = tokenizer_piece_id(t, "[/INST]");
    exp[ne++] = tokenizer_piece_id(t, "[TOOL_CALLS]"); ne += enc(t, calls, exp + ne); exp[ne++] = 2;
    exp[ne++] = tokenizer_piece_id(t, "[TOOL_RESULTS]"); ne += enc(t, result, exp + ne);
    exp[ne++] = tokenizer_piece_id(t, "[/TOOL_RESULTS]");
    struct bora_err err = { "" };
    if (chat_encode_request_json(t, req, strlen(req), got, MAX_IDS, &n, &err))
        fail_msg("%s", err.msg);
    assert_ids_equal("python json", got, n, exp, ne);
    tokenizer_close(t);
}

static void expect_json_error(const struct tokenizer *t, const char *json, int code, const char *msg)
{
    int32_t ids[256];
    size_t n;
    struct bora_err err = { "" };
    int rc = chat_encode_request_json(t, json, strlen(json), ids, 256, &n, &err);
    if (rc != code || !strstr(err.msg, msg))
        fail_msg("'%s': rc %d '%s', expected %d '%s'", json, rc, err.msg, code, msg);
}

static void test_bad_requests(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    expect_json_error(t, "{\"messages\": [", -EINVAL, "line 1");
    expect_json_error(t, "[1, 2]", -EINVAL, "\"messages\"");
    expect_json_error(t, "{\"messages\": {}}", -EINVAL, "\"messages\"");
    expect_json_error(t, "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", -EINVAL, "messages[0].role 'robot'");
    expect_json_error(t, "{\"messages\": [{\"content\": \"x\"}]}", -EINVAL, "(missing)");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", -EINVAL, "content is not a string");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\"}]}", -EINVAL, "needs content");
    expect_json_error(t, "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}]}", -EINVAL, "no user message");
    expect_json_error(t, "{\"messages\": []}", -EINVAL, "no user message");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\"}]}",
                      -EINVAL, "needs content or tool_calls");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"tool\", \"content\": \"r\"}]}",
                      -EINVAL, "tool_call_id");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\","
                         " \"tool_calls\": [{\"function\": {\"arguments\": \"{}\"}}]}]}", -EINVAL, "tool_calls[0]");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}], \"tools\": [{\"function\": 3}]}",
                      -EINVAL, "tools[0]");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}], \"tools\": 7}", -EINVAL, "\"tools\"");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"\\ud800\"}]}", -EINVAL, "line 1");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\", \"prefix\": true}]}", -EINVAL,
                      "only a final assistant message");
    /* mistral-common's structure (serving): a tool result only after an assistant message or another
     * result; the last message the user's, a result, or an assistant prefix */
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"tool\","
                         " \"tool_call_id\": \"abc123xyz\", \"content\": \"r\"}]}", -EINVAL,
                      "message 1: a tool message cannot follow a user message");
    expect_json_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\","
                         " \"content\": \"a\"}]}", -EINVAL, "message 1: the conversation ends with an assistant message");
    /* ... but a system message last is accepted, as mistral-common accepts it: folded into the
     * system prompt before the last user message */
    {
        const char *req = "{\"messages\": [{\"role\": \"system\", \"content\": \"S1\"}, {\"role\": \"user\","
                          " \"content\": \"u\"}, {\"role\": \"system\", \"content\": \"S2\"}]}";
        static int32_t got[MAX_IDS], exp[MAX_IDS];
        size_t n, ne = 0;
        struct bora_err err = { "" };
        exp[ne++] = 1;
        exp[ne++] = tokenizer_piece_id(t, "[INST]");
        ne += enc(t, "S1\n\nS2\n\nu", exp + ne);
        exp[ne++] = tokenizer_piece_id(t, "[/INST]");
        assert_int_equal(chat_encode_request_json(t, req, strlen(req), got, MAX_IDS, &n, &err), 0);
        assert_ids_equal("system last", got, n, exp, ne);
    }
    /* a v7 vocabulary has its own format: refused, not encoded wrongly as v3 */
    struct tokenizer *t7 = open_ok("tests/data/tokenizers/v7/tokenizer.model.v7");
    expect_json_error(t7, "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}]}", -ENOTSUP, "v7");
    tokenizer_close(t7);
    /* message-array API: unknown role, invalid UTF-8 */
    int32_t ids[64];
    size_t n;
    struct bora_err err = { "" };
    struct chat_message bad_role[] = { { 7, "x", 1 } };
    assert_int_equal(chat_encode_messages(t, bad_role, 1, ids, 64, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "unknown role 7"));
    struct chat_message bad_utf8[] = { { CHAT_ROLE_USER, "ok", 2 }, { CHAT_ROLE_ASSISTANT, "\xff", 1 } };
    assert_int_equal(chat_encode_messages(t, bad_utf8, 2, ids, 64, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "message 1 (assistant): invalid UTF-8"));
    /* the message API (BWP/1 chat prompts) keeps the same structure */
    struct chat_message tool_after_user[] = { { CHAT_ROLE_USER, "u", 1 }, { CHAT_ROLE_TOOL, "r", 1 } };
    assert_int_equal(chat_encode_messages(t, tool_after_user, 2, ids, 64, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "message 1: a tool message cannot follow a user message"));
    struct chat_message system_after_assistant[] = { { CHAT_ROLE_USER, "u", 1 }, { CHAT_ROLE_ASSISTANT, "a", 1 },
                                                     { CHAT_ROLE_SYSTEM, "s", 1 }, { CHAT_ROLE_USER, "u2", 2 } };
    assert_int_equal(chat_encode_messages(t, system_after_assistant, 4, ids, 64, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "message 2: a system message cannot follow an assistant message"));
    struct chat_message ends_assistant[] = { { CHAT_ROLE_SYSTEM, "s", 1 }, { CHAT_ROLE_USER, "u", 1 },
                                             { CHAT_ROLE_ASSISTANT, "a", 1 } };
    assert_int_equal(chat_encode_messages(t, ends_assistant, 3, ids, 64, &n, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "message 2: the conversation ends with an assistant message"));
    struct chat_message ok_order[] = { { CHAT_ROLE_USER, "u", 1 }, { CHAT_ROLE_ASSISTANT, "a", 1 },
                                       { CHAT_ROLE_TOOL, "r", 1 }, { CHAT_ROLE_TOOL, "r2", 2 } };
    assert_int_equal(chat_encode_messages(t, ok_order, 4, ids, 64, &n, &err), 0);
    tokenizer_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_samples_v3),
        cmocka_unit_test(test_sample_v1),
        cmocka_unit_test(test_messages_api),
        cmocka_unit_test(test_system_and_tool_placement),
        cmocka_unit_test(test_python_json),
        cmocka_unit_test(test_bad_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
