/* stream_probe.cu — how fast can one persistent block per SM stream weights into shared memory?
 *
 * The persistent decode kernel (kernels/decode_mega.cu) streams every weight through a ring of
 * shared-memory stages filled by one producer warp. Its bare stream (no math, no attention, no
 * grid waits) reached only 76 % (FP8) / 84 % (BF16) of the streaming-read bandwidth. This probe
 * isolates the copy mechanism: one 4 GiB "weight" buffer read once per kernel, the same block
 * and ring shape as the decode kernel, consumers that only touch each stage and release it.
 *
 *   ref        16-byte loads, 8 blocks of 256 threads per SM, grid-stride (the bandwidth reference)
 *   rows       producer lanes 0..15 each bulk-copy cb bytes of one row (decode_mega today)
 *   contig     one bulk copy of a whole stage (rows laid out tile by tile)
 *   tensor     one 2-D TMA tensor copy of 16 rows × cb bytes (cp.async.bulk.tensor, no layout change)
 *   ldg        no ring: 15 warps load their rows' 16-byte pieces straight into registers
 *
 * Then the consumers do the decode kernel's work on every stage (rows × 2 KiB, 5 stages): the
 * FP8 stage math (e4m3 → f16 conversion, f16 MMA), the same with the conversion replaced by one
 * logic op (what the conversion costs), FP8 MMA m16n8k32 straight from the stage; each with and
 * without the per-group cross-warp epilogue, and three ways: with the copies, without them
 * (NO COPY: how fast the consumers drain a full ring) and without any waits (NO WAIT: the math
 * alone). Findings: docs/PERFORMANCE_GPU.md (fourth session).
 *
 * Build: make (with CUDA) builds build/bench/stream_probe.
 * Run:   build/bench/stream_probe [row_bytes=4096]   GB/s and % of the reference per variant. */
#include "bench/probe_util.cuh"

#define CW 15
#define THREADS (CW * 32 + 32)

enum { V_ROWS, V_CONTIG, V_TENSOR };

struct probe {
    const uint8_t *w;
    int rows, row_bytes, cb, ns, variant, pitch;
    int work;     /* consumers: 0 touch each stage, 1 the decode kernel's FP8 stage (e4m3 -> f16 cvt, f16 MMA),
                   * 2 the same with the cvt replaced by one logic op (wrong values: the cvt's cost),
                   * 3 FP8 MMA m16n8k32 e4m3 straight from the stage (no conversion) */
    int nowait;   /* consumers neither wait nor release (math alone; the producer stops) */
    int batch;    /* consumers wait for, use and release this many stages at a time (divides the row's stages) */
    int epi;      /* + the decode kernel's per-group epilogue (cross-warp reduction) */
    int nocopy;   /* producer releases stages without copying (consumer throughput alone) */
    size_t slot;
};

