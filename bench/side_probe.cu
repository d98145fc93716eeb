/* side_probe.cu — do the SMs that do not stream keep fast memory round trips while the others
 * stream the weights?
 *
 * The persistent decode kernel (kernels/decode_mega.cu) runs 128 blocks, one per SM, on a
 * 132-SM H200; 4 SMs idle. Every pause of a layer is a chain of round trips through L2, and the
 * cluster probe showed each of them grows by ≈ 1 µs for every 32 KiB the SM has in flight
 * (docs/PERFORMANCE_GPU.md, "What a meeting costs"). There every SM streamed. If the queue a
 * round trip waits in belongs to the SM (its path to and from L2), an SM with nothing in flight
 * would keep idle-speed round trips while the other 128 stream at full rate, and a layer's
 * latency-bound work (attention at short context) could run on such side SMs while the
 * streaming SMs fetch the next matrix. If the queue is shared (L2 slices, the fabric, DRAM),
 * the side SMs slow down as much as the streaming ones.
 *
 * Blocks 0..127 stream: one thread keeps 0, 1, 2, 4 or 6 bulk copies of 32 KiB in flight from a
 * 4 GiB buffer with the kernel's L2 evict-first policy, until the side blocks are done. The
 * other blocks (sms − 128, the side blocks) measure, one kind per launch:
 *   chase      one thread's chain of dependent 4-byte loads (ld.global.cg) in an L2-resident
 *              256 KiB ring: ns per load
 *   l2 read    the block reads its own 768 KiB (an attention item's K and V for two kv heads
 *              of a 7B model at 768 positions) from an L2-resident region, 16-byte loads, four
 *              in flight a thread: µs per pass and GB/s of the one SM
 *   dram read  the same from memory not in L2 (a 1 GiB buffer walked once)
 *   meet       the side blocks meet at a global counter (fence + red + poll, the kernel's
 *              barrier): µs per meeting
 * and the streaming blocks' aggregate GB/s over the same time says what the stream kept.
 *
 * Build: make (with CUDA) builds build/bench/side_probe.
 * Run:   build/bench/side_probe [side_blocks]   one table on stdout (default: sms − 128). */
#include "bench/probe_util.cuh"

#define THREADS 512
#define STAGE (32 * 1024)
#define NS_MAX 6
#define NSTREAM 128
#define SLICE (768 * 1024)          /* bytes a side block reads a pass */
#define CHASE_BYTES (256 * 1024)
#define CHASE_STEP 32               /* u32 entries between chain links: 128 bytes, one line */
#define CHASE_N (CHASE_BYTES / 4 / CHASE_STEP)
#define SMEM (200 * 1024)

enum { M_CHASE, M_L2READ, M_DRAMREAD, M_MEET, M_N };
static const char *const mode_name[M_N] = { "chase (ns/load)", "l2 read 768 KiB (us)", "dram read 768 KiB (us)",
                                            "side meeting (us)" };
static const int mode_reps[M_N] = { 4000, 200, 200, 2000 };

struct sparams {
    const uint8_t *buf;              /* the weight stream's source */
    size_t buf_bytes;
    const uint8_t *kv;               /* L2-resident: SLICE per side block */
    const uint8_t *cold;             /* not in L2: walked once */
    size_t cold_bytes;
    const uint32_t *chase;           /* CHASE_N links, CHASE_STEP apart */
    int *ctr, *done;
    unsigned long long *side_ns;     /* per side block: ns of its reps */
    unsigned long long *st_bytes, *st_ns;   /* per streaming block */
    int mode, stream, nside, reps;
};

__device__ __forceinline__ unsigned long long now_ns(void)
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ uint32_t ld_cg_u32(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* All threads read bytes from src once, 16 bytes a load, four in flight a thread. */
__device__ __forceinline__ uint32_t read_pass(const uint8_t *src, size_t bytes)
{
    const uint4 *p = (const uint4 *)src;
    const size_t n = bytes / 16;
    uint32_t a = 0;
    for (size_t i = threadIdx.x; i < n; i += 4 * THREADS) {
        uint4 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            v[k] = i + k * THREADS < n ? __ldcg(p + i + k * THREADS) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int k = 0; k < 4; k++)
            a ^= v[k].x ^ v[k].w;
    }
    return a;
}

