/* dpdk_port.c — the DPDK transport of dpdk_port.h: EAL and ethdev setup, the poll loop (rx
 * burst → Ethernet → ARP or IPv4/UDP → port.c; response ring → Ethernet/IPv4/UDP packets → tx
 * burst), a small ARP table learnt from what arrives. Without BORA_DPDK only stubs remain. */
#include "dataplane/dpdk_port.h"

#include <errno.h>
#include <string.h>

#ifndef BORA_DPDK

bool dp_dpdk_available(void) { return false; }

int dp_dpdk_open(struct dp_dpdk **out, struct dp_shared *sh, const struct dp_dpdk_config *c,
                 struct bora_err *err)
{
    (void)out; (void)sh; (void)c;
    return bora_errf(err, -ENOTSUP, "this build has no DPDK port (build with libdpdk installed; "
                     "see dataplane/dpdk_port.h)");
}
int dp_dpdk_start(struct dp_dpdk *d, struct bora_err *err) { (void)d; return bora_errf(err, -ENOTSUP, "no DPDK"); }
uint32_t dp_dpdk_live(const struct dp_dpdk *d) { (void)d; return 0; }
void dp_dpdk_stop(struct dp_dpdk *d) { (void)d; }
void dp_dpdk_close(struct dp_dpdk *d) { (void)d; }
const char *dp_dpdk_mac(const struct dp_dpdk *d) { (void)d; return ""; }
void dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_stats *out) { (void)d; memset(out, 0, sizeof *out); }

#else

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_arp.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_ip_frag.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "dataplane/server_int.h"

#define DPDK_BURST          32
#define DPDK_MBUFS          4095
#define DPDK_MBUF_DATA      (9216 + RTE_PKTMBUF_HEADROOM)   /* jumbo frames fit one mbuf */
#define DPDK_MBUF_CACHE     256
#define DPDK_DESC           1024
#define DPDK_ARP_SLOTS      1024        /* learnt (IPv4 → MAC), direct-mapped */
#define DPDK_MAX_EAL_ARGS   64
#define DPDK_IDLE_POLLS     4096        /* empty polls before the loop naps (dev boxes, CI) */
#define DPDK_NAP_NS         50000
#define DPDK_FRAG_BUCKETS   1024        /* IPv4 reassembly table: buckets × entries */
#define DPDK_FRAG_ENTRIES   8
#define DPDK_FRAG_TTL_MS    2000        /* a datagram's fragments must all arrive within this */
#define DPDK_FLAT_BYTES     (65536 + 128)

struct arp_entry {
    uint32_t ip;                        /* network order; 0 = empty */
    struct rte_ether_addr mac;
};

struct dp_dpdk {
    struct dp_port port;
    uint16_t port_id;
    struct rte_mempool *pool;
    struct rte_ether_addr mac;
    char mac_text[RTE_ETHER_ADDR_FMT_SIZE];
    uint32_t ip;                        /* network order */
    uint16_t udp_port_be;
    uint16_t ip_id;
    struct arp_entry arp[DPDK_ARP_SLOTS];
    struct rte_mbuf *tx[DPDK_BURST];
    uint16_t n_tx;
    struct rte_ip_frag_tbl *frags;      /* datagrams larger than the MTU arrive in fragments */
    struct rte_ip_frag_death_row death_row;
    uint8_t *flat;                      /* (DPDK_FLAT_BYTES) a reassembled packet, contiguous */
    pthread_t thread;
    bool started, dev_started;
    _Atomic uint32_t stop;              /* io thread → poll loop (release/acquire) */
    uint64_t rx_pkts, tx_pkts, bad_cksum, no_arp, arp_replies, reassembled, fragments;
};

/* The EAL can be initialised once per process: set once, never reset. */
static bool eal_ready;

bool dp_dpdk_available(void) { return true; }

/* ---- ARP table ---- */

static struct arp_entry *arp_slot(struct dp_dpdk *d, uint32_t ip)
{
    uint32_t h = ip * 2654435761u;
    return &d->arp[(h >> 16) & (DPDK_ARP_SLOTS - 1)];
}

static void arp_learn(struct dp_dpdk *d, uint32_t ip, const struct rte_ether_addr *mac)
{
    struct arp_entry *e = arp_slot(d, ip);
    e->ip = ip;
    rte_ether_addr_copy(mac, &e->mac);
}

