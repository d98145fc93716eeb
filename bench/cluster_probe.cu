/* cluster_probe.cu — would thread-block clusters make the decode kernel's pauses shorter?
 *
 * The persistent decode kernel (kernels/decode_mega.cu) meets at grid-wide barriers in global
 * memory: a block's arrival is a fence and an atomic, its wait a poll, and the phase's input is
 * then read from L2 — each a round trip that gets slower while the weight stream is in flight
 * (docs/PERFORMANCE_GPU.md, "Ninth session"). Between qkv and attention only the ~16 blocks that
 * write one kv head's rows need to meet; as a cluster they could meet at mbarriers in each
 * other's shared memory and push their outputs there (distributed shared memory) instead.
 *
 * This probe answers the two questions that come first:
 *   1. How many blocks of the kernel's shape (512 threads and ~200 KiB of shared memory, one per
 *      SM) fit as clusters of 1-16 on this GPU (cudaOccupancyMaxActiveClusters), and does a
 *      cooperative launch take cluster dimensions?
 *   2. What does one meeting cost, with and without a weight stream in flight, for clusters of
 *      2, 8 and 16 with as many blocks (at most 128) as fit:
 *        grid        fence.acq_rel + red to a global counter, poll with ld.acquire (as the kernel)
 *        grid+load   the same, then every block reads a 16 KiB vector the others wrote (an input load)
 *        cluster     every block arrives (release.cluster) on every peer's mbarrier, waits on its own
 *        cluster+push  the same, after writing 256 bytes into each peer's shared memory first
 *   The stream: one warp a block keeps 1, 2 or 4 bulk copies of 32 KiB in flight (4: 128 KiB per
 *   SM, as the kernel's ring while it streams; 1: as its producer held at a barrier) over a 4 GiB
 *   buffer, as long as the measuring warps run.
 *
 * Build: make (with CUDA) builds build/bench/cluster_probe.
 * Run:   build/bench/cluster_probe [smem_kib=200]   one table on stdout. */
#include "bench/probe_util.cuh"

#define THREADS 512
#define MEAS 256                 /* the measuring threads (warps 0-7) */
#define NS 4                     /* stream stages in flight */
#define STAGE (32 * 1024)
#define PUSH 256                 /* bytes a block writes into each peer */
#define VEC (16 * 1024)          /* the input a block reads after a grid meeting */
#define ITERS 2000

enum { M_GRID, M_GRID_LOAD, M_CLUSTER, M_CLUSTER_PUSH, M_N };
static const char *const mode_name[M_N] = { "grid (global counter)", "grid + 16 KiB input load",
                                            "cluster (peer mbarriers)", "cluster + 256 B pushed to each peer" };

struct cparams {
    const uint8_t *buf;
    size_t buf_bytes;
    int *ctr;
    float *vec;                  /* nb × VEC / 4 floats: block b writes its share, reads all */
    unsigned long long *ns_out;  /* per block: ns for ITERS meetings */
    int mode, stream, nb;   /* stream: bulk copies in flight (0: none) */
};

__device__ __forceinline__ uint32_t cl_rank(void)
{
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

__device__ __forceinline__ uint32_t cl_size(void)
{
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
    return r;
}

__device__ __forceinline__ void cl_sync_all(void)
{
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}

/* Address of local shared-memory p in cluster block `rank`. */
__device__ __forceinline__ uint32_t cl_map(const void *p, uint32_t rank)
{
    uint32_t r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(mega_smem(p)), "r"(rank));
    return r;
}

__device__ __forceinline__ void cl_arrive_remote(uint32_t addr)
{
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(addr) : "memory");
}

__device__ __forceinline__ void cl_wait(uint64_t *b, uint32_t parity)
{
    asm volatile("{\n"
                 ".reg .pred P1;\n"
                 "CLW:\n"
                 "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 P1, [%0], %1;\n"
                 "@!P1 bra CLW;\n"
                 "}\n" ::"r"(mega_smem(b)),
                 "r"(parity)
                 : "memory");
}