__global__ void __launch_bounds__(THREADS, 1) k_side(const __grid_constant__ sparams P)
{
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = (uint64_t *)sm;
    uint8_t *ring = sm + 128;
    const int tid = threadIdx.x, b = blockIdx.x;

    if (b < NSTREAM) {   /* a streaming block: one thread keeps P.stream copies in flight */
        if (tid != 0 || P.stream == 0)
            return;
        for (int i = 0; i < P.stream; i++)
            mbar_init(&full[i], 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        const uint64_t pol = kern_policy_evict_first();
        const size_t stages = P.buf_bytes / STAGE;
        size_t s = (size_t)b * 977;
        uint32_t parity = 0;
        const int ns = P.stream;
        for (int i = 0; i < ns; i++, s++) {
            mbar_expect_tx(&full[i], STAGE);
            mega_bulk_hint(ring + (size_t)i * STAGE, P.buf + (s % stages) * STAGE, STAGE, &full[i], pol);
        }
        unsigned long long bytes = 0, t0 = now_ns();
        for (int i = 0, k = 0;; i = (i + 1) % ns, s++, k++) {
            mbar_wait(&full[i], (parity >> i) & 1u);
            parity ^= 1u << i;
            bytes += STAGE;
            if ((k & 7) == 7 && *(volatile int *)P.done >= P.nside) {
                for (int j = 0; j < ns; j++)
                    if (j != i)
                        mbar_wait(&full[j], (parity >> j) & 1u);
                break;
            }
            mbar_expect_tx(&full[i], STAGE);
            mega_bulk_hint(ring + (size_t)i * STAGE, P.buf + (s % stages) * STAGE, STAGE, &full[i], pol);
        }
        P.st_bytes[b] = bytes;
        P.st_ns[b] = now_ns() - t0;
        return;
    }

    /* a side block */
    const int sb = b - NSTREAM;
    uint32_t acc = 0;
    __shared__ unsigned long long t_start;
    if (tid == 0) {   /* let the stream reach its rate first */
        const unsigned long long t = now_ns();
        while (now_ns() - t < 50000)
            ;
    }
    const uint8_t *mine = P.kv + (size_t)sb * SLICE;
    if (P.mode == M_L2READ)   /* into L2 before the clock starts */
        for (int w = 0; w < 3; w++)
            acc ^= read_pass(mine, SLICE);
    uint32_t j = (uint32_t)sb * 97 % CHASE_N;   /* the chase's position, carried from link to link */
    if (P.mode == M_CHASE && tid == 0)
        for (int w = 0; w < 2 * CHASE_N; w++)
            j = ld_cg_u32(P.chase + (size_t)j * CHASE_STEP);
    __syncthreads();
    if (tid == 0)
        t_start = now_ns();
    __syncthreads();
    for (int r = 0; r < P.reps; r++) {
        if (P.mode == M_CHASE) {
            if (tid == 0)
                j = ld_cg_u32(P.chase + (size_t)j * CHASE_STEP);
        } else if (P.mode == M_L2READ) {
            acc ^= read_pass(mine, SLICE);
            __syncthreads();
        } else if (P.mode == M_DRAMREAD) {
            const size_t off = ((size_t)r * P.nside + sb) * SLICE % (P.cold_bytes - SLICE + 1);
            acc ^= read_pass(P.cold + off / 16 * 16, SLICE);
            __syncthreads();
        } else {
            if (tid == 0) {
                asm volatile("fence.acq_rel.gpu;" ::: "memory");
                asm volatile("red.relaxed.gpu.global.add.s32 [%0], 1;" ::"l"(P.ctr) : "memory");
                while (mega_ld_acquire(P.ctr) < (r + 1) * P.nside)
                    ;
            }
            __syncthreads();
        }
    }
    __syncthreads();
    if (tid == 0) {
        P.side_ns[sb] = now_ns() - t_start;
        atomicAdd(P.done, 1);
    }
    if ((acc ^ j) == 0x9e3779b9u)
        g_sink = acc;
}

/* One thread's chain of dependent loads with nothing else running: the idle reference. */
__global__ void k_chain(const uint32_t *chase, int links, unsigned long long *ns, uint32_t start)
{
    uint32_t j = start % CHASE_N;
    for (int w = 0; w < CHASE_N; w++)   /* warm */
        j = ld_cg_u32(chase + (size_t)j * CHASE_STEP);
    const unsigned long long t0 = now_ns();
    for (int i = 0; i < links; i++)
        j = ld_cg_u32(chase + (size_t)j * CHASE_STEP);
    *ns = now_ns() - t0;
    if (j == 0xffffffffu)
        g_sink = j;
}

struct run_out {
    double side;      /* per rep, mean over side blocks: ns (chase) or µs */
    double side_gbs;  /* one side SM's GB/s (reads) */
    double st_gbs;    /* the streaming blocks together */
};

static run_out run(sparams P, int mode, int stream, unsigned long long *h_side, unsigned long long *h_b,
                   unsigned long long *h_n)
{
    P.mode = mode;
    P.stream = stream;
    P.reps = mode_reps[mode];
    CK(cudaMemset(P.ctr, 0, sizeof(int)));
    CK(cudaMemset(P.done, 0, sizeof(int)));
    CK(cudaMemset(P.st_bytes, 0, sizeof(unsigned long long) * NSTREAM));
    CK(cudaMemset(P.st_ns, 0, sizeof(unsigned long long) * NSTREAM));
    void *args[] = { &P };
    CK(cudaLaunchCooperativeKernel((const void *)k_side, dim3(NSTREAM + P.nside), dim3(THREADS), args, SMEM, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h_side, P.side_ns, sizeof(unsigned long long) * P.nside, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(h_b, P.st_bytes, sizeof(unsigned long long) * NSTREAM, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(h_n, P.st_ns, sizeof(unsigned long long) * NSTREAM, cudaMemcpyDeviceToHost));
    run_out o = {};
    double s = 0;
    for (int i = 0; i < P.nside; i++)
        s += (double)h_side[i];
    s /= P.nside;   /* ns of all reps */
    o.side = mode == M_CHASE ? s / P.reps : s / P.reps / 1e3;
    o.side_gbs = mode == M_L2READ || mode == M_DRAMREAD ? (double)SLICE * P.reps / s : 0;
    double bytes = 0, span = 0;
    for (int i = 0; i < NSTREAM; i++) {
        bytes += (double)h_b[i];
        span += (double)h_n[i];
    }
    o.st_gbs = stream ? bytes / (span / NSTREAM) : 0;
    return o;
}

int main(int argc, char **argv)
{
    int sms = 0, optin = 0;
    probe_device(&sms, &optin);
    const int nside = argc > 1 ? atoi(argv[1]) : sms - NSTREAM;
    if (nside < 1 || NSTREAM + nside > sms || SMEM > optin) {
        fprintf(stderr, "side_probe: %d SMs, %d side blocks (1..%d), %d bytes of shared memory a block\n", sms, nside,
                sms - NSTREAM, optin);
        return 2;
    }
    CK(cudaFuncSetAttribute(k_side, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    sparams P = {};
    P.buf_bytes = (size_t)4 << 30;
    P.cold_bytes = (size_t)1 << 30;
    uint8_t *buf = probe_buffer(P.buf_bytes), *cold = probe_buffer(P.cold_bytes), *kv = probe_buffer((size_t)SLICE * nside);
    P.buf = buf;
    P.cold = cold;
    P.kv = kv;
    P.nside = nside;
    /* the chase: one random cycle over CHASE_N lines */
    uint32_t *h_chase = (uint32_t *)calloc((size_t)CHASE_N * CHASE_STEP, 4), *perm = (uint32_t *)malloc(4 * CHASE_N);
    for (uint32_t i = 0; i < CHASE_N; i++)
        perm[i] = i;
    uint64_t rs = 0x9e3779b97f4a7c15ull;
    for (uint32_t i = CHASE_N - 1; i > 0; i--) {
        rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
        const uint32_t j = (uint32_t)(rs % (i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (uint32_t i = 0; i < CHASE_N; i++)
        h_chase[(size_t)perm[i] * CHASE_STEP] = perm[(i + 1) % CHASE_N];
    uint32_t *d_chase;
    CK(cudaMalloc(&d_chase, (size_t)CHASE_N * CHASE_STEP * 4));
    CK(cudaMemcpy(d_chase, h_chase, (size_t)CHASE_N * CHASE_STEP * 4, cudaMemcpyHostToDevice));
    P.chase = d_chase;
    CK(cudaMalloc(&P.ctr, sizeof(int)));
    CK(cudaMalloc(&P.done, sizeof(int)));
    CK(cudaMalloc(&P.side_ns, sizeof(unsigned long long) * nside));
    CK(cudaMalloc(&P.st_bytes, sizeof(unsigned long long) * NSTREAM));
    CK(cudaMalloc(&P.st_ns, sizeof(unsigned long long) * NSTREAM));
    unsigned long long h_side[64], h_b[NSTREAM], h_n[NSTREAM];

    /* the read reference of this process (as the decode benchmark's) and one idle chain */
    struct rctx {
        const uint4 *p;
        size_t n;
        int grid;
    } rc = { (const uint4 *)buf, P.buf_bytes / 16, sms * 8 };
    const float ref_ms = time_ms(
        [](void *c) {
            const rctx *r = (const rctx *)c;
            k_ref<<<r->grid, 256>>>(r->p, r->n);
        },
        &rc, 9);
    unsigned long long *d_ns, h_ns = 0;
    CK(cudaMalloc(&d_ns, sizeof h_ns));
    k_chain<<<1, 1>>>(d_chase, 4096, d_ns, 7);
    CK(cudaMemcpy(&h_ns, d_ns, sizeof h_ns, cudaMemcpyDeviceToHost));
    printf("side_probe: %d SMs, %d streaming blocks, %d side blocks; read reference %.0f GB/s; "
           "one lone thread's L2 chain %.0f ns/load\n",
           sms, NSTREAM, nside, (double)P.buf_bytes / ref_ms / 1e6, (double)h_ns / 4096);
    static const int depth[] = { 0, 1, 2, 4, 6 };
    const int nd = 5;
    run_out o[M_N][5];
    for (int m = 0; m < M_N; m++)
        for (int d = 0; d < nd; d++)
            o[m][d] = run(P, m, depth[d], h_side, h_b, h_n);
    printf("%-26s", "in flight a streaming SM:");
    for (int d = 0; d < nd; d++)
        printf(" %7d x 32K", depth[d]);
    printf("\n");
    for (int m = 0; m < M_N; m++) {
        printf("%-26s", mode_name[m]);
        for (int d = 0; d < nd; d++)
            printf(" %12.3f", o[m][d].side);
        printf("\n");
        if (m == M_L2READ || m == M_DRAMREAD) {
            printf("%-26s", "  one side SM, GB/s");
            for (int d = 0; d < nd; d++)
                printf(" %12.1f", o[m][d].side_gbs);
            printf("\n");
        }
        printf("%-26s", "  streaming blocks, GB/s");
        for (int d = 0; d < nd; d++)
            printf(" %12.0f", o[m][d].st_gbs);
        printf("\n");
    }
    free(h_chase);
    free(perm);
    CK(cudaFree(buf));
    CK(cudaFree(cold));
    CK(cudaFree(kv));
    CK(cudaFree(d_chase));
    CK(cudaFree(d_ns));
    return 0;
}
