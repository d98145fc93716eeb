/* kern_attn_mma.cuh — decode attention on the tensor cores for one (kv head, split) work item,
 * for large query groups (G > 4 query heads per kv head: Mistral Medium 3.5 has 12, where the
 * per-lane dot products of attn_item are bound by shuffles and shared memory), and in the
 * persistent kernel for 7B's and Ministral 8B's groups of 4 too, FP8 and BF16 (decode_mega.cu
 * kern_mega_amma: there the split's share of the combine is what pays). Shared by the
 * standalone kernel (attention.cu: a block of four warps per item) and the persistent decode
 * kernel (decode_mega.cu: every consumer warp of a block on one item). Internal to kernels/.
 *
 * The group's heads are the rows of the MMA's A operand (Q in bf16 with log2 e folded in, rows
 * ≥ G zero). Four key warps score 16 keys each of every 64-key tile (S = Q Kᵀ), keep a base-2
 * online softmax per head and add P V for their keys, flash-attention style; with NDH = 2 a
 * second set of four warps takes the other half of the head dimension for P V (it scores the
 * same keys, so its softmax state is the same: half the output registers a warp). K and V
 * tiles stream through a STAGES-deep cp.async pipeline that all NT threads feed. The warps'
 * (max, sum, output) merge in shared memory into the split's partial, which attn_finish
 * combines exactly as attn_item's (same partial layout, maxima in natural-log units); in the
 * persistent kernel (SHARE) every split combines its share instead (attn_mma_combine_share).
 * Accuracy: q and the softmax weights in bf16 (tests/gpu_kernels.c states the bound). */
#ifndef BORA_KERNELS_KERN_ATTN_MMA_CUH
#define BORA_KERNELS_KERN_ATTN_MMA_CUH

#include "kernels/kern_attn.cuh"
#include "kernels/kern_mma.cuh"

#define AMMA_KW 4                     /* key warps: 16 keys of a tile each */
#define AMMA_BK (AMMA_KW * 16)        /* keys per tile */
#define AMMA_PAD 8                    /* bf16 elements of padding per tile row (ldmatrix without conflicts) */

/* The tiles' bytes: STAGES × (K, V) bf16 tiles; with an FP8 cache (kv8), one (K, V) bf16 pair the
 * warps read and STAGES × (K, V) e4m3 tiles the copies land in (widened into the pair tile by tile). */
__host__ __device__ static inline size_t attn_mma_tile_bytes(int D, int stages, bool kv8)
{
    const size_t pair = (size_t)2 * AMMA_BK * (D + AMMA_PAD) * 2;
    return kv8 ? pair + (size_t)2 * stages * AMMA_BK * D : stages * pair;
}

/* Shared memory (bytes) of an item: the tiles | q G·D | cm, cw G·n_split each | the warps' (max,
 * sum) — the warps' outputs reuse the tiles' space. */
static inline size_t attn_mma_smem_bytes(int D, int stages, int G, int n_split, bool kv8)
{
    return attn_mma_tile_bytes(D, stages, kv8) +
           sizeof(float) * ((size_t)G * D + 2 * (size_t)G * n_split + AMMA_KW * 16 * 2);
}

/* Splits of whole tiles, about one per block (p.blocks in all, over the kv heads): the keys of
 * split s for the token at pos, as attn_slice. */
__device__ __forceinline__ int attn_mma_slice(const struct attn_params &p, int pos, int s, int *j0, int *j1,
                                              int *n_eff)
{
    const int start = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
    const int tb = max(1, p.blocks / p.n_kv), per = (pos - start + 1 + tb - 1) / tb;
    return attn_slice(p, pos, s, j0, j1, n_eff, max(AMMA_BK, (per + AMMA_BK - 1) / AMMA_BK * AMMA_BK));
}

/* The end of attn_mma_item in the persistent kernel, where every split of a kv head runs at once
 * (one item per block): instead of the last split combining the head alone — one SM reading
 * every split's outputs (Medium 3.5: 15 × 6 KiB, ≈ 6 µs at one SM's share of L2 under the
 * weight stream) — every split waits until the head's splits are all written and combines its
 * 1/n_eff of the head's outputs (≈ 6 KiB from L2, maxima and sums with them, one round trip).
 * The counters are not reset (the persistent kernel zeroes them every step). buf: the tiles'
 * space; cm, cw: G × n_split floats each. tout: the outputs as 64-bit words (ttag << 32 | float
 * bits) at tout instead of floats at p.out (decode_mega.cu's tagged attention output). */