/* ---- transmit ---- */

static void tx_flush(struct dp_dpdk *d)
{
    uint16_t off = 0;
    while (off < d->n_tx) {
        uint16_t k = rte_eth_tx_burst(d->port_id, 0, d->tx + off, d->n_tx - off);
        if (k == 0)
            break;
        off += k;
    }
    d->tx_pkts += off;
    for (uint16_t i = off; i < d->n_tx; i++)     /* the NIC queue is full: drop like a network */
        rte_pktmbuf_free(d->tx[i]);
    d->n_tx = 0;
}

static void tx_queue(struct dp_dpdk *d, struct rte_mbuf *m)
{
    d->tx[d->n_tx++] = m;
    if (d->n_tx == DPDK_BURST)
        tx_flush(d);
}

/* port.c's send: one BWP frame to peer as an Ethernet/IPv4/UDP packet. */
static void dpdk_send(struct dp_port *p, const struct dp_peer *peer, const uint8_t *frame, size_t len)
{
    struct dp_dpdk *d = p->owner;
    uint32_t dst = peer->a.in.sin_addr.s_addr;
    struct arp_entry *e = arp_slot(d, dst);
    if (e->ip != dst) {
        d->no_arp++;                     /* forgotten neighbour: the client repairs by RESEND */
        return;
    }
    size_t l4 = sizeof(struct rte_udp_hdr) + len;
    size_t total = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + l4;
    struct rte_mbuf *m = rte_pktmbuf_alloc(d->pool);
    if (!m)
        return;
    uint8_t *b = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)total);
    if (!b) {
        rte_pktmbuf_free(m);
        return;
    }
    struct rte_ether_hdr *eth = (struct rte_ether_hdr *)b;
    struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
    struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
    rte_ether_addr_copy(&e->mac, &eth->dst_addr);
    rte_ether_addr_copy(&d->mac, &eth->src_addr);
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    memset(ip, 0, sizeof *ip);
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *ip + l4));
    ip->packet_id = rte_cpu_to_be_16(d->ip_id++);
    ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
    ip->time_to_live = 64;
    ip->next_proto_id = IPPROTO_UDP;
    ip->src_addr = d->ip;
    ip->dst_addr = dst;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    udp->src_port = d->udp_port_be;
    udp->dst_port = peer->a.in.sin_port;
    udp->dgram_len = rte_cpu_to_be_16((uint16_t)l4);
    udp->dgram_cksum = 0;
    memcpy(udp + 1, frame, len);
    udp->dgram_cksum = rte_ipv4_udptcp_cksum(ip, udp);
    tx_queue(d, m);
}

static const struct dp_port_ops dpdk_port_ops = { .send = dpdk_send };

/* ---- receive ---- */

static void on_arp(struct dp_dpdk *d, const struct rte_ether_hdr *eth, uint32_t len)
{
    if (len < sizeof *eth + sizeof(struct rte_arp_hdr))
        return;
    const struct rte_arp_hdr *a = (const struct rte_arp_hdr *)(eth + 1);
    if (a->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        a->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || a->arp_hlen != 6 || a->arp_plen != 4)
        return;
    if (a->arp_data.arp_sip)
        arp_learn(d, a->arp_data.arp_sip, &a->arp_data.arp_sha);
    if (a->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) || a->arp_data.arp_tip != d->ip)
        return;
    struct rte_mbuf *m = rte_pktmbuf_alloc(d->pool);
    if (!m)
        return;
    uint8_t *b = (uint8_t *)rte_pktmbuf_append(m, sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr));
    if (!b) {
        rte_pktmbuf_free(m);
        return;
    }
    struct rte_ether_hdr *re = (struct rte_ether_hdr *)b;
    struct rte_arp_hdr *ra = (struct rte_arp_hdr *)(re + 1);
    rte_ether_addr_copy(&a->arp_data.arp_sha, &re->dst_addr);
    rte_ether_addr_copy(&d->mac, &re->src_addr);
    re->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    *ra = *a;
    ra->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    rte_ether_addr_copy(&d->mac, &ra->arp_data.arp_sha);
    ra->arp_data.arp_sip = d->ip;
    rte_ether_addr_copy(&a->arp_data.arp_sha, &ra->arp_data.arp_tha);
    ra->arp_data.arp_tip = a->arp_data.arp_sip;
    d->arp_replies++;
    tx_queue(d, m);
}

