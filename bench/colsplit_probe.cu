/* colsplit_probe.cu — can a block per SM stream a narrow column slice of every row as fast as
 * whole rows?
 *
 * The persistent decode kernel (kernels/decode_mega.cu) streams W_down by rows: block b takes
 * 16-row groups, each row 2 KiB a stage (one bulk copy per row), and every block needs all of h
 * first (a grid-wide barrier after gate/up). Split by columns instead, block b would multiply
 * only its own hidden units (the ones it made in gate/up: no barrier), i.e. read a slice of kn
 * columns (112 bytes of FP8 on 7B, 224 of BF16) from every one of the dim rows — one 2-D tensor
 * box of kn × R per stage. This probe streams the same bytes both ways, with nothing else
 * running (consumers only touch and release each stage), so the two streams' ceilings compare
 * directly:
 *
 *   rows        16 rows × cb bytes a stage, one bulk copy per row (decode_mega.cu today)
 *   cols        kn columns × R rows a stage, one 3-D tensor box (rows × layers), in row order
 *   cols-rot    the same, each block starting at its own stage (blocks spread over the rows)
 *   cols-p128   cols with L2 promotion to 128-byte lines
 *
 * Matrix: L layers of dim rows × hidden columns, element size es (1 FP8, 2 BF16).
 * Build: make (with CUDA) builds build/bench/colsplit_probe.
 * Run:   build/bench/colsplit_probe [es=1]   GB/s and % of the 16-byte-load reference. */
#include "bench/probe_util.cuh"

#define CW 15
#define THREADS (CW * 32 + 32)

enum { V_ROWS, V_COLS, V_COLS_ROT };

struct cprobe {
    const uint8_t *w;
    int L, dim, hid, es, nb;
    int variant, cb, pitch, kn, R, ns;
    size_t slot;
};

__global__ void __launch_bounds__(THREADS, 1) k_stream(const __grid_constant__ cprobe P,
                                                       const __grid_constant__ CUtensorMap tm)
{
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = (uint64_t *)(sm + (size_t)P.ns * P.slot), *empty = full + P.ns;
    const int tid = threadIdx.x, lane = tid & 31, b = blockIdx.x;
    const size_t row_bytes = (size_t)P.hid * P.es;
    /* the stages of one layer: rows — this block's 16-row groups × row chunks; cols — dim / R */
    const int groups = P.dim / 16, g0 = groups * b / P.nb, g1 = groups * (b + 1) / P.nb;
    const int nkc = (int)(row_bytes / P.cb);
    const int per_layer = P.variant == V_ROWS ? (g1 - g0) * nkc : (P.dim + P.R - 1) / P.R;
    const long long stages = (long long)per_layer * P.L;
    const uint32_t box_bytes = P.variant == V_ROWS ? 16u * P.cb : (uint32_t)P.R * P.kn * P.es;
    mbar_ring_init(full, empty, P.ns, CW);
    if (tid >= CW * 32) {
        const uint64_t pol = kern_policy_evict_first();
        const int first = P.variant == V_COLS_ROT ? per_layer * b / P.nb : 0;
        int slot = 0, round = 0;
        for (long long s = 0; s < stages; s++, slot = slot + 1 == P.ns ? (round++, 0) : slot + 1) {
            if (round > 0)
                mbar_wait(&empty[slot], (uint32_t)(round - 1) & 1u);
            uint8_t *dst = sm + (size_t)slot * P.slot;
            const int l = (int)(s / per_layer), i = (int)(s % per_layer);
            if (lane == 0)
                mbar_expect_tx(&full[slot], box_bytes);
            __syncwarp();
            if (P.variant == V_ROWS) {
                const int g = g0 + i / nkc, kc = i % nkc;
                if (lane < 16)
                    mega_bulk_hint(dst + (size_t)lane * P.pitch,
                                   P.w + ((size_t)l * P.dim + (size_t)g * 16 + lane) * row_bytes + (size_t)kc * P.cb,
                                   (uint32_t)P.cb, &full[slot], pol);
            } else if (lane == 0) {
                const int st = (first + i) % per_layer;
                tensor3d(dst, &tm, b * P.kn, st * P.R, l, &full[slot], pol);
            }
        }
        return;
    }
    uint32_t acc = 0;
    const int w = tid >> 5;
    int slot = 0, round = 0;
    for (long long s = 0; s < stages; s++, slot = slot + 1 == P.ns ? (round++, 0) : slot + 1) {
        mbar_wait(&full[slot], (uint32_t)round & 1u);
        acc ^= *(const uint32_t *)(sm + (size_t)slot * P.slot + 4 * (tid % 64));
        __syncwarp();
        if (lane == 0)
            mbar_arrive(&empty[slot]);
        (void)w;
    }
    if (acc == 0x12345678u)
        g_sink = acc;
}