template <int D, int NT>
__device__ __noinline__ void attn_mma_combine_share(const struct attn_params &p, int *counters, int g, int s,
                                                    int n_eff, float *buf, float *cm, float *cw, int tid, int bar,
                                                    int *amax, unsigned long long *tr, unsigned long long *tout,
                                                    unsigned ttag)
{
    constexpr int NW = NT / 32;
    attn_bar(bar, NT);   /* every thread's partial written */
    if (tid == 0) {
        __threadfence();
        atomicAdd(&counters[g], 1);
        int v;
        do
            asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(counters + g) : "memory");
        while (v < n_eff);
    }
    attn_bar(bar, NT);
    ATTN_TR(5);
    const int G = p.n_heads / p.n_kv, GD = G * D, q_dim = p.n_heads * D;
    const int lane = tid & 31, warp = tid >> 5;
    const int c4 = GD / 4, per4 = (c4 + n_eff - 1) / n_eff;
    const int i0 = min(s * per4, c4) * 4, i1 = min((s + 1) * per4, c4) * 4, ni = i1 - i0;
    if (ni <= 0)
        return;
    const int h0 = i0 / D, nh = (i1 - 1) / D - h0 + 1, n4 = ni / 4;
    /* a split's partial starts 16-byte aligned when n_heads · (D + 2) floats are a multiple of 4 */
    const bool al = p.n_heads % 2 == 0;
    /* one pass: the outputs of every split in this share, then the maxima and sums of its heads */
    for (int j = tid; j < n_eff * n4 + nh * n_eff; j += NT) {
        if (j < n_eff * n4) {
            const int t = j / n4, c = j % n4;
            const float *src = attn_part(p, t) + (size_t)g * GD + i0 + 4 * c;
            float4 v;
            if (al)
                v = __ldcg((const float4 *)src);
            else
                v = make_float4(__ldcg(src), __ldcg(src + 1), __ldcg(src + 2), __ldcg(src + 3));
            *(float4 *)(buf + (size_t)t * ni + 4 * c) = v;
        } else {
            const int k = j - n_eff * n4, hh = k / n_eff, t = k % n_eff;
            const float *pt = attn_part(p, t);
            cm[hh * n_eff + t] = __ldcg(pt + q_dim + g * G + h0 + hh);
            cw[hh * n_eff + t] = __ldcg(pt + q_dim + p.n_heads + g * G + h0 + hh);
        }
    }
    attn_bar(bar, NT);
    ATTN_TR(6);
    for (int hh = warp; hh < nh; hh += NW) {   /* a warp per head: the splits' weights */
        float M = -INFINITY;
        for (int t = lane; t < n_eff; t += 32)
            M = fmaxf(M, cm[hh * n_eff + t]);
        M = kern_warp_max(M);
        float den = 0.f;
        for (int t = lane; t < n_eff; t += 32) {
            const float mt = cm[hh * n_eff + t];
            const float f = mt == -INFINITY ? 0.f : __expf(mt - M);
            den += f * cw[hh * n_eff + t];
            cm[hh * n_eff + t] = f;
        }
        den = kern_warp_sum(den);
        for (int t = lane; t < n_eff; t += 32)
            cw[hh * n_eff + t] = den > 0.f ? cm[hh * n_eff + t] / den : 0.f;
    }
    attn_bar(bar, NT);
    ATTN_TR(7);
    float mx = 0.f;
    for (int i = tid; i < ni; i += NT) {
        const float *w = cw + ((i0 + i) / D - h0) * n_eff;
        float acc = 0.f;
        for (int t = 0; t < n_eff; t++)
            acc += w[t] * buf[(size_t)t * ni + i];
        if (tout)   /* tag and value in one 64-bit word: the reader needs no barrier */
            asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(tout + (size_t)g * GD + i0 + i),
                         "l"((unsigned long long)ttag << 32 | __float_as_uint(acc))
                         : "memory");
        else
            p.out[(size_t)g * GD + i0 + i] = acc;
        mx = fmaxf(mx, fabsf(acc));
    }
    if (amax) {   /* the largest |output|, for a reader that scales it (persistent kernel) */
        mx = kern_warp_max(mx);
        if (lane == 0)
            atomicMax(amax, __float_as_int(mx));
    }
    ATTN_TR(8);
    /* No barrier ends the combine: buf (the tiles' space) may still be read by slower warps
     * when this returns. That is safe because a block's only item with work is its first (see
     * the caller); a second item with work would need an attn_bar here before its tiles load. */
}

