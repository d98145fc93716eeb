/* gemm.cu — prefill GEMMs: y (n × rows, bf16 raw sums) = x (n × cols) · wᵀ with w row-major
 * (rows × cols), FP8 e4m3 or BF16, through cuBLASLt (the "TN" form Hopper FP8 needs: A = w read
 * transposed, B = x), one algorithm per shape and bucket of token counts (kern_gemm_bucket) chosen
 * once and cached with its descriptors, and a plain tiled CUDA-core kernel for shapes cuBLASLt
 * refuses. Budget: see
 * prefill.h (≥ 1.2 PFLOP/s FP8 at n ≥ 512). */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kern_util.cuh"
#include "kernels/prefill.h"

#define LTCHECK(call)                                                                          \
    do {                                                                                       \
        cublasStatus_t s_ = (call);                                                            \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                       \
            return bora_errf(err, -EIO, "%s: cuBLAS status %d (%s:%d)", #call, (int)s_,        \
                             __FILE__, __LINE__);                                              \
    } while (0)

struct gemm_entry {
    int rows, cols, n;                     /* n: the token count lb / lc describe now */
    int bucket;                            /* the cache key's n: gemm_bucket(n) */
    enum bora_dtype dt;
    int ok;                                /* 1: cuBLASLt algo below; 0: use the fallback */
    cublasLtMatmulDescOpaque_t desc;
    cublasLtMatrixLayoutOpaque_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct kern_gemm {
    cublasLtHandle_t lt;
    cublasLtMatmulPreferenceOpaque_t pref;
    void *ws;                              /* device, KERN_GEMM_WORKSPACE bytes */
    struct gemm_entry cache[KERN_GEMM_CACHE];
    int n_cache;
    struct gemm_entry scratch;             /* shapes beyond the cache */
    bool force_fallback;
    int last_path;
};

extern "C" int kern_gemm_create(struct kern_gemm **out, struct bora_err *err)
{
    *out = NULL;
    struct kern_gemm *g = (struct kern_gemm *)calloc(1, sizeof *g);
    if (!g)
        return bora_errf(err, -ENOMEM, "gemm: no host memory for the context");
    cublasStatus_t s = cublasLtCreate(&g->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return bora_errf(err, -EIO, "cublasLtCreate: status %d", (int)s);
    }
    size_t ws = KERN_GEMM_WORKSPACE;
    cudaError_t ce = cudaMalloc(&g->ws, ws);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();   /* a failed allocation must not surface at the next launch check */
        cublasLtDestroy(g->lt);
        free(g);
        return bora_errf(err, -ENOMEM, "gemm: cudaMalloc(%zu bytes of workspace): %s", ws, cudaGetErrorString(ce));
    }
    if (cublasLtMatmulPreferenceInit(&g->pref) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(&g->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof ws) != CUBLAS_STATUS_SUCCESS) {
        kern_gemm_destroy(g);
        return bora_errf(err, -EIO, "gemm: cuBLASLt preference setup failed");
    }
    *out = g;
    return 0;
}

extern "C" void kern_gemm_destroy(struct kern_gemm *g)
{
    if (!g)
        return;
    if (g->ws)
        cudaFree(g->ws);
    cublasLtDestroy(g->lt);
    free(g);
}

extern "C" void kern_gemm_force_fallback(struct kern_gemm *g, bool on) { g->force_fallback = on; }
extern "C" int kern_gemm_last_path(const struct kern_gemm *g) { return g->last_path; }

/* Times the heuristic's candidates for e on a's operands (GEMM_TUNE_REPS launches each, after one
 * untimed) and keeps the fastest in e->algo. Synchronizes the stream; the outputs it writes are
 * overwritten by the real launch that follows. Any CUDA failure leaves the heuristic's first. */
#define GEMM_TUNE_CANDIDATES 8
/* Every bucket is timed, the smallest too: a chat turn after a cached conversation is a GEMM of
 * a few dozen tokens, bound by reading the weights, where the heuristic's first choice left
 * 3–4 % of the turn's TTFT (H200 23:08 UTC: 64 new tokens after 1,984 cached 3.94/3.95 → 3.78/3.84
 * ms, 64 tokens 3.42/3.35 → 3.31/3.25 ms; the down GEMM 0.78 → 0.70 ms a prefill). The timing
 * costs ≈ 1 ms per matrix shape at 64 tokens and 32 GEMMs' time at larger ones; the engine pays
 * it for every bucket when it opens (prefill_run_tune), not the first prompt of each bucket. */
