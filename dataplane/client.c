/* client.c — the BWP/1 client transport of client.h (plain blocking sockets with poll). */
#include "dataplane/client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/bwp.h"
#include "dataplane/server.h"

int bwp_conn_open(struct bwp_conn *c, const char *hostport, bool tcp, struct bora_err *err)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    struct sockaddr_storage a;
    unsigned alen;
    int rc = dp_addr_parse(hostport, &a, &alen, err);
    if (rc < 0)
        return rc;
    c->fd = socket(a.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return bora_errf(err, -errno, "socket: %s", strerror(errno));
    c->tcp = tcp;
    if (tcp) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->rbuf = malloc(BWP_CONN_RBUF);
        if (!c->rbuf) {
            bwp_conn_close(c);
            return bora_errf(err, -ENOMEM, "out of memory");
        }
    } else {
        int big = 4 << 20;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    }
    if (connect(c->fd, (struct sockaddr *)&a, alen) < 0) {
        rc = -errno;
        bwp_conn_close(c);
        return bora_errf(err, rc, "%s connect to %s: %s", tcp ? "TCP" : "UDP", hostport, strerror(-rc));
    }
    return 0;
}

void bwp_conn_close(struct bwp_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->rbuf);
    c->fd = -1;
    c->rbuf = NULL;
}

int bwp_conn_send(struct bwp_conn *c, const uint8_t *frame, size_t n)
{
    size_t off = 0;
    do {
        ssize_t k = send(c->fd, frame + off, n - off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)k;
    } while (c->tcp && off < n);
    return 0;
}

int bwp_conn_shutdown_write(struct bwp_conn *c)
{
    return shutdown(c->fd, SHUT_WR) < 0 ? -errno : 0;
}

static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int rc;
    do rc = poll(&p, 1, timeout_ms); while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : rc;
}

long bwp_conn_recv(struct bwp_conn *c, uint8_t *buf, size_t cap, int timeout_ms)
{
    if (!c->tcp) {
        int rc = wait_readable(c->fd, timeout_ms);
        if (rc <= 0)
            return rc;
        ssize_t n = recv(c->fd, buf, cap, MSG_TRUNC);
        if (n < 0)
            return -errno;
        return (size_t)n > cap ? -EMSGSIZE : n;
    }
    for (;;) {
        /* a stream that does not start with BWP/1's magic has no frame boundaries to find: the
         * peer is not a BWP/1 server (an HTTP server answers "HTTP/1.1 400 ...") */
        if (c->rlen >= 4 && memcmp(c->rbuf, "BWP1", 4))
            return -EPROTO;
        if (c->rlen >= BWP_HDR_SIZE) {
            size_t need = BWP_HDR_SIZE + (size_t)bwp_rd32(c->rbuf + 8);
            if (need > cap || need > BWP_CONN_RBUF)
                return -EMSGSIZE;
            if (c->rlen >= need) {
                memcpy(buf, c->rbuf, need);
                memmove(c->rbuf, c->rbuf + need, c->rlen - need);
                c->rlen -= need;
                return (long)need;
            }
        }
        int rc = wait_readable(c->fd, timeout_ms);
        if (rc <= 0)
            return rc;
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, BWP_CONN_RBUF - c->rlen, 0);
        if (n == 0)
            return -EPIPE;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c->rlen += (size_t)n;
    }
}