__device__ __forceinline__ void mma8(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                     uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* FP8 MMA: lane (g, t) takes 16 bytes of rows g and g + 8 (two k32 MMAs) and 16 bytes of x term g */
__device__ __forceinline__ void stage_mma8(float (&c0)[4], float (&c1)[4], const uint8_t *sb, int pitch, int cb, int kc,
                                           const uint8_t *xt, int K, int w, int lane)
{
    const int g = lane >> 2, q = lane & 3;
    const uint8_t *xv = xt + (size_t)(g & 3) * K + (size_t)kc * cb + 16 * q;
    const uint8_t *rb = sb + (size_t)g * pitch + 16 * q;
    const int steps = cb >> 6;
#pragma unroll 2
    for (int st = w; st < steps; st += CW) {
        const uint4 A = *(const uint4 *)(rb + st * 64);
        const uint4 B = *(const uint4 *)(rb + st * 64 + 8 * (size_t)pitch);
        const uint4 X = *(const uint4 *)(xv + st * 64);
        mma8(c0, A.x, B.x, A.y, B.y, X.x, X.y);
        mma8(c1, A.z, B.z, A.w, B.w, X.z, X.w);
    }
}
/* The same math with every step of the warp (at most 3 for cb 2048 over 15 warps) loaded first, then
 * converted and multiplied on four accumulator chains. */
__device__ __forceinline__ void stage_mma_u(float (&c0)[4], float (&c1)[4], float (&c2)[4], float (&c3)[4],
                                            const uint8_t *sb, int pitch, int cb, int kc, const uint16_t *xh,
                                            const uint16_t *xl, int w, int lane)
{
    const int g = lane >> 2, q = lane & 3;
    const uint16_t *xv = (g < 4 ? xh : xl) + (size_t)kc * cb + 16 * q;
    const uint8_t *rb = sb + (size_t)g * pitch + 16 * q;
    const int steps = cb >> 6;
    uint4 A[3], B[3], X0[3], X1[3];
#pragma unroll
    for (int k = 0; k < 3; k++) {
        const int st = w + k * CW;
        if (st < steps) {
            A[k] = *(const uint4 *)(rb + st * 64);
            B[k] = *(const uint4 *)(rb + st * 64 + 8 * (size_t)pitch);
            X0[k] = *(const uint4 *)(xv + st * 64);
            X1[k] = *(const uint4 *)(xv + st * 64 + 8);
        }
    }
#pragma unroll
    for (int k = 0; k < 3; k++) {
        const int st = w + k * CW;
        if (st < steps) {
            const uint32_t aw[4] = { A[k].x, A[k].y, A[k].z, A[k].w }, bw[4] = { B[k].x, B[k].y, B[k].z, B[k].w };
            const uint32_t xw[8] = { X0[k].x, X0[k].y, X0[k].z, X0[k].w, X1[k].x, X1[k].y, X1[k].z, X1[k].w };
            mma_f16(c0, mega_e4m3x2(aw[0]), mega_e4m3x2(bw[0]), mega_e4m3x2_hi(aw[0]), mega_e4m3x2_hi(bw[0]), xw[0], xw[1]);
            mma_f16(c1, mega_e4m3x2(aw[1]), mega_e4m3x2(bw[1]), mega_e4m3x2_hi(aw[1]), mega_e4m3x2_hi(bw[1]), xw[2], xw[3]);
            mma_f16(c2, mega_e4m3x2(aw[2]), mega_e4m3x2(bw[2]), mega_e4m3x2_hi(aw[2]), mega_e4m3x2_hi(bw[2]), xw[4], xw[5]);
            mma_f16(c3, mega_e4m3x2(aw[3]), mega_e4m3x2(bw[3]), mega_e4m3x2_hi(aw[3]), mega_e4m3x2_hi(bw[3]), xw[6], xw[7]);
        }
    }
}

/* decode_mega.cu's mega_stage for FP8 (same loads, conversions and MMAs); FAKE: one LOP3 instead of each cvt */
template <int FAKE>
__device__ __forceinline__ void stage_mma(float (&c0)[4], float (&c1)[4], const uint8_t *sb, int pitch, int cb, int kc,
                                          const uint16_t *xh, const uint16_t *xl, int w, int lane)
{
    const int g = lane >> 2, q = lane & 3;
    const uint16_t *xv = (g < 4 ? xh : xl) + (size_t)kc * cb + 16 * q;
    const uint8_t *rb = sb + (size_t)g * pitch + 16 * q;
    const int steps = cb >> 6;
#pragma unroll 2
    for (int st = w; st < steps; st += CW) {
        const uint4 A = *(const uint4 *)(rb + st * 64);
        const uint4 B = *(const uint4 *)(rb + st * 64 + 8 * (size_t)pitch);
        const uint32_t aw[4] = { A.x, A.y, A.z, A.w }, bw[4] = { B.x, B.y, B.z, B.w };
        const uint4 X0 = *(const uint4 *)(xv + st * 64), X1 = *(const uint4 *)(xv + st * 64 + 8);
        const uint32_t xw[8] = { X0.x, X0.y, X0.z, X0.w, X1.x, X1.y, X1.z, X1.w };
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (FAKE)
                mma_f16(i & 1 ? c1 : c0, aw[i] & 0x3F803F80u, bw[i] & 0x3F803F80u, (aw[i] >> 1) & 0x3F803F80u,
                      (bw[i] >> 1) & 0x3F803F80u, xw[2 * i], xw[2 * i + 1]);
            else
                mma_f16(i & 1 ? c1 : c0, mega_e4m3x2(aw[i]), mega_e4m3x2(bw[i]), mega_e4m3x2(aw[i] >> 16), mega_e4m3x2(bw[i] >> 16),
                      xw[2 * i], xw[2 * i + 1]);
    }
}

/* Block b streams rows [r0, r1) (whole 16-row groups), stage = 16 rows × cb bytes, in the
 * decode kernel's order (group, then column chunk). */
__global__ void __launch_bounds__(THREADS, 1) k_ring(const __grid_constant__ probe P, const __grid_constant__ CUtensorMap tm)
{
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = (uint64_t *)(sm + (size_t)P.ns * P.slot), *empty = full + P.ns;
    const int tid = threadIdx.x, lane = tid & 31;
    const int groups = P.rows / 16, nb = gridDim.x;
    const int g0 = (int)((long long)groups * blockIdx.x / nb), g1 = (int)((long long)groups * (blockIdx.x + 1) / nb);
    const int nkc = P.row_bytes / P.cb;
    const long long stages = (long long)(g1 - g0) * nkc;
    mbar_ring_init(full, empty, P.ns, CW);
    if (tid >= CW * 32) {
        if (P.nowait)
            return;
        const uint64_t pol = kern_policy_evict_first();
        int slot = 0, round = 0, g = g0, kc = 0;
        for (long long s = 0; s < stages; s++, kc = kc + 1 == nkc ? (g++, 0) : kc + 1,
                       slot = slot + 1 == P.ns ? (round++, 0) : slot + 1) {
            if (round > 0)
                mbar_wait(&empty[slot], (uint32_t)(round - 1) & 1u);
            uint8_t *dst = sm + (size_t)slot * P.slot;
            if (P.nocopy) {
                if (lane == 0)
                    mbar_arrive(&full[slot]);
                continue;
            }
            if (lane == 0)
                mbar_expect_tx(&full[slot], (uint32_t)(16 * P.cb));
            __syncwarp();
            if (P.variant == V_ROWS) {
                if (lane < 16)
                    mega_bulk_hint(dst + (size_t)lane * P.pitch, P.w + (size_t)(g * 16 + lane) * P.row_bytes + (size_t)kc * P.cb,
                         (uint32_t)P.cb, &full[slot], pol);
            } else if (P.variant == V_CONTIG) {
                if (lane == 0)
                    mega_bulk_hint(dst, P.w + ((size_t)g * nkc + kc) * 16 * P.cb, (uint32_t)(16 * P.cb), &full[slot], pol);
            } else if (lane == 0) {
                tensor2d(dst, &tm, kc * (P.cb / 8), g * 16, &full[slot], pol);
            }
        }
        return;
    }
    uint32_t acc = 0;
    const int w = tid >> 5;
    /* the input vector (hi, lo) and the reduction buffer after the barriers */
    uint16_t *xh = (uint16_t *)(full + 2 * P.ns), *xl = xh + P.row_bytes;
    float *red = (float *)(xl + P.row_bytes);
    for (int i = tid; i < P.row_bytes; i += CW * 32) {
        xh[i] = 0x3c00;
        xl[i] = 0x1000;
    }
    asm volatile("bar.sync 1, %0;" ::"r"(CW * 32));
    float c0[4] = { 0.f, 0.f, 0.f, 0.f }, c1[4] = { 0.f, 0.f, 0.f, 0.f };
    float c2[4] = { 0.f, 0.f, 0.f, 0.f }, c3[4] = { 0.f, 0.f, 0.f, 0.f };
    float outsum = 0.f;
    int slot = 0, round = 0, kc = 0, grp = 0;
    for (long long s = 0; s < stages; s += P.batch) {
        /* P.batch stages at a time: wait for all, use all, release all */
        int sl = slot, rd = round;
        for (int b = 0; b < P.batch && !P.nowait; b++) {
            mbar_wait(&full[sl], (uint32_t)rd & 1u);
            sl = sl + 1 == P.ns ? (rd++, 0) : sl + 1;
        }
        sl = slot;
        for (int b = 0; b < P.batch; b++) {
            const uint8_t *sb = sm + (size_t)sl * P.slot;
            if (P.work == 0)
                acc ^= *(const uint32_t *)(sb + (size_t)(lane & 15) * P.pitch + 16 * w);
            else if (P.work == 1)
                stage_mma<0>(c0, c1, sb, P.pitch, P.cb, kc + b, xh, xl, w, lane);
            else if (P.work == 2)
                stage_mma<1>(c0, c1, sb, P.pitch, P.cb, kc + b, xh, xl, w, lane);
            else if (P.work == 4)
                stage_mma_u(c0, c1, c2, c3, sb, P.pitch, P.cb, kc + b, xh, xl, w, lane);
            else
                stage_mma8(c0, c1, sb, P.pitch, P.cb, kc + b, (const uint8_t *)xh, P.row_bytes, w, lane);
            sl = sl + 1 == P.ns ? 0 : sl + 1;
        }
        __syncwarp();
        for (int b = 0; b < P.batch; b++) {
            if (lane == 0 && !P.nowait)
                mbar_arrive(&empty[slot]);
            slot = slot + 1 == P.ns ? (round++, 0) : slot + 1;
        }
        kc += P.batch - 1;
        if (P.epi && kc == nkc - 1) {   /* the group's epilogue: reduce across the warps */
            const float a0 = c0[0] + c1[0] + c2[0] + c3[0], a2 = c0[2] + c1[2] + c2[2] + c3[2];
            const float r0 = a0 + __shfl_xor_sync(0xffffffffu, a0, 2);
            const float r1 = a2 + __shfl_xor_sync(0xffffffffu, a2, 2);
            float *rb = red + (grp & 1) * (CW * 16);
            if ((lane & 3) == 0) {
                rb[w * 16 + (lane >> 2)] = r0;
                rb[w * 16 + (lane >> 2) + 8] = r1;
            }
            asm volatile("bar.sync 1, %0;" ::"r"(CW * 32));
            if (tid < 16) {
                float v = 0.f;
#pragma unroll
                for (int i = 0; i < CW; i++)
                    v += rb[i * 16 + tid];
                outsum += v;
            }
            c0[0] = c0[1] = c0[2] = c0[3] = c1[0] = c1[1] = c1[2] = c1[3] = 0.f;
            c2[0] = c2[1] = c2[2] = c2[3] = c3[0] = c3[1] = c3[2] = c3[3] = 0.f;
        }
        kc = kc + 1 == nkc ? (grp++, 0) : kc + 1;
    }
    acc ^= __float_as_uint(c0[0] + c1[0] + c0[2] + c1[2] + c2[0] + c3[3] + outsum);
    if (acc == 0x12345678u)
        g_sink = acc;
}

/* No ring: warp w of block b loads 16-byte pieces of its block's rows into registers, U in flight. */
template <int U>
__global__ void __launch_bounds__(CW * 32, 1) k_ldg(const uint8_t *w, size_t bytes)
{
    const int nb = gridDim.x;
    const size_t n16 = bytes / 16;
    const size_t b0 = n16 * blockIdx.x / nb, b1 = n16 * (blockIdx.x + 1) / nb;
    const uint4 *p = (const uint4 *)w;
    uint32_t a = 0;
    size_t i = b0 + threadIdx.x;
    const int T = CW * 32;
    for (; i + (U - 1) * T < b1; i += U * T) {
        uint4 v[U];
#pragma unroll
        for (int k = 0; k < U; k++)
            v[k] = __ldcs(p + i + (size_t)k * T);
#pragma unroll
        for (int k = 0; k < U; k++)
            a ^= v[k].x ^ v[k].w;
    }
    for (; i < b1; i += T)
        a ^= __ldcs(p + i).x;
    if (a == 0x12345678u)
        g_sink = a;
}

struct ctx {
    uint8_t *buf;
    size_t bytes;
    int sms;
    probe P;
    size_t smem;
    CUtensorMap tm;
    int u;
};

static void run_ref(void *v)
{
    ctx *c = (ctx *)v;
    k_ref<<<c->sms * 8, 256>>>((const uint4 *)c->buf, c->bytes / 16);
}
static void run_ring(void *v)
{
    ctx *c = (ctx *)v;
    k_ring<<<c->sms, THREADS, c->smem>>>(c->P, c->tm);
}
static void run_ldg(void *v)
{
    ctx *c = (ctx *)v;
    if (c->u == 4)
        k_ldg<4><<<c->sms, CW * 32>>>(c->buf, c->bytes);
    else if (c->u == 8)
        k_ldg<8><<<c->sms, CW * 32>>>(c->buf, c->bytes);
    else
        k_ldg<16><<<c->sms, CW * 32>>>(c->buf, c->bytes);
}

int main(int argc, char **argv)
{
    const int row_bytes = argc > 1 ? atoi(argv[1]) : 4096;
    ctx c;
    memset(&c, 0, sizeof c);
    int optin = 0;
    probe_device(&c.sms, &optin);
    c.bytes = (size_t)4 << 30;
    c.bytes -= c.bytes % ((size_t)16 * row_bytes * 1);
    c.buf = probe_buffer(c.bytes);
    const double gb = c.bytes / 1e9;
    const float ref = time_ms(run_ref, &c, 9);
    const double ref_bw = gb / (ref / 1e3);
    printf("buffer %.2f GB, rows of %d bytes, %d SMs, %d bytes smem/block\n", gb, row_bytes, c.sms, optin);
    printf("%-40s %8.1f GB/s\n", "ref (16B loads, 8x256 per SM)", ref_bw);

    const encode_fn enc = tensor_encoder();
    CK(cudaFuncSetAttribute(k_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));

    const int cbs[] = { 1024, 2048, 4096 };
    const char *names[] = { "rows", "contig", "tensor" };
    for (int var = 0; var < 3; var++)
        for (int ci = 0; ci < 3; ci++) {
            const int cb = cbs[ci];
            if (cb > row_bytes || (var == V_TENSOR && cb > 2048))
                continue;
            for (int ns = 2; ns <= 12; ns++) {
                probe &P = c.P;
                P.batch = 1;
                P.nowait = 0;
                P.w = c.buf;
                P.row_bytes = row_bytes;
                P.rows = (int)(c.bytes / row_bytes);
                P.cb = cb;
                P.variant = var;
                P.pitch = var == V_ROWS && cb % 128 == 0 ? cb + 64 : cb;
                P.slot = ((size_t)16 * P.pitch + 127) / 128 * 128;
                P.ns = ns;
                c.smem = (size_t)ns * P.slot + (size_t)ns * 16 + (size_t)4 * row_bytes + 2 * CW * 16 * 4;
                if (c.smem > (size_t)optin)
                    break;
                if (ns != 2 && ns != 5 && ns != 8 &&
                    (size_t)(ns + 1) * P.slot + (ns + 1) * 16 <= (size_t)optin)
                    continue;   /* a few depths, always the deepest that fits */
                if (var == V_TENSOR) {
                    cuuint64_t dims[2] = { (cuuint64_t)row_bytes / 8, (cuuint64_t)P.rows };
                    cuuint64_t strides[1] = { (cuuint64_t)row_bytes };
                    cuuint32_t box[2] = { (cuuint32_t)cb / 8, 16 }, es[2] = { 1, 1 };
                    CUresult r = enc(&c.tm, CU_TENSOR_MAP_DATA_TYPE_UINT64, 2, c.buf, dims, strides, box, es,
                                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                                     CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
                    if (r != CUDA_SUCCESS) {
                        printf("tensor map cb %d: error %d\n", cb, (int)r);
                        break;
                    }
                }
                const float ms = time_ms(run_ring, &c, 5);
                const double bw = gb / (ms / 1e3);
                char label[64];
                snprintf(label, sizeof label, "%s cb %d x16 rows, %d stages (%zu KiB)", names[var], cb, ns,
                         (size_t)ns * P.slot / 1024);
                printf("%-40s %8.1f GB/s  %5.1f %%\n", label, bw, 100.0 * bw / ref_bw);
            }
        }
    {   /* consumers doing the decode kernel's work, with and without the copies */
        const size_t extra = (size_t)4 * row_bytes + 2 * CW * 16 * 4;
        const char *wn[] = { "touch", "f16 mma (cvt)", "f16 mma (fake cvt)", "fp8 mma k32", "f16 mma unrolled 4 chains" };
        for (int nocopy = 2; nocopy >= 0; nocopy--)
            for (int work = 0; work < 10; work++)
                for (int ns = 5, batch = 1; batch <= (nocopy == 2 ? 1 : 2); batch++) {
                    probe &P = c.P;
                    P.w = c.buf;
                    P.row_bytes = row_bytes;
                    P.rows = (int)(c.bytes / row_bytes);
                    P.cb = 2048;
                    P.variant = V_ROWS;
                    P.pitch = 2048 + 64;
                    P.slot = (size_t)16 * P.pitch;
                    P.ns = ns;
                    P.work = work >> 1;
                    P.batch = batch;
                    P.epi = work & 1;
                    P.nocopy = nocopy != 0;
                    P.nowait = nocopy == 2;
                    c.smem = (size_t)ns * P.slot + (size_t)ns * 16 + extra;
                    if (c.smem > (size_t)optin || (P.work == 0 && P.epi))
                        continue;
                    const float ms = time_ms(run_ring, &c, 5);
                    const double bw = gb / (ms / 1e3);
                    char label[80];
                    snprintf(label, sizeof label, "%s%s%s, %d/wait", nocopy == 2 ? "NO WAIT " : nocopy ? "NO COPY " : "", wn[work >> 1], work & 1 ? " +epilogue" : "", batch);
                    printf("%-40s %8.1f GB/s  %5.1f %%\n", label, bw, 100.0 * bw / ref_bw);
                }
        c.P.work = 0;
        c.P.batch = 1;
        c.P.nowait = 0;
        c.P.epi = 0;
        c.P.nocopy = 0;
    }
    for (int u = 4; u <= 16; u *= 2) {
        c.u = u;
        const float ms = time_ms(run_ldg, &c, 5);
        const double bw = gb / (ms / 1e3);
        char label[64];
        snprintf(label, sizeof label, "ldg 15 warps/SM, %d x 16B in flight", u);
        printf("%-40s %8.1f GB/s  %5.1f %%\n", label, bw, 100.0 * bw / ref_bw);
    }
    printf("%-40s %8.1f GB/s (again)\n", "ref", gb / (time_ms(run_ref, &c, 9) / 1e3));
    return 0;
}
