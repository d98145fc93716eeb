/* readbw_probe.cu — how fast can this GPU stream a buffer of several GB, and does the reference
 * `bora bench decode` divides by (kern_bandwidth_read, kernels/misc.cu) reach it?
 *
 * The decode benchmark's "% of the measured read bandwidth" is only as honest as its reference.
 * This probe measures the same read several ways on random data, median and best of 9:
 *   loads     16-byte loads, grid-stride, L loads in flight a thread, B blocks of T threads an SM,
 *             with the reference's instruction (ld.global.nc.L1::no_allocate, L2 evict-first) or
 *             __ldcs, on 4 and 8 GiB
 *   bulk      one block an SM, one thread keeping S bulk copies (cp.async.bulk, TMA) of 32 KiB in
 *             flight into shared memory, each block a contiguous share (the decode kernel's way
 *             of reading its weights)
 *   rows      the persistent decode kernel's own pattern: a stage is 16 rows × 2 KiB (lanes 0-15 of
 *             one warp each copy a row's chunk), a 16-row group's stages walk its columns, each
 *             block a contiguous share of the groups, S stages in flight, on 128 or all SMs
 *   tiled     the same copies from weights stored stage by stage (each stage 32 KiB contiguous)
 *   tensor    the rows' stages (row-major weights, no layout change) each as ONE tensor copy
 *             (cp.async.bulk.tensor): 2-D, a box of 16 rows × 2 KiB, or 3-D, 16 boxes of 16 rows ×
 *             128 bytes with the 128-byte swizzle (the stage lands chunk by chunk, conflict-free
 *             for row pairs 4 apart)
 *
 * Build: make (with CUDA) builds build/bench/readbw_probe.
 * Run:   build/bench/readbw_probe    one table on stdout. */
#include "bench/probe_util.cuh"

#include <algorithm>

#define STAGE (32 * 1024)

enum { LD_REF, LD_CS };

template <int L, int KIND>
__global__ void k_loads(const uint4 *p, size_t n)
{
    uint32_t a = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (L - 1) * stride < n; i += L * stride) {
        uint4 v[L];
#pragma unroll
        for (int k = 0; k < L; k++)
            v[k] = KIND == LD_REF ? kern_ld_stream(p + i + k * stride) : __ldcs(p + i + k * stride);
#pragma unroll
        for (int k = 0; k < L; k++)
            a ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
    }
    for (; i < n; i += stride) {
        const uint4 v = __ldcs(p + i);
        a ^= v.x ^ v.w;
    }
    if (a == 0x12345678u)
        g_sink = a;
}

__global__ void __launch_bounds__(128, 1) k_bulk(const uint8_t *p, size_t bytes, int ns)
{
    extern __shared__ __align__(128) uint8_t sm[];
    if (threadIdx.x == 0)   /* the reference's own reader (kernels/kern_tma.cuh), ns stages deep */
        kern_bulk_read_share(p, bytes / STAGE, STAGE, ns, sm, kern_policy_evict_first());
}

/* Groups of 16 rows of row_bytes each, split over the blocks; stages of 16 × 2 KiB. mode: ROWS
 * 16 bulk copies of a row's 2 KiB; TILED the same copies from weights stored tile by tile (a
 * group's 16 chunks of 2 KiB for one stage contiguous, 32 KiB): is the row pattern's cost the
 * scattered addresses or the copies?; T2D / T3D one tensor copy of map m (2-D: x in 8-byte units,
 * y rows; 3-D: x bytes of a 128-byte chunk, y rows, z chunks). */
