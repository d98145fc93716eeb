/* bwp_test.h — helpers for tests that drive a real dp_server on loopback: start/stop it in a
 * thread, send GENERATEs, and collect each request's frames checking the protocol's sequence
 * rules (seq 0,1,2…, ACCEPTED first, exactly one DONE or ERROR last). Test-only. */
#ifndef BORA_TESTS_BWP_TEST_H
#define BORA_TESTS_BWP_TEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dataplane/bwp.h"
#include "dataplane/client.h"
#include "dataplane/generator.h"
#include "dataplane/server.h"

struct test_srv_run;                 /* the server thread's own block (a test may copy test_srv) */
struct test_srv {
    struct dp_server *s;
    struct generator *g;   /* on the heap: a test that saves SRV and starts a private server in it
                            * must not rewrite the generator the shared server's decoder uses */
    pthread_t t;
    struct test_srv_run *run;
    char udp[64], tcp[64];
};

/* A config with small limits for tests (queue_depth 8, max_prompt_bytes 4096, max_tokens 512,
 * request_timeout_ms 30000, shutdown_grace_ms 5000, UDP and TCP on 127.0.0.1 port 0). */
struct dp_config test_srv_config(void);
/* Opens the server with the test generator and runs it in a thread; 0 or -errno. */
int test_srv_start(struct test_srv *v, const struct dp_config *cfg);
/* Stops it (drain), joins and closes it (test_srv_close); returns dp_server_run's result. */
int test_srv_stop(struct test_srv *v);
/* Joins a server that is stopping (no stop, no close); returns dp_server_run's result. */
int test_srv_join(struct test_srv *v);
/* Closes a joined server and its generator. */
void test_srv_close(struct test_srv *v);

/* A client connection to v's TCP (tcp) or UDP address; fails the running cmocka test with the
 * reason when it cannot connect. */
struct bwp_conn test_srv_conn(const struct test_srv *v, bool tcp);
/* Sleeps ms milliseconds. */
void test_sleep_ms(int ms);

/* One request as seen by a client. */
struct test_req {
    uint64_t rid;
    uint32_t next_seq;             /* seq expected next */
    bool accepted, ended, bad_seq, after_end;
    uint32_t queue_position, prompt_tokens;
    uint32_t n_tokens;
    uint32_t ids[1024];
    uint32_t n_ids;
    char text[8192];
    uint32_t text_len;
    bool done;
    struct bwp_done d;
    uint16_t error;
    char error_msg[256];
};

/* Sends a kind-0 GENERATE. */
int test_send_text(struct bwp_conn *c, uint64_t rid, const char *prompt, uint16_t max_tokens,
                   uint8_t options, uint32_t deadline_ms, const struct bwp_key *key);
/* Receives one frame (parsed; -EBADMSG if it does not parse) within timeout_ms: 1, 0 timeout. */
int test_recv(struct bwp_conn *c, uint8_t *buf, size_t cap, struct bwp_server_frame *f,
              int timeout_ms, const struct bwp_key *key);
/* Applies one received frame to the matching request in reqs[0..n) (by rid); returns its index
 * or -1 when no request matches. */
int test_apply(struct test_req *reqs, int n, const struct bwp_server_frame *f);
/* Receives until every request in reqs has ended or timeout_ms passes; returns how many ended. */
int test_collect(struct bwp_conn *c, struct test_req *reqs, int n, int timeout_ms,
                 const struct bwp_key *key);
/* Resident set size of this process in KiB. */
long test_rss_kib(void);

#endif
