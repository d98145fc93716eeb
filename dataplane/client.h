/* client.h — a small BWP/1 client transport (used by `bora client`, the tests and the bench):
 * a connected UDP or TCP socket that sends frames and returns whole server frames, reassembling
 * them from the TCP stream. Thread: one thread per connection. */
#ifndef BORA_DATAPLANE_CLIENT_H
#define BORA_DATAPLANE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define BWP_CONN_RBUF (256u << 10)

struct bwp_conn {
    int fd;
    bool tcp;
    uint8_t *rbuf;                 /* TCP reassembly (BWP_CONN_RBUF) */
    size_t rlen;
};

/* Connects to "HOST:PORT" over UDP (connected socket) or TCP. Errors: -EINVAL (address),
 * socket errors (-ECONNREFUSED …) with a message naming the address. */
int bwp_conn_open(struct bwp_conn *c, const char *hostport, bool tcp, struct bora_err *err);
void bwp_conn_close(struct bwp_conn *c);
/* Sends one frame (UDP: one datagram; TCP: all bytes). 0 or -errno. */
int bwp_conn_send(struct bwp_conn *c, const uint8_t *frame, size_t n);
/* Receives one whole frame into buf: its size, 0 on timeout (timeout_ms < 0: wait forever),
 * -EPIPE when the TCP peer closed, -EPROTO when the TCP stream is not BWP/1 (a frame that does not
 * start with "BWP1"), -EMSGSIZE when a frame exceeds cap, other -errno. */
long bwp_conn_recv(struct bwp_conn *c, uint8_t *buf, size_t cap, int timeout_ms);
/* Half-closes a TCP connection's sending side (rule 15). */
int bwp_conn_shutdown_write(struct bwp_conn *c);

#endif