__device__ __forceinline__ void st_cluster_u32(uint32_t addr, uint32_t v)
{
    asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

__global__ void __launch_bounds__(THREADS, 1) k_meet(const __grid_constant__ cparams P)
{
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = (uint64_t *)sm, *meet = full + NS;
    volatile int *stop = (volatile int *)(meet + 1);
    uint8_t *push = sm + 128, *ring = sm + 128 + 16 * PUSH;
    const int tid = threadIdx.x, b = blockIdx.x;
    const uint32_t cs = cl_size(), rank = cl_rank();
    if (tid == 0) {
        for (int i = 0; i < NS; i++)
            mbar_init(&full[i], 1);
        mbar_init(meet, (int)cs);   /* one arrival from every block of the cluster */
        *stop = 0;
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    cl_sync_all();   /* every peer's barrier initialised before any remote arrival */

    if (tid >= MEAS) {
        if (tid == MEAS && P.stream) {   /* the weight stream: NS bulk copies in flight */
            const size_t stages = P.buf_bytes / STAGE;
            size_t s = (size_t)b * 97;   /* blocks start apart */
            uint32_t parity = 0;         /* bit i: the phase slot i waits for next */
            const int ns = P.stream;
            for (int i = 0; i < ns; i++, s++) {
                mbar_expect_tx(&full[i], STAGE);
                mega_bulk(ring + (size_t)i * STAGE, P.buf + (s % stages) * STAGE, STAGE, &full[i]);
            }
            for (int i = 0;; i = (i + 1) % ns, s++) {
                mbar_wait(&full[i], (parity >> i) & 1u);
                parity ^= 1u << i;
                if (*stop) {   /* the other slots are in flight: wait for them before the block may exit */
                    for (int j = 0; j < ns; j++)
                        if (j != i)
                            mbar_wait(&full[j], (parity >> j) & 1u);
                    break;
                }
                mbar_expect_tx(&full[i], STAGE);
                mega_bulk(ring + (size_t)i * STAGE, P.buf + (s % stages) * STAGE, STAGE, &full[i]);
            }
        }
        cl_sync_all();
        return;
    }

    /* the measuring warps: ITERS meetings */
    unsigned long long t0 = 0;
    float acc = 0.f;
    for (int it = -50; it < ITERS; it++) {   /* 50 warm-up meetings */
        if (it == 0) {
            asm volatile("bar.sync 1, %0;" ::"n"(MEAS));
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
        }
        const int k = it + 50;   /* meetings so far */
        if (P.mode == M_GRID || P.mode == M_GRID_LOAD) {
            if (P.mode == M_GRID_LOAD)   /* this block's share of the next input */
                for (int i = tid; i < VEC / 4 / P.nb; i += MEAS)
                    P.vec[(size_t)b * (VEC / 4 / P.nb) + i] = (float)k;
            asm volatile("bar.sync 1, %0;" ::"n"(MEAS));
            if (tid == 0) {
                asm volatile("fence.acq_rel.gpu;" ::: "memory");
                asm volatile("red.relaxed.gpu.global.add.s32 [%0], 1;" ::"l"(P.ctr) : "memory");
                const int target = (k + 1) * P.nb;
                while (mega_ld_acquire(P.ctr) < target)
                    ;
            }
            asm volatile("bar.sync 1, %0;" ::"n"(MEAS));
            if (P.mode == M_GRID_LOAD) {   /* the input: every block's share, one round trip */
                float4 v[4];
                const float4 *in = (const float4 *)P.vec;
#pragma unroll
                for (int j = 0; j < 4; j++)
                    v[j] = __ldcg(in + tid + j * MEAS);
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc += v[j].x + v[j].w;
                asm volatile("bar.sync 1, %0;" ::"n"(MEAS));
            }
        } else {
            if (P.mode == M_CLUSTER_PUSH) {   /* PUSH bytes into every peer: lane words spread over the peers */
                const int words = PUSH / 4;
                for (int i = tid; i < (int)cs * words; i += MEAS) {
                    const uint32_t peer = (uint32_t)(i / words);
                    st_cluster_u32(cl_map(push + (size_t)rank * PUSH + 4 * (i % words), peer), (uint32_t)k);
                }
            }
            asm volatile("bar.sync 1, %0;" ::"n"(MEAS));
            if (tid < (int)cs)   /* release.cluster: the pushed bytes are visible with the arrival */
                cl_arrive_remote(cl_map(meet, (uint32_t)tid));
            if (tid == 0)
                cl_wait(meet, (uint32_t)k & 1u);
            asm volatile("bar.sync 1, %0;" ::"n"(MEAS));
            if (P.mode == M_CLUSTER_PUSH)
                acc += (float)((const uint32_t *)push)[tid % (cs * PUSH / 4)];
        }
    }
    unsigned long long t1;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
    if (tid == 0) {
        P.ns_out[b] = t1 - t0;
        *stop = 1;
    }
    if (acc == 12345.f)
        g_sink = 1;
    cl_sync_all();
}

static int fit(int cs, size_t smem, int nb)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(nb);
    cfg.blockDim = dim3(THREADS);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = cs;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    int n = 0;
    cudaError_t e = cudaOccupancyMaxActiveClusters(&n, k_meet, &cfg);
    if (e != cudaSuccess) {
        printf("  clusters of %2d: %s\n", cs, cudaGetErrorString(e));
        cudaGetLastError();
        return 0;
    }
    printf("  clusters of %2d: at most %3d active (%3d blocks)\n", cs, n, n * cs);
    return n * cs;
}

/* One launch: the mean µs per meeting over the blocks, or < 0 with the launch's error. */
static double run(const cparams &P0, int mode, int stream, int cs, bool coop, size_t smem, unsigned long long *h_ns,
                  const char **why)
{
    cparams P = P0;
    P.mode = mode;
    P.stream = stream;
    CK(cudaMemset(P.ctr, 0, sizeof(int)));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(P.nb);
    cfg.blockDim = dim3(THREADS);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[2];
    int na = 0;
    at[na].id = cudaLaunchAttributeClusterDimension;
    at[na].val.clusterDim.x = cs;
    at[na].val.clusterDim.y = 1;
    at[na].val.clusterDim.z = 1;
    na++;
    if (coop) {
        at[na].id = cudaLaunchAttributeCooperative;
        at[na].val.cooperative = 1;
        na++;
    }
    cfg.attrs = at;
    cfg.numAttrs = na;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k_meet, P);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        *why = cudaGetErrorString(e);
        cudaGetLastError();
        return -1;
    }
    CK(cudaMemcpy(h_ns, P.ns_out, sizeof(unsigned long long) * P.nb, cudaMemcpyDeviceToHost));
    double s = 0;
    for (int i = 0; i < P.nb; i++)
        s += (double)h_ns[i];
    return s / P.nb / ITERS / 1e3;
}