#define GEMM_TUNE_MIN_N 16
#define GEMM_TUNE_REPS 3

static void gemm_tune(struct kern_gemm *g, struct gemm_entry *e, const struct kern_gemm_args *a,
                      const cublasLtMatmulHeuristicResult_t *res, int nres, cudaStream_t s)
{
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        goto out;
    {
        const float one = 1.0f, zero = 0.0f;
        float best = 1e30f;
        for (int i = 0; i < nres; i++) {
            if (res[i].state != CUBLAS_STATUS_SUCCESS)
                continue;
            bool ok = true;
            for (int r = 0; r <= GEMM_TUNE_REPS && ok; r++) {
                if (r == 1)
                    ok = cudaEventRecord(e0, s) == cudaSuccess;
                ok = ok && cublasLtMatmul(g->lt, &e->desc, &one, a->w, &e->la, a->x, &e->lb, &zero, a->y, &e->lc,
                                          a->y, &e->lc, &res[i].algo, g->ws, KERN_GEMM_WORKSPACE,
                                          s) == CUBLAS_STATUS_SUCCESS;
            }
            float ms = 0;
            if (!ok || cudaEventRecord(e1, s) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
                cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) {
                (void)cudaGetLastError();
                continue;
            }
            if (ms < best) {
                best = ms;
                e->algo = res[i].algo;
            }
        }
    }
out:
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    (void)cudaGetLastError();
}

/* Fills e's descriptors for its shape and asks the heuristic; e->ok = 0 when nothing fits. When
 * `tune` (a cached shape with n ≥ GEMM_TUNE_MIN_N, stream not capturing), times the heuristic's
 * first GEMM_TUNE_CANDIDATES on a's operands and keeps the fastest: a one-time cost per shape. */