/* Item (kv head g, split s) for the token at pos. NT threads (tid 0..NT-1, NT ≥ 32·AMMA_KW·NDH)
 * synchronise with named barrier bar; sm holds attn_mma_smem_bytes(D, STAGES, G, p.n_split, K8)
 * (16-byte aligned); *amax (optional) receives the largest |output| of a combine. K8: the cache
 * holds e4m3 (kc_l, vc_l point at bytes): 16-byte copies of 16 elements land in e4m3 tiles and
 * each tile is widened (exactly) into the bf16 pair the warps read, one more barrier a tile. SHARE: every
 * split of kv head g must be running at once or done (the persistent kernel's one item per
 * block); tr (diagnostics): %globaltimer at the item's steps. TG (persistent kernel): q, k and v
 * from qt, the qkv as tagged words, each loaded until it carries qtag (attn_prologue), where qt is
 * not NULL; tout (SHARE only): the combined outputs as words tagged ttag (attn_mma_combine_share). */
template <int D, int NDH, int NT, int STAGES, bool SHARE = false, bool TG = false, bool K8 = false>
__device__ __forceinline__ void attn_mma_item(const struct attn_params &p, uint16_t *kc_l, uint16_t *vc_l,
                                              int *counters, int g, int s, int pos, uint8_t *sm, int *s_last_p,
                                              int tid, int bar, int *amax = nullptr,
                                              unsigned long long *tr = nullptr,
                                              const unsigned long long *qt = nullptr, unsigned qtag = 0,
                                              unsigned long long *tout = nullptr, unsigned ttag = 0)
{
    constexpr int LPK = D / 8, LD = D + AMMA_PAD, KS = D / 16, ND = D / 8 / NDH, CH = D / 8;
    constexpr int CW = AMMA_KW * NDH;   /* compute warps */
    constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;
    static_assert(NT >= CW * 32 && ND % 2 == 0, "attn_mma_item: threads or head split");
    const int G = p.n_heads / p.n_kv;
    constexpr int C8 = D / 16;   /* K8: 16-byte chunks (16 e4m3 elements) of a row */
    uint16_t *tiles = (uint16_t *)sm;
    uint8_t *tiles8 = sm + (size_t)2 * AMMA_BK * LD * 2;   /* K8: after the one bf16 pair */
    float *q_s = (float *)(sm + attn_mma_tile_bytes(D, STAGES, K8));
    float *cm = q_s + G * D, *cw = cm + G * p.n_split;
    float *wml = cw + G * p.n_split;   /* [key warp][16 rows][max, sum] */
    float *wo = (float *)sm;           /* [key warp][16 rows][D]: the tiles' space, after the last tile */
    const int warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tq = lane & 3;
    int j0, j1, n_eff;
    const int n = attn_mma_slice(p, pos, s, &j0, &j1, &n_eff);
    if (s >= n_eff)   /* a split the context does not need: no work, and not counted */
        return;
    ATTN_TR(0);
    uint16_t *kc = (uint16_t *)kern_kv_at<K8>(kc_l, (size_t)g * p.max_ctx * D);   /* K8: e4m3 bytes */
    uint16_t *vc = (uint16_t *)kern_kv_at<K8>(vc_l, (size_t)g * p.max_ctx * D);
    const int ntiles = n > 0 ? (n + AMMA_BK - 1) / AMMA_BK : 0;
    /* keys [j0 + t·BK, +BK) of K and V into buffer b (keys ≥ j0 + n zero-filled); one commit group
     * per tile slot, empty past the last tile, so the wait below counts the same every time */
    auto load_tile = [&](int t) {
        if (t < ntiles) {
            const int b = t % STAGES;
            if constexpr (K8) {   /* e4m3 rows of D bytes, unpadded: widened before they are read */
                uint8_t *kt = tiles8 + (size_t)b * 2 * AMMA_BK * D, *vt = kt + AMMA_BK * D;
                for (int i = tid; i < AMMA_BK * C8; i += NT) {
                    const int r = i / C8, ch = i % C8, j = t * AMMA_BK + r;
                    const bool ok = j < n;
                    const size_t src = (size_t)(j0 + (ok ? j : 0)) * D + ch * 16;
                    fa_cp16(kt + r * D + ch * 16, (const uint8_t *)kc + src, ok);
                    fa_cp16(vt + r * D + ch * 16, (const uint8_t *)vc + src, ok);
                }
            } else {
                uint16_t *kt = tiles + (size_t)b * 2 * AMMA_BK * LD, *vt = kt + AMMA_BK * LD;
                for (int i = tid; i < AMMA_BK * CH; i += NT) {
                    const int r = i / CH, ch = i % CH, j = t * AMMA_BK + r;
                    const bool ok = j < n;
                    const size_t src = (size_t)(j0 + (ok ? j : 0)) * D + ch * 8;
                    fa_cp16(kt + r * LD + ch * 8, kc + src, ok);
                    fa_cp16(vt + r * LD + ch * 8, vc + src, ok);
                }
            }
        }
        fa_cp_commit();
    };
    const bool writer = n > 0 && pos < j1;
    if (!writer)   /* the slice does not hold the new key: its first tiles load during the prologue */
        for (int t = 0; t < STAGES - 1; t++)
            load_tile(t);
    attn_prologue<KERN_ATTN_MAX_GROUP, LPK, NT, TG, K8>(p, kc, vc, g, pos, j1, n, q_s, tid, qt, qtag);
    if (writer)
        __threadfence();   /* the new key and value reach L2 before cp.async.cg reads them */
    attn_bar(bar, NT);
    ATTN_TR(1);
    if (writer)
        for (int t = 0; t < STAGES - 1; t++)
            load_tile(t);

    const bool compute = warp < CW;
    const int kq = warp % AMMA_KW, dh = warp / AMMA_KW, kw = kq * 16;
    uint32_t qa[KS][4];   /* rows gr and gr + 8: heads gr and gr + 8 of the group */
#pragma unroll
    for (int k = 0; k < KS; k++) {
        const int c = k * 16 + 2 * tq;
        const float *q0 = q_s + gr * D + c, *q1 = q_s + (gr + 8) * D + c;
        const bool h0 = compute && gr < G, h1 = compute && gr + 8 < G;
        qa[k][0] = h0 ? fa_pack(q0[0] * LOG2E, q0[1] * LOG2E) : 0u;
        qa[k][1] = h1 ? fa_pack(q1[0] * LOG2E, q1[1] * LOG2E) : 0u;
        qa[k][2] = h0 ? fa_pack(q0[8] * LOG2E, q0[9] * LOG2E) : 0u;
        qa[k][3] = h1 ? fa_pack(q1[8] * LOG2E, q1[9] * LOG2E) : 0u;
    }
    float o[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const int mat = lane >> 3, mr = lane & 7;
    for (int t = 0; t < ntiles; t++) {
        fa_cp_wait<STAGES - 2>();   /* tile t has landed (this thread's copies) */
        attn_bar(bar, NT);          /* everyone's copies; everyone is done with tile t - 1 */
        load_tile(t + STAGES - 1);  /* into tile t - 1's buffer */
        const uint16_t *kt = tiles + (size_t)(K8 ? 0 : t % STAGES) * 2 * AMMA_BK * LD, *vt = kt + AMMA_BK * LD;
        if constexpr (K8) {   /* tile t's e4m3 into the bf16 pair (every warp is past tile t - 1's math) */
            const uint8_t *k8 = tiles8 + (size_t)(t % STAGES) * 2 * AMMA_BK * D;
            for (int i = tid; i < 2 * AMMA_BK * C8; i += NT) {
                const int kv = i / (AMMA_BK * C8), r = i / C8 % AMMA_BK, ch = i % C8;
                const uint4 e = *(const uint4 *)(k8 + (size_t)kv * AMMA_BK * D + r * D + ch * 16);
                uint4 *dst = (uint4 *)(tiles + (size_t)kv * AMMA_BK * LD + r * LD + ch * 16);
                dst[0] = kern_e4m3x8_to_bf16x8(make_uint2(e.x, e.y));
                dst[1] = kern_e4m3x8_to_bf16x8(make_uint2(e.z, e.w));
            }
            attn_bar(bar, NT);   /* the pair is written */
        }
        if (compute && t * AMMA_BK + kw < n) {   /* this warp's 16 keys hold at least one of the slice */
            float sc[2][4] = { { 0.f, 0.f, 0.f, 0.f }, { 0.f, 0.f, 0.f, 0.f } };
#pragma unroll
            for (int k = 0; k < KS; k++) {
                uint32_t b[4];
                fa_ldsm_x4(b, kt + (kw + mr + (mat >> 1) * 8) * LD + k * 16 + (mat & 1) * 8);
                fa_mma(sc[0], qa[k], b[0], b[1]);
                fa_mma(sc[1], qa[k], b[2], b[3]);
            }
            if (t * AMMA_BK + kw + 16 > n) {
#pragma unroll
                for (int j = 0; j < 2; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (t * AMMA_BK + kw + j * 8 + 2 * tq + (e & 1) >= n)
                            sc[j][e] = -INFINITY;
            }
            float a0, a1;
            fa_softmax_step<2>(sc, m0, m1, l0, l1, a0, a1);
            const uint32_t pa[4] = { fa_pack(sc[0][0], sc[0][1]), fa_pack(sc[0][2], sc[0][3]),
                                     fa_pack(sc[1][0], sc[1][1]), fa_pack(sc[1][2], sc[1][3]) };
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                o[2 * dp][0] *= a0;
                o[2 * dp][1] *= a0;
                o[2 * dp][2] *= a1;
                o[2 * dp][3] *= a1;
                o[2 * dp + 1][0] *= a0;
                o[2 * dp + 1][1] *= a0;
                o[2 * dp + 1][2] *= a1;
                o[2 * dp + 1][3] *= a1;
                uint32_t b[4];
                fa_ldsm_x4_t(b, vt + (kw + mr + (mat & 1) * 8) * LD + dh * (D / NDH) + dp * 16 + (mat >> 1) * 8);
                fa_mma(o[2 * dp], pa, b[0], b[1]);
                fa_mma(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
    }
    fa_cp_wait<0>();
    attn_bar(bar, NT);   /* every warp is done with the tiles: their space takes the warps' outputs */
    ATTN_TR(2);
    if (compute) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        /* the warps' (max, sum, output) → the split's partial */
        float *ow = wo + (size_t)kq * 16 * D + dh * (D / NDH);
#pragma unroll
        for (int d = 0; d < ND; d++) {
            const int c = d * 8 + 2 * tq;
            ow[gr * D + c] = o[d][0];
            ow[gr * D + c + 1] = o[d][1];
            ow[(gr + 8) * D + c] = o[d][2];
            ow[(gr + 8) * D + c + 1] = o[d][3];
        }
        if (tq == 0 && dh == 0) {
            wml[(kq * 16 + gr) * 2] = m0;
            wml[(kq * 16 + gr) * 2 + 1] = l0;
            wml[(kq * 16 + gr + 8) * 2] = m1;
            wml[(kq * 16 + gr + 8) * 2 + 1] = l1;
        }
    }
    attn_bar(bar, NT);
    ATTN_TR(3);
    const int q_dim = p.n_heads * D;
    float *part = attn_part(p, s);
    for (int i = tid; i < G * D; i += NT) {
        const int h = i / D, d = i % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < AMMA_KW; w++)
            M = fmaxf(M, wml[(w * 16 + h) * 2]);
        float ov = 0.f, lv = 0.f;
        if (M != -INFINITY) {
#pragma unroll
            for (int w = 0; w < AMMA_KW; w++) {
                const float f = fa_exp2(wml[(w * 16 + h) * 2] - M);
                ov += f * wo[((size_t)w * 16 + h) * D + d];
                lv += f * wml[(w * 16 + h) * 2 + 1];
            }
        }
        part[(size_t)g * G * D + i] = ov;
        if (d == 0) {
            part[q_dim + g * G + h] = M == -INFINITY ? -INFINITY : M * LN2;
            part[q_dim + p.n_heads + g * G + h] = lv;
        }
    }
    ATTN_TR(4);
    if (SHARE)
        attn_mma_combine_share<D, NT>(p, counters, g, s, n_eff, (float *)sm, cm, cw, tid, bar, amax, tr, tout,
                                      ttag);
    else
        attn_finish<KERN_ATTN_MAX_GROUP, LPK, NT>(p, counters, g, n_eff, cm, cw, s_last_p, tid, bar, amax, tr);
}

#endif