int main(int argc, char **argv)
{
    const size_t smem = (size_t)(argc > 1 ? atoi(argv[1]) : 200) * 1024;
    int sms = 0, optin = 0;
    probe_device(&sms, &optin);
    if (smem > (size_t)optin || smem < 128 + 16 * PUSH + NS * STAGE) {
        fprintf(stderr, "cluster_probe: %zu bytes of shared memory (between %d and %d)\n", smem,
                128 + 16 * PUSH + NS * STAGE, optin);
        return 2;
    }
    CK(cudaFuncSetAttribute(k_meet, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CK(cudaFuncSetAttribute(k_meet, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    const int nb = 128;
    printf("cluster_probe: %d SMs, %d threads and %zu KiB of shared memory a block, %d blocks\n", sms, THREADS,
           smem / 1024, nb);
    printf("fit (cudaOccupancyMaxActiveClusters):\n");
    int fits[17] = { 0 };
    for (int cs = 1; cs <= 16; cs *= 2)
        fits[cs] = fit(cs, smem, nb);

    cparams P = {};
    P.buf_bytes = (size_t)4 << 30;
    uint8_t *buf = probe_buffer(P.buf_bytes);
    P.buf = buf;
    CK(cudaMalloc(&P.ctr, sizeof(int)));
    CK(cudaMalloc(&P.vec, VEC));
    CK(cudaMalloc(&P.ns_out, sizeof(unsigned long long) * nb));
    P.nb = nb;
    unsigned long long *h_ns = (unsigned long long *)malloc(sizeof(unsigned long long) * nb);

    /* per cluster size: as many blocks as fit (at most nb), cooperative when the driver takes it
     * with clusters (the grid meetings need every block resident: the fit above says whether they are) */
    printf("µs per meeting (mean over the blocks, %d meetings each):\n", ITERS);
    printf("  %-40s %8s %7s %6s %8s %8s %8s %8s\n", "", "cluster", "blocks", "coop", "idle", "1 x 32K", "2 x 32K",
           "4 x 32K");
    for (int cs = 2; cs <= 16; cs *= 2) {
        if (cs == 4)
            continue;
        P.nb = fits[cs] < nb ? fits[cs] / cs * cs : nb;
        if (P.nb < cs)
            continue;
        const char *why = "";
        const bool coop = run(P, M_CLUSTER, 0, cs, true, smem, h_ns, &why) >= 0;
        if (!coop)
            printf("  clusters of %d, %d blocks, cooperative launch: %s\n", cs, P.nb, why);
        for (int mode = 0; mode < M_N; mode++) {
            static const int depth[4] = { 0, 1, 2, 4 };
            double us[4];
            bool ok = true;
            for (int st = 0; st < 4; st++)
                ok = ok && (us[st] = run(P, mode, depth[st], cs, coop, smem, h_ns, &why)) >= 0;
            if (!ok)
                printf("  %-40s %8d %7d %6s  %s\n", mode_name[mode], cs, P.nb, coop ? "yes" : "no", why);
            else
                printf("  %-40s %8d %7d %6s %8.3f %8.3f %8.3f %8.3f\n", mode_name[mode], cs, P.nb, coop ? "yes" : "no",
                       us[0], us[1], us[2], us[3]);
        }
    }
    free(h_ns);
    CK(cudaFree(buf));
    CK(cudaFree(P.ctr));
    CK(cudaFree(P.vec));
    CK(cudaFree(P.ns_out));
    return 0;
}