static int gemm_plan(struct kern_gemm *g, struct gemm_entry *e, const struct kern_gemm_args *a, bool tune,
                     cudaStream_t s, struct bora_err *err)
{
    const bool fp8 = e->dt == BORA_DT_F8_E4M3;
    const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    e->ok = 0;
    if (fp8 && (e->cols % 16 || e->rows % 16))
        return 0;   /* FP8 needs 16-byte aligned leading dimensions */
    if (!fp8 && (e->cols % 8 || e->rows % 8))
        return 0;
    LTCHECK(cublasLtMatmulDescInit(&e->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LTCHECK(cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LTCHECK(cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (fp8) {
        int8_t fast = KERN_GEMM_FP8_FAST_ACCUM;
        LTCHECK(cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
    }
    /* column-major view: A = w as (cols × rows), B = x as (cols × n), D = y as (rows × n) */
    LTCHECK(cublasLtMatrixLayoutInit(&e->la, in, (uint64_t)e->cols, (uint64_t)e->rows, (int64_t)e->cols));
    LTCHECK(cublasLtMatrixLayoutInit(&e->lb, in, (uint64_t)e->cols, (uint64_t)e->n, (int64_t)e->cols));
    LTCHECK(cublasLtMatrixLayoutInit(&e->lc, CUDA_R_16BF, (uint64_t)e->rows, (uint64_t)e->n, (int64_t)e->rows));
    cublasLtMatmulHeuristicResult_t res[GEMM_TUNE_CANDIDATES];
    int nres = 0;
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (tune && (e->n < GEMM_TUNE_MIN_N || cudaStreamIsCapturing(s, &cap) != cudaSuccess ||
                 cap != cudaStreamCaptureStatusNone))
        tune = false;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g->lt, &e->desc, &e->la, &e->lb, &e->lc, &e->lc, &g->pref,
                                                       tune ? GEMM_TUNE_CANDIDATES : 1, res, &nres);
    if (st != CUBLAS_STATUS_SUCCESS || nres < 1 || res[0].state != CUBLAS_STATUS_SUCCESS)
        return 0;
    e->algo = res[0].algo;
    e->ok = 1;
    if (tune && nres > 1)
        gemm_tune(g, e, a, res, nres, s);
    return 0;
}

/* Token counts share an algorithm within a bucket: powers of two up to 256, then quarter
 * octaves (320, 384, 448, 512, 640, … 2,048, 2,560, …), so the n an entry was tuned at and any n
 * that reuses it differ by at most 25 % above 256 tokens. Prompts of every length (and
 * prefix-cache suffixes) reuse ≈ 17 entries per matrix instead of tuning, or filling the cache,
 * once per length (the cost measured when a bucket spanned 300–512: 26 % at 512). */
int kern_gemm_bucket(int n)
{
    int b = 16;
    while (b < n && b < 256)
        b <<= 1;
    if (n <= b)
        return b;
    for (int oct = 256;; oct <<= 1)
        for (int q = 5; q <= 8; q++)
            if ((long)oct * q / 4 >= n)
                return (int)((long)oct * q / 4);
}

/* e's algorithm (chosen for another n of its bucket) on layouts for a->n: the layouts are
 * rebuilt and the algorithm checked once per change of n; when cuBLASLt refuses it for this
 * n, the caller plans this n on its own (returns 1). */
static int gemm_relayout(struct kern_gemm *g, struct gemm_entry *e, const struct kern_gemm_args *a,
                         struct bora_err *err)
{
    const cudaDataType_t in = e->dt == BORA_DT_F8_E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    LTCHECK(cublasLtMatrixLayoutInit(&e->lb, in, (uint64_t)e->cols, (uint64_t)a->n, (int64_t)e->cols));
    LTCHECK(cublasLtMatrixLayoutInit(&e->lc, CUDA_R_16BF, (uint64_t)e->rows, (uint64_t)a->n, (int64_t)e->rows));
    e->n = a->n;
    cublasLtMatmulHeuristicResult_t r;
    if (cublasLtMatmulAlgoCheck(g->lt, &e->desc, &e->la, &e->lb, &e->lc, &e->lc, &e->algo, &r) !=
            CUBLAS_STATUS_SUCCESS ||
        r.state != CUBLAS_STATUS_SUCCESS || r.workspaceSize > KERN_GEMM_WORKSPACE) {
        e->n = -1;   /* lb / lc describe no checked n: the next call of this bucket checks again */
        return 1;
    }
    return 0;
}

static int gemm_find(struct kern_gemm *g, const struct kern_gemm_args *a, struct gemm_entry **out,
                     cudaStream_t s, struct bora_err *err)
{
    const int bucket = kern_gemm_bucket(a->n);
    bool found = false;
    for (int i = 0; i < g->n_cache; i++) {
        struct gemm_entry *e = &g->cache[i];
        if (e->rows == a->rows && e->cols == a->cols && e->bucket == bucket && e->dt == a->dtype) {
            int rc = e->ok && e->n != a->n ? gemm_relayout(g, e, a, err) : 0;
            if (rc < 0)
                return rc;
            if (rc == 0) {
                *out = e;
                return 0;
            }
            found = true;   /* the bucket's algorithm does not take this n: plan it on its own */
            break;
        }
    }
    struct gemm_entry *e = !found && g->n_cache < KERN_GEMM_CACHE ? &g->cache[g->n_cache] : &g->scratch;
    memset(e, 0, sizeof *e);
    const bool keep = e != &g->scratch;
    /* a kept entry serves its whole bucket: choose its algorithm at the bucket's top n when the
     * buffers hold that many rows (an algorithm tuned for a smaller n measured 10 % slower at
     * the top: 1,800 → 2,048 tokens), else at this n */
    struct kern_gemm_args at = *a;
    if (keep && a->cap_n > a->n)
        at.n = bucket < a->cap_n ? bucket : a->cap_n;
    e->rows = a->rows, e->cols = a->cols, e->n = at.n, e->bucket = bucket, e->dt = a->dtype;
    int rc = gemm_plan(g, e, &at, keep, s, err);
    if (rc)
        return rc;
    if (e->ok && at.n != a->n) {
        if ((rc = gemm_relayout(g, e, a, err)) < 0)
            return rc;
        if (rc == 1) {   /* cuBLASLt refuses the chosen algorithm at this n: the heuristic's for it */
            e->n = a->n;
            if ((rc = gemm_plan(g, e, a, false, s, err)))
                return rc;
        }
    }
    if (e != &g->scratch)
        g->n_cache++;
    *out = e;
    return 0;
}

/* ---- fallback: 64 × 64 output tile per block, 16 × 16 threads of 4 × 4, K in steps of 32 ---- */

#define FB_T 64
#define FB_K 32

template <bool FP8>
__device__ __forceinline__ float fb_load(const void *p, size_t i)
{
    if (FP8)
        return kern_e4m3(((const uint8_t *)p)[i]);
    return kern_bf16(((const uint16_t *)p)[i]);
}

template <bool FP8>
__global__ void __launch_bounds__(256) gemm_fallback_kernel(const void *w, const void *x, uint16_t *y, int rows,
                                                           int cols, int n)
{
    __shared__ float ws[FB_K][FB_T + 1], xs[FB_K][FB_T + 1];
    kern_grid_launch_next();
    kern_grid_wait();
    const int r0 = blockIdx.x * FB_T, t0 = blockIdx.y * FB_T;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < cols; k0 += FB_K) {
        for (int i = threadIdx.x; i < FB_K * FB_T; i += 256) {
            int kk = i % FB_K, rr = i / FB_K;
            int c = k0 + kk;
            ws[kk][rr] = (r0 + rr < rows && c < cols) ? fb_load<FP8>(w, (size_t)(r0 + rr) * cols + c) : 0.f;
            xs[kk][rr] = (t0 + rr < n && c < cols) ? fb_load<FP8>(x, (size_t)(t0 + rr) * cols + c) : 0.f;
        }
        __syncthreads();
#pragma unroll 4
        for (int kk = 0; kk < FB_K; kk++) {
            float wv[4], xv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                wv[i] = ws[kk][tx + 16 * i];
                xv[i] = xs[kk][ty + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(xv[i], wv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int t = t0 + ty + 16 * i, r = r0 + tx + 16 * j;
            if (t < n && r < rows)
                y[(size_t)t * rows + r] = kern_f32_to_bf16(acc[i][j]);
        }
}

static int gemm_fallback(const struct kern_gemm_args *a, cudaStream_t s, struct bora_err *err)
{
    dim3 grid((a->rows + FB_T - 1) / FB_T, (a->n + FB_T - 1) / FB_T);
    if (a->dtype == BORA_DT_F8_E4M3)
        CUDA_CHECK(kern_launch(gemm_fallback_kernel<true>, grid, dim3(256), 0, s, a->w, a->x, a->y, a->rows, a->cols, a->n));
    else
        CUDA_CHECK(kern_launch(gemm_fallback_kernel<false>, grid, dim3(256), 0, s, a->w, a->x, a->y, a->rows, a->cols,
                           a->n));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

extern "C" int kern_gemm_run(struct kern_gemm *g, const struct kern_gemm_args *a, struct CUstream_st *stream,
                             struct bora_err *err)
{
    if (a->dtype != BORA_DT_F8_E4M3 && a->dtype != BORA_DT_BF16)
        return bora_errf(err, -EINVAL, "gemm: dtype %s not supported (F8_E4M3 or BF16)", bora_dtype_name(a->dtype));
    if (a->rows <= 0 || a->cols <= 0 || a->n <= 0)
        return bora_errf(err, -EINVAL, "gemm: shape %d × %d × %d", a->rows, a->cols, a->n);
    cudaStream_t s = (cudaStream_t)stream;
    if (!g->force_fallback) {
        struct gemm_entry *e;
        int rc = gemm_find(g, a, &e, s, err);
        if (rc)
            return rc;
        if (e->ok) {
            const float one = 1.0f, zero = 0.0f;
            cublasStatus_t st = cublasLtMatmul(g->lt, &e->desc, &one, a->w, &e->la, a->x, &e->lb, &zero, a->y,
                                               &e->lc, a->y, &e->lc, &e->algo, g->ws, KERN_GEMM_WORKSPACE, s);
            if (st == CUBLAS_STATUS_SUCCESS) {
                g->last_path = 1;
                return 0;
            }
            if (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE)
                return bora_errf(err, -EIO, "cublasLtMatmul %d×%d×%d: cuBLAS status %d", a->rows, a->cols, a->n,
                                 (int)st);
            e->ok = 0;   /* refused at run time: this shape takes the fallback from now on */
        }
    }
    g->last_path = 0;
    return gemm_fallback(a, s, err);
}