enum { M_ROWS, M_TILED, M_T2D, M_T3D };
__global__ void __launch_bounds__(32, 1) k_rows(const __grid_constant__ CUtensorMap m, const uint8_t *p, size_t bytes,
                                                int row_bytes, int ns, int mode)
{
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = (uint64_t *)sm;
    const uint32_t base = mega_smem(sm);
    uint8_t *ring = sm + (((base + 256 + 1023) & ~1023u) - base);   /* the swizzle's 1 KiB alignment */
    const int lane = threadIdx.x, nkc = row_bytes / 2048;
    const size_t groups = bytes / ((size_t)16 * row_bytes), per = (groups + gridDim.x - 1) / gridDim.x;
    const size_t g0 = blockIdx.x * per, g1 = g0 + per < groups ? g0 + per : groups;
    if (g0 >= g1)
        return;
    const size_t stages = (g1 - g0) * nkc;
    const uint64_t policy = kern_policy_evict_first();
    if (lane == 0) {
        for (int i = 0; i < ns; i++)
            mbar_init(&full[i], 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncwarp();
    auto issue = [&](size_t st, int slot) {
        const size_t g = g0 + st / nkc;
        const int kc = (int)(st % nkc);
        uint8_t *dst = ring + (size_t)slot * 16 * 2048;
        if (lane == 0)
            mbar_expect_tx(&full[slot], 16 * 2048);
        __syncwarp();
        if (mode == M_T2D && lane == 0)
            tensor2d(dst, &m, kc * 256, (int)g * 16, &full[slot], policy);
        else if (mode == M_T3D && lane == 0)
            tensor3d(dst, &m, 0, (int)g * 16, kc * 16, &full[slot], policy);
        else if (mode <= M_TILED && lane < 16)
            mega_bulk_hint(dst + lane * 2048,
                           mode == M_TILED ? p + ((g * nkc + kc) * 16 + lane) * (size_t)2048
                                           : p + (g * 16 + lane) * (size_t)row_bytes + (size_t)kc * 2048,
                           2048, &full[slot], policy);
    };
    size_t issued = 0;
    for (; issued < (size_t)ns && issued < stages; issued++)
        issue(issued, (int)issued);
    uint32_t parity = 0;
    for (size_t landed = 0, i = 0; landed < stages; landed++, i = (i + 1) % (size_t)ns) {
        mbar_wait(&full[i], (parity >> i) & 1u);
        parity ^= 1u << i;
        __syncwarp();
        if (issued < stages)
            issue(issued++, (int)i);
    }
}

__global__ void k_fill(uint32_t *p, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 2654435761u ^ (uint32_t)(i >> 32);
        x ^= x >> 15;
        x *= 2246822519u;
        p[i] = x ^ (x >> 13);
    }
}

struct cfg {
    const char *name;
    void (*launch)(const uint8_t *, size_t, int);
    size_t bytes;
};

static int g_sms;
static encode_fn g_enc;

/* RANK 2: 16 rows × 2 KiB boxes, no swizzle; RANK 3: 128 B × 16 rows × 16 chunks, 128-byte swizzle */
template <int NS, int ROW, int RANK, int PROMO>
static void launch_tmap(const uint8_t *p, size_t bytes, int)
{
    const size_t rows = bytes / ROW;
    CUtensorMap m;
    CUresult r;
    const CUtensorMapL2promotion promo = PROMO ? CU_TENSOR_MAP_L2_PROMOTION_L2_256B : CU_TENSOR_MAP_L2_PROMOTION_NONE;
    if (RANK == 2) {
        cuuint64_t dims[2] = { (cuuint64_t)ROW / 8, rows }, strides[1] = { (cuuint64_t)ROW };
        cuuint32_t box[2] = { 256, 16 }, es[2] = { 1, 1 };
        r = g_enc(&m, CU_TENSOR_MAP_DATA_TYPE_UINT64, 2, (void *)p, dims, strides, box, es,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, promo, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    } else {
        cuuint64_t dims[3] = { 128, rows, (cuuint64_t)ROW / 128 }, strides[2] = { (cuuint64_t)ROW, 128 };
        cuuint32_t box[3] = { 128, 16, 16 }, es[3] = { 1, 1, 1 };
        r = g_enc(&m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, (void *)p, dims, strides, box, es,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promo, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    }
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "tensor map (rank %d): error %d\n", RANK, (int)r);
        exit(1);
    }
    k_rows<<<128, 32, 1024 + 256 + NS * 16 * 2048>>>(m, p, bytes, ROW, NS, RANK == 2 ? M_T2D : M_T3D);
}

template <int L, int KIND, int B, int T>
static void launch_loads(const uint8_t *p, size_t bytes, int)
{
    k_loads<L, KIND><<<g_sms * B, T>>>((const uint4 *)p, bytes / 16);
}

template <int NS>
static void launch_bulk(const uint8_t *p, size_t bytes, int)
{
    k_bulk<<<g_sms, 128, 128 + NS * STAGE>>>(p, bytes, NS);
}

template <int NS, int ROW, int BLOCKS, int TILED = 0>
static void launch_rows(const uint8_t *p, size_t bytes, int)
{
    CUtensorMap none;
    memset(&none, 0, sizeof none);
    k_rows<<<BLOCKS ? BLOCKS : g_sms, 32, 1024 + 256 + NS * 16 * 2048>>>(none, p, bytes, ROW, NS,
                                                                       TILED ? M_TILED : M_ROWS);
}

template <int NS, int BLOCKS>
static void launch_bulk_n(const uint8_t *p, size_t bytes, int)
{
    k_bulk<<<BLOCKS, 128, 128 + NS * STAGE>>>(p, bytes, NS);
}

int main(void)
{
    int optin = 0;
    probe_device(&g_sms, &optin);
    const size_t big = (size_t)8 << 30, small = (size_t)4 << 30;
    uint8_t *buf;
    CK(cudaMalloc(&buf, big));
    k_fill<<<g_sms * 8, 256>>>((uint32_t *)buf, big / 4);
    CK(cudaDeviceSynchronize());
    CK(cudaFuncSetAttribute(k_bulk, cudaFuncAttributeMaxDynamicSharedMemorySize, 128 + 6 * STAGE));
    CK(cudaFuncSetAttribute(k_rows, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024 + 256 + 6 * 16 * 2048));
    g_enc = tensor_encoder();
    const size_t rows_b = (size_t)16 * 12288 * 128 * 336;   /* 7.9 GiB: whole groups for 128 blocks */
    const cfg cs[] = {
        { "loads ref-insn L4 8x512/SM (bora's reference)", launch_loads<4, LD_REF, 8, 512>, small },
        { "loads ref-insn L4 8x512/SM", launch_loads<4, LD_REF, 8, 512>, big },
        { "loads ref-insn L4 8x256/SM", launch_loads<4, LD_REF, 8, 256>, small },
        { "loads ref-insn L4 8x256/SM", launch_loads<4, LD_REF, 8, 256>, big },
        { "loads ref-insn L8 8x256/SM", launch_loads<8, LD_REF, 8, 256>, big },
        { "loads ref-insn L4 4x512/SM", launch_loads<4, LD_REF, 4, 512>, big },
        { "loads ref-insn L4 16x128/SM", launch_loads<4, LD_REF, 16, 128>, big },
        { "loads ldcs L4 8x512/SM", launch_loads<4, LD_CS, 8, 512>, big },
        { "loads ldcs L4 8x256/SM", launch_loads<4, LD_CS, 8, 256>, big },
        { "loads ldcs L8 8x256/SM", launch_loads<8, LD_CS, 8, 256>, big },
        { "bulk 2 x 32 KiB in flight, 1 block/SM", launch_bulk<2>, big },
        { "bulk 4 x 32 KiB", launch_bulk<4>, big },
        { "bulk 6 x 32 KiB", launch_bulk<6>, big },
        { "bulk 4 x 32 KiB", launch_bulk<4>, small },
        { "bulk 5 x 32 KiB, 128 blocks", launch_bulk_n<5, 128>, big },
        { "rows 16 x 2 KiB of 12 KiB rows, 5 stages, 128 blocks", launch_rows<5, 12288, 128>, rows_b },
        { "rows 16 x 2 KiB of 12 KiB rows, 3 stages, 128 blocks", launch_rows<3, 12288, 128>, rows_b },
        { "rows 16 x 2 KiB of 28 KiB rows, 5 stages, 128 blocks", launch_rows<5, 28672, 128>, big },
        { "rows 16 x 2 KiB of 12 KiB rows, 5 stages, all SMs", launch_rows<5, 12288, 0>, rows_b },
        { "tiled 16 x 2 KiB (32 KiB contiguous), 12 KiB rows, 5 st, 128 bl", launch_rows<5, 12288, 128, 1>, rows_b },
        { "tiled 16 x 2 KiB (32 KiB contiguous), 12 KiB rows, 3 st, 128 bl", launch_rows<3, 12288, 128, 1>, rows_b },
        { "tiled 16 x 2 KiB (32 KiB contiguous), 28 KiB rows, 5 st, 128 bl", launch_rows<5, 28672, 128, 1>, big },
        { "tensor 2-D 16 x 2 KiB, 12 KiB rows, 5 st, 128 bl", launch_tmap<5, 12288, 2, 1>, rows_b },
        { "tensor 3-D swz128, 12 KiB rows, 5 st, 128 bl, L2 256B", launch_tmap<5, 12288, 3, 1>, rows_b },
        { "tensor 3-D swz128, 12 KiB rows, 5 st, 128 bl, no promo", launch_tmap<5, 12288, 3, 0>, rows_b },
        { "tensor 3-D swz128, 12 KiB rows, 3 st, 128 bl, L2 256B", launch_tmap<3, 12288, 3, 1>, rows_b },
        { "tensor 3-D swz128, 28 KiB rows, 5 st, 128 bl, L2 256B", launch_tmap<5, 28672, 3, 1>, big },
        { "tensor 3-D swz128, 28 KiB rows, 5 st, 128 bl, no promo", launch_tmap<5, 28672, 3, 0>, big },
        { "rows 16 x 2 KiB of 12 KiB rows, 5 stages, 128 blocks", launch_rows<5, 12288, 128>, rows_b },
        { "bulk 5 x 32 KiB, 128 blocks", launch_bulk_n<5, 128>, big },
    };
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    printf("readbw_probe: %d SMs, random data, GB/s = 1e9 bytes/s, 9 timed runs each after 2 warm-ups\n", g_sms);
    printf("%-48s %6s %9s %9s\n", "read", "GiB", "median", "best");
    for (const cfg &c : cs) {
        double t[9];
        for (int r = -2; r < 9; r++) {
            CK(cudaEventRecord(a));
            c.launch(buf, c.bytes, 0);
            CK(cudaEventRecord(b));
            CK(cudaEventSynchronize(b));
            CK(cudaGetLastError());
            float ms;
            CK(cudaEventElapsedTime(&ms, a, b));
            if (r >= 0)
                t[r] = (double)c.bytes / (ms * 1e-3) / 1e9;
        }
        std::sort(t, t + 9);
        printf("%-48s %6zu %9.1f %9.1f\n", c.name, c.bytes >> 30, t[4], t[8]);
    }
    CK(cudaFree(buf));
    return 0;
}