/* A UDP checksum over pseudo-header + datagram (field included) must fold to 0xffff. */
static bool udp_cksum_ok(const struct rte_ipv4_hdr *ip, const struct rte_udp_hdr *udp, uint32_t ulen)
{
    uint32_t sum = rte_ipv4_phdr_cksum(ip, 0);
    sum += rte_raw_cksum(udp, ulen);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

/* The UDP datagram of a whole (unfragmented or reassembled) IPv4 packet in contiguous memory. */
static void on_udp(struct dp_dpdk *d, const struct rte_ether_hdr *eth, const struct rte_ipv4_hdr *ip)
{
    uint32_t ihl = rte_ipv4_hdr_len(ip);
    uint32_t tot = rte_be_to_cpu_16(ip->total_length);
    const struct rte_udp_hdr *udp = (const struct rte_udp_hdr *)((const uint8_t *)ip + ihl);
    uint32_t ulen = rte_be_to_cpu_16(udp->dgram_len);
    if (tot < ihl + sizeof *udp || udp->dst_port != d->udp_port_be || ulen < sizeof *udp || ulen != tot - ihl)
        return;
    if (udp->dgram_cksum && !udp_cksum_ok(ip, udp, ulen)) {
        d->bad_cksum++;
        return;
    }
    arp_learn(d, ip->src_addr, &eth->src_addr);
    struct dp_peer peer;
    memset(&peer, 0, sizeof peer);
    peer.a.in.sin_family = AF_INET;
    peer.a.in.sin_port = udp->src_port;
    peer.a.in.sin_addr.s_addr = ip->src_addr;
    peer.alen = sizeof peer.a.in;
    dp_port_frame(&d->port, &peer, &peer.a.sa, (const uint8_t *)(udp + 1), ulen - sizeof *udp);
}

/* Checks one IPv4 packet or fragment; returns its header when it is UDP for us, else NULL. */
static const struct rte_ipv4_hdr *ipv4_for_us(struct dp_dpdk *d, const struct rte_ether_hdr *eth, uint32_t len)
{
    if (len < sizeof *eth + sizeof(struct rte_ipv4_hdr))
        return NULL;
    const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(eth + 1);
    uint32_t ihl = rte_ipv4_hdr_len(ip);
    uint32_t tot = rte_be_to_cpu_16(ip->total_length);
    if ((ip->version_ihl >> 4) != 4 || ihl < sizeof *ip || tot < ihl || tot > len - sizeof *eth)
        return NULL;
    if (rte_ipv4_cksum(ip) != 0) {       /* a valid header sums to 0xffff */
        d->bad_cksum++;
        return NULL;
    }
    if (ip->dst_addr != d->ip || ip->next_proto_id != IPPROTO_UDP)
        return NULL;
    return ip;
}

/* A fragment: into the reassembly table; a whole datagram comes out when its last part is in.
 * Returns true when m was kept by the table. */
static bool on_fragment(struct dp_dpdk *d, struct rte_mbuf *m, const struct rte_ipv4_hdr *ip)
{
    d->fragments++;
    m->l2_len = sizeof(struct rte_ether_hdr);
    m->l3_len = rte_ipv4_hdr_len(ip);
    struct rte_mbuf *whole = rte_ipv4_frag_reassemble_packet(d->frags, &d->death_row, m, rte_rdtsc(),
                                                             (struct rte_ipv4_hdr *)(uintptr_t)ip);
    if (!whole)
        return true;                     /* held until its other fragments arrive (or expire) */
    uint32_t len = rte_pktmbuf_pkt_len(whole);
    if (len <= DPDK_FLAT_BYTES) {
        /* the table rewrote the header (length, offset) but not its checksum: not re-verified */
        const uint8_t *flat = rte_pktmbuf_read(whole, 0, len, d->flat);
        const struct rte_ether_hdr *eth = (const struct rte_ether_hdr *)flat;
        const struct rte_ipv4_hdr *ip2 = (const struct rte_ipv4_hdr *)(flat + whole->l2_len);
        d->reassembled++;
        if ((uint32_t)rte_be_to_cpu_16(ip2->total_length) + whole->l2_len <= len)
            on_udp(d, eth, ip2);
    }
    rte_pktmbuf_free(whole);
    return true;
}

static void on_packet(struct dp_dpdk *d, struct rte_mbuf *m)
{
    d->rx_pkts++;
    bool kept = false;
    uint32_t len = rte_pktmbuf_pkt_len(m);
    /* a packet in several segments (jumbo, or reassembled by the PMD) is read into one buffer */
    const uint8_t *data = m->nb_segs == 1 ? rte_pktmbuf_mtod(m, const uint8_t *)
                        : len <= DPDK_FLAT_BYTES ? rte_pktmbuf_read(m, 0, len, d->flat) : NULL;
    if (data && len >= sizeof(struct rte_ether_hdr)) {
        const struct rte_ether_hdr *eth = (const struct rte_ether_hdr *)data;
        uint16_t type = rte_be_to_cpu_16(eth->ether_type);
        const struct rte_ipv4_hdr *ip;
        if (type == RTE_ETHER_TYPE_ARP)
            on_arp(d, eth, len);
        else if (type == RTE_ETHER_TYPE_IPV4 && (ip = ipv4_for_us(d, eth, len))) {
            if (!rte_ipv4_frag_pkt_is_fragmented(ip))
                on_udp(d, eth, ip);
            else if (m->nb_segs == 1)
                kept = on_fragment(d, m, ip);
        }
    }
    if (!kept)
        rte_pktmbuf_free(m);
}

/* ---- the poll loop ---- */

static void *poll_main(void *arg)
{
    struct dp_dpdk *d = arg;
    struct rte_mbuf *pkts[DPDK_BURST];
    rte_thread_register();
    d->port.ms = metrics_shard_claim(d->port.sh->metrics, "dpdk");
    d->port.mt = METRICS_DPDK;
    uint32_t idle = 0, iter = 0;
    /* acquire pairs with dp_dpdk_stop's release */
    while (!atomic_load_explicit(&d->stop, memory_order_acquire)) {
        uint16_t n = rte_eth_rx_burst(d->port_id, 0, pkts, DPDK_BURST);
        for (uint16_t i = 0; i < n; i++)
            on_packet(d, pkts[i]);
        bool busy = dp_port_responses(&d->port) || n;
        if (d->n_tx)
            tx_flush(d);
        if (d->death_row.cnt)
            rte_ip_frag_free_death_row(&d->death_row, 3);
        if ((++iter & 1023) == 0)
            dp_port_tick(&d->port, dp_mono_us());
        if (busy) {
            idle = 0;
        } else if (++idle > DPDK_IDLE_POLLS && dp_port_live(&d->port) == 0) {
            struct timespec ts = { 0, DPDK_NAP_NS };
            nanosleep(&ts, NULL);
        }
    }
    dp_port_responses(&d->port);
    tx_flush(d);
    rte_thread_unregister();
    return NULL;
}

/* ---- setup ---- */

static int eal_init(const char *args, struct bora_err *err)
{
    if (eal_ready)
        return 0;
    static char buf[1024];               /* the EAL keeps pointers into argv */
    static char *argv[DPDK_MAX_EAL_ARGS + 2];
    int argc = 0;
    snprintf(buf, sizeof buf, "%s", args ? args : "");
    argv[argc++] = "borad";
    for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (argc > DPDK_MAX_EAL_ARGS)
            return bora_errf(err, -EINVAL, "dataplane.dpdk: more than %d EAL arguments", DPDK_MAX_EAL_ARGS);
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    if (rte_eal_init(argc, argv) < 0)
        return bora_errf(err, -EINVAL, "dataplane.dpdk: EAL refused '%s': %s", args, rte_strerror(rte_errno));
    eal_ready = true;
    return 0;
}

static int port_setup(struct dp_dpdk *d, struct bora_err *err)
{
    uint16_t pid = RTE_MAX_ETHPORTS;
    uint16_t i;
    RTE_ETH_FOREACH_DEV(i) {
        pid = i;
        break;
    }
    if (pid == RTE_MAX_ETHPORTS)
        return bora_errf(err, -EINVAL, "dataplane.dpdk: no DPDK port (bind a NIC or add --vdev=net_af_packet0,iface=IF)");
    d->port_id = pid;
    d->pool = rte_pktmbuf_pool_create("bora_mbufs", DPDK_MBUFS, DPDK_MBUF_CACHE, 0,
                                      DPDK_MBUF_DATA, (int)rte_eth_dev_socket_id(pid));
    if (!d->pool)
        return bora_errf(err, -ENOMEM, "dataplane.dpdk: mbuf pool: %s", rte_strerror(rte_errno));
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof conf);
    uint16_t nrx = DPDK_DESC, ntx = DPDK_DESC;
    int rc;
    if ((rc = rte_eth_dev_configure(pid, 1, 1, &conf)) < 0 ||
        (rc = rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nrx, &ntx)) < 0 ||
        (rc = rte_eth_rx_queue_setup(pid, 0, nrx, (unsigned)rte_eth_dev_socket_id(pid), NULL, d->pool)) < 0 ||
        (rc = rte_eth_tx_queue_setup(pid, 0, ntx, (unsigned)rte_eth_dev_socket_id(pid), NULL)) < 0 ||
        (rc = rte_eth_dev_start(pid)) < 0)
        return bora_errf(err, -EIO, "dataplane.dpdk: port %u setup: %s", pid, rte_strerror(-rc));
    d->dev_started = true;
    uint64_t ttl = (rte_get_tsc_hz() + 999) / 1000 * DPDK_FRAG_TTL_MS;
    d->frags = rte_ip_frag_table_create(DPDK_FRAG_BUCKETS, DPDK_FRAG_ENTRIES,
                                        DPDK_FRAG_BUCKETS * DPDK_FRAG_ENTRIES, ttl, (int)rte_socket_id());
    d->flat = malloc(DPDK_FLAT_BYTES);
    if (!d->frags || !d->flat)
        return bora_errf(err, -ENOMEM, "dataplane.dpdk: IPv4 reassembly table");
    rte_eth_macaddr_get(pid, &d->mac);
    rte_ether_format_addr(d->mac_text, sizeof d->mac_text, &d->mac);
    return 0;
}