struct run_ctx {
    cprobe P;
    CUtensorMap tm;
    size_t smem, bytes;
    int sms;
};

static void run_ref(void *v)
{
    run_ctx *c = (run_ctx *)v;
    k_ref<<<c->sms * 8, 256>>>((const uint4 *)c->P.w, c->bytes / 16);
}

static void run_stream(void *v)
{
    run_ctx *c = (run_ctx *)v;
    k_stream<<<c->P.nb, THREADS, c->smem>>>(c->P, c->tm);
}

int main(int argc, char **argv)
{
    const int es = argc > 1 ? atoi(argv[1]) : 1;
    run_ctx c;
    memset(&c, 0, sizeof c);
    int optin = 0;
    probe_device(&c.sms, &optin);
    cprobe &P = c.P;
    P.L = 32;                 /* 7B: 32 layers of W_down, 4096 × 14336 */
    P.dim = 4096;
    P.hid = 14336;
    P.es = es;
    P.nb = 128;
    P.kn = P.hid / P.nb;      /* 112 hidden units a block */
    c.bytes = (size_t)P.L * P.dim * P.hid * es;
    uint8_t *buf = probe_buffer(c.bytes);
    P.w = buf;
    const double gb = c.bytes / 1e9;
    const float ref = time_ms(run_ref, &c, 9);
    printf("W_down of 7B as %d x (%d x %d), %d-byte elements: %.2f GB; %d blocks, %d SMs\n", P.L, P.dim, P.hid, es, gb,
           P.nb, c.sms);
    printf("%-44s %8.1f GB/s\n", "ref (16-byte loads)", gb / (ref / 1e3));
    const encode_fn enc = tensor_encoder();
    CK(cudaFuncSetAttribute(k_stream, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    struct {
        const char *name;
        int variant, R;
        CUtensorMapL2promotion promo;
    } vs[] = {
        { "rows (16 x 2 KiB bulk copies)", V_ROWS, 0, CU_TENSOR_MAP_L2_PROMOTION_NONE },
        { "cols, R 240", V_COLS, 240, CU_TENSOR_MAP_L2_PROMOTION_NONE },
        { "cols, R 144", V_COLS, 144, CU_TENSOR_MAP_L2_PROMOTION_NONE },
        { "cols-rot, R 240", V_COLS_ROT, 240, CU_TENSOR_MAP_L2_PROMOTION_NONE },
        { "cols, R 240, L2 promotion 128 B", V_COLS, 240, CU_TENSOR_MAP_L2_PROMOTION_L2_128B },
        { "cols, R 240, L2 promotion 256 B", V_COLS, 240, CU_TENSOR_MAP_L2_PROMOTION_L2_256B },
    };
    for (size_t i = 0; i < sizeof vs / sizeof *vs; i++) {
        P.variant = vs[i].variant;
        P.R = vs[i].R;
        P.cb = 2048;
        P.pitch = P.cb + 64;
        P.slot = (size_t)16 * P.pitch;   /* the decode kernel's slot: 33,792 bytes */
        if (P.variant != V_ROWS && (size_t)P.R * P.kn * es > P.slot)
            continue;
        P.ns = (int)((optin - 64 * 1024) / (P.slot + 16));   /* the rest of the decode kernel's smem kept free */
        P.ns = P.ns > 5 ? 5 : P.ns;
        c.smem = (size_t)P.ns * P.slot + (size_t)P.ns * 16;
        if (P.variant != V_ROWS) {
            const cuuint64_t dims[3] = { (cuuint64_t)P.hid, (cuuint64_t)P.dim, (cuuint64_t)P.L };
            const cuuint64_t strides[2] = { (cuuint64_t)P.hid * es, (cuuint64_t)P.hid * es * P.dim };
            const cuuint32_t box[3] = { (cuuint32_t)P.kn, (cuuint32_t)P.R, 1 }, el[3] = { 1, 1, 1 };
            const CUresult r = enc(&c.tm, es == 1 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3,
                                   buf, dims, strides, box, el, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                   CU_TENSOR_MAP_SWIZZLE_NONE, vs[i].promo, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
            if (r != CUDA_SUCCESS) {
                printf("%-44s tensor map error %d\n", vs[i].name, (int)r);
                continue;
            }
        }
        const float ms = time_ms(run_stream, &c, 7);
        printf("%-44s %8.1f GB/s  %5.1f %% of ref  (%d stages of %zu bytes)\n", vs[i].name, gb / (ms / 1e3),
               100.0 * ref / ms, P.ns, P.slot);
    }
    CK(cudaFree(buf));
    return 0;
}
