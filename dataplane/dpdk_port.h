/* dpdk_port.h — the kernel-bypass transport: one DPDK ethdev port (any PMD: a NIC, or
 * net_af_packet for tests) driven by a poll loop on its own thread, answering ARP for its own
 * IPv4 address and carrying BWP/1 over IPv4/UDP (checksums verified on receive, computed on
 * send; datagrams larger than the MTU reassembled from their fragments). Frames go through the same port.c logic as the kernel sockets. Compiled in only when
 * the build defines BORA_DPDK (pkg-config libdpdk); otherwise every call returns -ENOTSUP.
 * Budget: rx burst → parse → enqueue ≤ 5 µs per request on the loop core (bench_dataplane). */
#ifndef BORA_DATAPLANE_DPDK_PORT_H
#define BORA_DATAPLANE_DPDK_PORT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct dp_shared;
struct dp_dpdk;

struct dp_dpdk_config {
    const char *eal_args;          /* EAL arguments, space-separated ("--no-huge --vdev=…") */
    uint32_t ip;                   /* own IPv4 address, network byte order */
    uint16_t udp_port;             /* UDP port served, host byte order */
};

/* True when this build has the DPDK port. */
bool dp_dpdk_available(void);
/* Initialises the EAL (once per process), configures the first ethdev port with one rx and
 * one tx queue, and creates the request port over sh. Errors: -ENOTSUP (built without DPDK),
 * -EINVAL (EAL arguments refused, no port found; the message says which), -ENOMEM, -EIO.
 * Thread: the caller's; before dp_dpdk_start. */
int dp_dpdk_open(struct dp_dpdk **out, struct dp_shared *sh, const struct dp_dpdk_config *c,
                 struct bora_err *err);
/* Starts the poll thread. */
int dp_dpdk_start(struct dp_dpdk *d, struct bora_err *err);
/* Requests in flight on this port (any thread). */
uint32_t dp_dpdk_live(const struct dp_dpdk *d);
/* Stops and joins the poll thread after sending what the decoder left for it. */
void dp_dpdk_stop(struct dp_dpdk *d);
void dp_dpdk_close(struct dp_dpdk *d);
/* The port's MAC as text ("aa:bb:…") for banners. */
const char *dp_dpdk_mac(const struct dp_dpdk *d);

/* Packet counters (read after dp_dpdk_stop, or as a racy snapshot while running). */
struct dp_dpdk_stats {
    uint64_t rx_pkts, tx_pkts, arp_replies, bad_cksum, no_arp, fragments, reassembled;
};
void dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_stats *out);

#endif