int dp_dpdk_open(struct dp_dpdk **out, struct dp_shared *sh, const struct dp_dpdk_config *c,
                 struct bora_err *err)
{
    if (!c->ip)
        return bora_errf(err, -EINVAL, "dataplane.dpdk_ip: the DPDK port needs its own IPv4 address");
    int rc = eal_init(c->eal_args, err);
    if (rc < 0)
        return rc;
    struct dp_dpdk *d = calloc(1, sizeof *d);
    if (!d)
        return bora_errf(err, -ENOMEM, "dataplane.dpdk: out of memory");
    d->ip = c->ip;
    d->udp_port_be = rte_cpu_to_be_16(c->udp_port);
    if ((rc = port_setup(d, err)) < 0 || (rc = dp_port_init(&d->port, sh, &dpdk_port_ops, d, -1, err)) < 0) {
        dp_dpdk_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

int dp_dpdk_start(struct dp_dpdk *d, struct bora_err *err)
{
    int rc = pthread_create(&d->thread, NULL, poll_main, d);
    if (rc)
        return bora_errf(err, -rc, "dataplane.dpdk: cannot start the poll thread: %s", strerror(rc));
    d->started = true;
    return 0;
}

uint32_t dp_dpdk_live(const struct dp_dpdk *d)
{
    return d ? dp_port_live(&d->port) : 0;
}

void dp_dpdk_stop(struct dp_dpdk *d)
{
    if (!d || !d->started)
        return;
    atomic_store_explicit(&d->stop, 1, memory_order_release);
    pthread_join(d->thread, NULL);
    d->started = false;
}

void dp_dpdk_close(struct dp_dpdk *d)
{
    if (!d)
        return;
    dp_dpdk_stop(d);
    if (d->dev_started) {
        rte_eth_dev_stop(d->port_id);
        rte_eth_dev_close(d->port_id);
    }
    if (d->frags) {
        rte_ip_frag_free_death_row(&d->death_row, 0);
        rte_ip_frag_table_destroy(d->frags);
    }
    free(d->flat);
    if (d->pool)
        rte_mempool_free(d->pool);
    dp_port_fini(&d->port);
    free(d);
}

void dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_stats *out)
{
    *out = (struct dp_dpdk_stats){ .rx_pkts = d->rx_pkts, .tx_pkts = d->tx_pkts, .arp_replies = d->arp_replies,
                                   .bad_cksum = d->bad_cksum, .no_arp = d->no_arp,
                                   .reassembled = d->reassembled, .fragments = d->fragments };
}

const char *dp_dpdk_mac(const struct dp_dpdk *d)
{
    return d ? d->mac_text : "";
}

#endif
