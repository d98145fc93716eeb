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
