/* gen_test.h — a test-only generator for protocol tests (no model): deterministic tokens whose
 * behaviour the prompt text steers ("eos=N", "sleep=MS", "fail=start", "fail=step",
 * "bad=prepare", "utf8"). Linked into test binaries only, never into the product. */
#ifndef BORA_TESTS_GEN_TEST_H
#define BORA_TESTS_GEN_TEST_H

#include "dataplane/generator.h"

#define GEN_TEST_VOCAB 1000
#define GEN_TEST_CTX 256       /* its context: kind-2 prompts of this many ids are TOO_LARGE at the parser */
#define GEN_TEST_EOS   2

/* Fills g with the test generator (state in *g->impl, allocated; gen_test_close frees). */
int gen_test_init(struct generator *g);
void gen_test_close(struct generator *g);
/* The text gen_test produces for step i of a prompt (for assertions): "w<id> ". */
uint32_t gen_test_token_id(const struct gen_request *rq, uint32_t i);

#endif
