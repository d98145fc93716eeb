/* decode_mega.cu — every transformer layer of one decode step in one persistent kernel, so the
 * weights stream from memory without a gap at any kernel boundary.
 *
 * One block per SM: a producer warp streams the block's share of every matrix of every layer,
 * in order, through a ring of shared-memory stages with bulk asynchronous copies (TMA,
 * cp.async.bulk + mbarrier); fifteen consumer warps multiply each stage with the layer's input
 * vector on the tensor cores (mma.sync m16n8k16: FP8 e4m3 weights converted to f16 in
 * registers, BF16 as stored; the vector split into a high and a low half-precision part, the
 * two placed in different columns of the B operand so one MMA carries both). Between the
 * phases of a layer (qkv → attention → wo → gate/up → down) the blocks meet at counters in
 * global memory where no tagged words carry the data (below: the attention's end, gate/up's end,
 * and every meeting on the tensor-core attention's qkv or with BORA_MEGA_FLAGS=32768); while a
 * block waits, its producer issues the next phase's first stages (KERN_MEGA_AHEAD: two since
 * only wo and down are held there, one before), not the whole ring: blocks that finish a phase
 * early then leave the bandwidth to the last ones, whose end everyone waits for (+2.5 % on 7B, +1
 * more since the f16 partials). Where the attention runs on the tensor cores every input is a
 * tagged word, and there the producers are never held (KERN_MEGA_AHEAD_AUTO: 7B 1.8 % less time a
 * token in FP8, 1 % in BF16). The phase that writes a layer input
 * also publishes its largest magnitude, so its readers convert it in one pass. x (wo's and down's
 * output) goes further: it is also written as tagged words (tag << 32 | float bits), so gate/up
 * and the next layer's qkv meet at no counter and hold no producer; they load the words until
 * each carries its phase's tag and find the maximum themselves (mega_load_xt: 7B 1.7 % less time
 * a token in FP8, 0.7-1.7 % in BF16, Medium 3.5 0.8 %; the same logits to the bit). qkv's outputs
 * are tagged too and each attention item waits for its own rows instead of the grid (attn_item: 7B
 * 0.9 % FP8, 0.5 % BF16; the tensor-core attention, where every block streams some of qkv: 7B FP8
 * 1.9 %), and so is the tensor-core attention's output, which wo's input load takes word by word
 * instead of meeting at the attention's barrier (both: 7B FP8 2.4 %, Ministral 8B 2.9 %, Medium 3.5
 * 0.7 %). Weights are
 * read with an L2 evict-first policy. Attention is flash-decoding (kern_attn.cuh) on two
 * 224-thread halves of the consumers per block; up to MEGA_CMB_SPLITS splits the items only
 * write their partials (f16, scaled per item) and every block combines them as it loads wo's
 * input (mega_load_att: no last-split detection and no second barrier; 7B +3 points FP8, +2
 * BF16, f16 partials +0.5 FP8), beyond that the last split of each kv head combines
 * (attn_finish). The tensor-core attention (groups of more than 4 heads, and FP8 groups of up to 4
 * whose rows stream in 2 KiB chunks: kern_mega_amma) takes one item per block, and every split
 * combines its share of its kv head (attn_mma_combine_share: Medium 3.5 +0.4 points, the combine
 * 12 µs → 4 µs a layer; 7B FP8 5 % less time a token than on attn_item). For FP8 weights whose every row streams in
 * 2 KiB chunks (every Mistral preset) an instance with that stage geometry compiled in runs: each
 * warp's 2–3 steps of a stage unrolled, the row pitch a constant (+0.9 % on 7B and Medium 3.5;
 * the same logits to the bit). Where a layer streams at least MEGA_TMAP_MIN_BYTES a block
 * (Medium 3.5), each stage is then one tensor copy (cp.async.bulk.tensor, a 4-D map of the
 * weights, 128-byte swizzle) instead of 16 row copies: Medium 3.5 takes 5.8 % less time a token,
 * with the same logits to the bit; 7B and Ministral 8B measured slower with it. Where wo's or
 * down's 16-row groups do not divide over the grid (Small 24B: 320 on 128 blocks), the extra ones
 * are dealt in halves of their column stages, so every block streams the same (MEGA_HALF_MAX:
 * Small 24B 4 % faster). What it reaches and where the rest of the time goes:
 * docs/PERFORMANCE_GPU.md.
 *
 * Numerics: fp32 accumulation; the input vector is scaled by a power of two so its largest
 * element lies in [2^13, 2^14) before the hi/lo split (no f16 overflow; ≈ 2^-22 relative
 * error), the scale is undone after the sum. */
#include "kernels/kern_attn.cuh"
#include "kernels/kern_attn_mma.cuh"
#include "kernels/kern_tma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#define MEGA_CW 15                      /* consumer warps */
#define MEGA_CT (MEGA_CW * 32)          /* consumer threads */
#define MEGA_THREADS (MEGA_CT + 32)     /* + the producer warp: 16 warps, so 128 registers a thread
                                         * (17 warps are allocated as 20: 96 registers, spills) */
#define MEGA_AT 224                     /* threads of an attention half (7 warps; the 15th idles) */
#define MEGA_ROWS 16                    /* rows per group: the MMA's M */
#define MEGA_BAR_C 1                    /* named barrier of all consumer threads */
#define MEGA_BAR_H 2                    /* 2 and 3: the attention halves */
#define MEGA_CB_MAX 2048                /* bytes of a row per stage at most, unless no divisor of the row
                                         * reaches it (mega_cb) */
#define MEGA_CB_WIDE 2560               /* ... and then at most this */
#define MEGA_MIN_RING (64 * 1024)       /* a ring smaller than this is not worth it */
#define MEGA_AMMA_STAGES 3              /* tensor-core attention: K/V tiles in flight per block (2 where no
                                         * item has more than one tile: mega_prepare) */

enum { MEGA_QKV, MEGA_WO, MEGA_GU, MEGA_DOWN, MEGA_MATS };
/* Diagnostic switches (kern_mega_args.debug; results are wrong with any set): where the time goes. */
enum { MEGA_DBG_NO_MATH = 1, MEGA_DBG_NO_WAIT = 2, MEGA_DBG_NO_ATTN = 4 };
/* Variants under test (kern_mega_args.flags; results stay right). */
enum { MEGA_F_TWO_PASS = 8, MEGA_F_EVICT_NORMAL = 16,
       MEGA_F_NO_HALVES = 32    /* wo's and down's extra groups whole, never in halves (A/B) */,
       MEGA_F_AMMA = 64 /* tensor-core attention for any group */,
       MEGA_F_ATT_LAST = 128 /* the last split of a kv head combines the splits (as before the wo phase did) */,
       MEGA_F_UNION_RING = 256 /* tensor-core attention, FP8: ring stages in the attention's space with h in bf16 / f16
                                * (the layout mega_setup picks when it gains stages), forced for tests */,
       MEGA_F_PLAIN_RING = 512 /* never that layout (A/B) */,
       MEGA_F_CB_RUNTIME = 1024 /* the instance with the stage geometry read at run time even where a
                                 * compiled-in one applies (A/B) */,
       MEGA_F_NO_TMAP = 2048    /* stages as 16 row copies into padded rows, never one tensor copy (A/B) */,
       MEGA_F_TMAP = 8192       /* one tensor copy a stage whatever a layer's bytes (where the geometry allows) */,
       MEGA_F_H16 = 16384       /* the plain layout keeps h as hi only wherever that loses no ring stage,
                                 * FP8 too, not only where the ring is shallower than MEGA_H16_BELOW (A/B,
                                 * tests) */,
       MEGA_F_NO_TAGS = 32768   /* x through the phase barriers, not as tagged words (A/B) */,
       MEGA_F_NO_TAGS_Q = 65536 /* qkv through the barrier even where x is tagged (A/B) */,
       MEGA_F_NO_AMMA = 131072  /* attn_item where FP8 groups of up to 4 heads would take the tensor-core
                                 * attention (kern_mega_amma; A/B, tests) */,
       MEGA_F_NO_TAGS_A = 262144 /* the tensor-core attention's output through the attention's barrier, not
                                  * as tagged words (A/B, tests) */,
       MEGA_F_NO_TAGS_H = 524288 /* h (in bf16) through gate/up's barrier, not as tagged words (A/B, tests) */,
       MEGA_F_AMMA_ST3 = 1048576 /* the tensor-core attention keeps MEGA_AMMA_STAGES tile buffers where every
                                  * item has one tile (A/B, tests) */ };
/* 2097152 switched off "wo clear of the attention's space" (wo's first stages passing the ring's
 * slots in the attention's space by with empty stages), removed in the 35th session: its code
 * cost more than it saved (H200, 7B ctx 512, 256 tokens: FP8 2.421 ms without it against 2.416
 * with, BF16 3.987 against 4.019; docs/PERFORMANCE_GPU.md). The bit is free and ignored. */
/* A plain layout whose ring has fewer stages than this keeps h as hi only when that deepens it
 * (21st session, H200: 7B FP8 4 → 5 stages, 2.603 → 2.579 ms a token; BF16 4 → 5, 4.162 →
 * 4.106; Small 24B FP8 2 → 3 with 41 KiB slots; BF16 2 → 4, 13.71 → 12.27). BF16 weights keep it
 * wherever it loses no stage: h's load from L2 is one round trip instead of two (Ministral 8B BF16,
 * 5 stages either way: 4.418 / 4.419 → 4.393 / 4.392 ms, 22nd session, and 4.418 → 4.390 in the
 * 21st); FP8 gained nothing there (2.878 → 2.881). */
#define MEGA_H16_BELOW 5
/* A layer's weight bytes per block from which a stage is one tensor copy: the copies stream ≈ 2 %
 * faster but stretch the round trips of the pauses between phases, so they pay off only where a
 * phase streams long (docs/PERFORMANCE_GPU.md, twentieth session). */
#define MEGA_TMAP_MIN_BYTES ((size_t)4 << 20)
#define MEGA_CB_CONST 2048      /* bytes of a row per stage that instances compile in (every Mistral shape's) */
/* The instance's CBT: 0 the geometry read at run time; MEGA_CB_CONST compiled in, a stage's 16 rows
 * bulk-copied into padded rows; MEGA_CB_TMAP compiled in, a stage one tensor copy (16 chunks of
 * 16 rows × 128 bytes, 128-byte swizzle). */
#define MEGA_CB_TMAP (MEGA_CB_CONST + 1)
#define MEGA_TMAP_CHUNK 128     /* bytes of a row in one box of the tensor copy (the swizzle's span) */
/* Groups in halves. Where wo's or down's 16-row groups do not divide over the blocks (Small 24B:
 * 320 over 128), the extra ones are dealt as halves of their column stages instead of whole: the
 * block with a group's first half streams it before its whole groups and publishes its 16 partial
 * sums; the block with the second half streams it last and adds them, in that order, before its
 * epilogue. Every block then streams 2.5 groups instead of 2 or 3. MEGA_HALF_MAX halves a matrix at
 * most (their sums' slots in the sync area). */
#define MEGA_HALF_MAX 64

/* The pitch of a stage's rows for cb bytes of a row: rows g and g + 1 on different banks. */
__host__ __device__ constexpr int mega_pitch(int cb)
{
    return cb % 128 == 0 ? cb + 64 : cb;
}
#define MEGA_CMB_SPLITS 16      /* splits the wo phase combines as it loads its input, at most */
#define MEGA_CMB_KM 2           /* 8-output f16 chunks of the attention output a consumer thread combines */
#define MEGA_CMB_TB 6           /* splits whose partial outputs a thread has in flight together */
/* Trace (kern_mega_args.trace): per block and layer MEGA_TR_N timestamps (ns, %globaltimer) —
 * consumer events TR_* in order, then the producer's time blocked on a full ring per matrix. */
enum { TR_START, TR_QKV_WAIT, TR_QKV_LOAD, TR_QKV, TR_ATT_WAIT, TR_ATT, TR_WO_WAIT, TR_WO_LOAD, TR_WO,
       TR_GU_WAIT, TR_GU_LOAD, TR_GU, TR_DOWN_WAIT, TR_DOWN_LOAD, TR_DOWN, TR_PROD, TR_ATT_ITEM = TR_PROD + 4,
       TR_SMID = TR_ATT_ITEM + 9, MEGA_TR_N };
                                                 /* TR_ATT_ITEM: attn_item's 9 steps, half 0's first item;
                                                 * TR_SMID: the SM the block runs on. Where a tagged
                                                 * input replaces a barrier, its *_WAIT event marks the
                                                 * load's start and the wait is inside *_LOAD (or, for
                                                 * qkv, in the attention items' q/k/v step) */
/* Per layer, the largest |input| of each matrix phase, as float bits (atomicMax), written by
 * the phase that produces the input so the reader needs one pass over it. */
enum { AM_QKV, AM_WO, AM_GU, AM_DOWN, AM_N };
enum { PH_QKV, PH_ATT, PH_WO, PH_GU, PH_DOWN, PH_N };

struct mega_mat {
    size_t w_off, rs_off;   /* in a layer */
    int rows, cols, row_bytes;
    int cb, pitch, nkc;     /* bytes of a row per stage, their pitch in the stage, stages per row */
    int n_groups, extra;    /* groups of MEGA_ROWS rows; n_groups % blocks */
};

struct mega_params {
    CUtensorMap tmap[MEGA_MATS];   /* tm: matrix m of every layer as (128 bytes, rows, chunks of 128 bytes, layers) */
    bool tm;                /* every stage one tensor copy (instance MEGA_CB_TMAP) */
    const uint8_t *layers;
    size_t layer_stride;
    struct mega_mat mat[MEGA_MATS];
    size_t attn_norm_off, ffn_norm_off;
    uint8_t *kv;
    size_t kv_layer_stride;
    float *x, *qkv, *att, *h;
    int *sync;              /* PH_N per layer, then n_kv per layer (attention combine), AM_N per layer, then
                             * the halves' sums (mega_half_slot), then (16-byte aligned: mega_tag_base) the
                             * tagged x, qkv, attention output and h (xt, qt, at, ht) */
    int n_layers, dim, hid, q_dim, n_kv, nb, extra_sum;
    float eps;
    int ns, slot_bytes, attn_halves, debug, flags, ahead;
    int n_out;              /* ring slots before the barriers; slots n_out .. ns - 1 lie in the union at un_off,
                             * in the attention's space (free outside the attention window) */
    bool h_hi;              /* down's input h in bf16 in global memory and f16 hi only (no lo part) in
                             * shared memory: half the bytes and half the buffer */
    bool amma;              /* attention on the tensor cores (kern_attn_mma.cuh), all consumers on one item */
    bool cb_const;          /* FP8, head_dim 128, every matrix streaming MEGA_CB_CONST bytes of a row per stage:
                             * the instance with that geometry compiled in runs (unrolled stage loop, constant
                             * offsets) */
    bool att_in_wo;         /* the wo phase combines the attention splits as it loads its input */
    size_t cmb_off;         /* its split maxima / weights in shared memory (in the union, after x hi/lo) */
    size_t ring_off, bar_off, red_off, scr_off, u_off, attn_half_bytes, xl_off, un_off;
    unsigned long long *trace;
    struct attn_params ap;
    /* last, so the instances without halves see every other field where they did before */
    int halves[MEGA_MATS];  /* matrix m's last halves[m] groups dealt in halves of nkc / 2 stages (0: none) */
    bool spl;               /* some matrix has halves: the instance with SPL runs (it alone reads halves) */
    bool kv8;               /* an FP8 KV cache: the instance with K8 runs (attn_item widens it in registers,
                             * the tensor-core attention tile by tile in shared memory) */
    int amma_st;            /* the tensor-core attention's K/V tile buffers: 2 or MEGA_AMMA_STAGES */
    /* x tagged: wo's and down's epilogues also write x as 64-bit words (tag << 32 | float bits) at
     * xt, the tag being the phase (2 l + 1 after wo, 2 l + 2 after down; the area is zeroed per
     * launch). gate/up and the next layer's qkv load the words until every tag is their phase's: no
     * barrier, no counter, no published maximum there, and their producers are not held. A reader
     * whose load feeds a group never meets a later phase's word: a row's wo word (2 l + 1) is
     * overwritten by down's (2 l + 2) only once all of h(l) is there (gate/up's barrier, or h's
     * words), so after every gate/up group's block loaded x; down's word is overwritten by the next
     * wo's only after the attention's barrier, behind every block's qkv, or, without it (tags_a),
     * after every qkv row (below). A block that streams no group of a matrix may load a later word
     * as that matrix's input, and uses none of it: such a load must publish nothing (no maximum,
     * no counter). An epilogue's residual comes from the words too: the row is its block's in that
     * phase, so no other block writes it in between. The words are relaxed stores and loads; each
     * link of these chains is a load whose value a later store depends on. */
    bool tags;
    unsigned long long *xt;
    /* qkv tagged as well: the qkv epilogue also writes its outputs as words tagged l + 1 at qt, and
     * the attention items load their rows until they carry it, with no barrier between the two
     * phases (qkv(l + 1) rewrites a row only after all of x(l)'s words from down, so after all of
     * h(l) and x from every wo(l) group, which needs the attention of layer l done: its barrier on
     * attn_item, every split's output words on the tensor cores) */
    bool tags_q;
    unsigned long long *qt;
    /* the attention's output tagged (tensor-core attention, x tagged): every split's share of the
     * combine is written as words tagged l + 1 at at, and wo's input load takes them until every one
     * carries it, with no barrier (the consumers still arrive, for the producers' holds). att(l + 1)
     * rewrites a word only after every block that streams some of wo has read att(l): an item of
     * layer l + 1 needs qkv(l + 1), so x(l)'s words from down, so all of h(l), so all of gate/up(l)'s
     * inputs, x from every wo(l) group, each written after its block loaded att(l); a block without a
     * wo group reads att for nothing. x's words stay safe where the attention's barrier had kept
     * them (above): wo(l + 1) writes them only once every item of layer l + 1 has read its q, k and
     * v, so after the barrier before the attention (every block's qkv), or, with qkv tagged too,
     * after every row of qkv, which every block streams some of (mega_setup asks that), each
     * written after its block loaded x. */
    bool tags_a;
    unsigned long long *at;
    /* h tagged (x tagged, h in bf16): gate/up's epilogue writes each h value as a 32-bit word
     * (l + 1) << 16 | bf16 bits at ht, and down's input load takes them until every one carries
     * the tag, with no barrier (the consumers still arrive, for the producers' holds). h(l + 1) is
     * written after x(l)'s words from down are all there (through wo(l + 1), the attention and qkv),
     * so after every block that streams some of down has read h(l); a block without a down group
     * reads h for nothing. A second half of a down group reads its partner's sums before its
     * epilogue writes x(l)'s words, so before the next layer's first half can write them. */
    bool tags_h;
    unsigned *ht;
};

/* The diagnostics (kern_mega_args.trace and .debug) are in the kernel only in a build with
 * BORA_MEGA_DIAG=1 (make MEGA_DIAG=1); elsewhere every branch on them is compiled out and
 * mega_setup refuses them. Behind a run-time test alone they cost the fast path registers,
 * and so spills: 7B FP8 2.341 ms a token without them against 2.417 with, BF16 3.909 against
 * 3.986, Medium 3.5 31.66 against 31.78 (35th session, H200, docs/PERFORMANCE_GPU.md). */
#ifndef BORA_MEGA_DIAG
#define BORA_MEGA_DIAG 0
#endif
#define MEGA_TRACE_P(p) (BORA_MEGA_DIAG ? (p).trace : (unsigned long long *)nullptr)
#define MEGA_DEBUG_P(p) (BORA_MEGA_DIAG ? (p).debug : 0)

__device__ __forceinline__ unsigned long long mega_now(void)
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

/* ---- the schedule both roles walk ---- */

/* The block matrix m of layer l deals its first extra group (or first half) to: the offset rotates
 * by every matrix's extra groups, so the blocks that had one more of one matrix have one fewer of
 * the next. */
__host__ __device__ __forceinline__ int mega_extra_off(const struct mega_params &p, int l, int m)
{
    int off = l * p.extra_sum;
    for (int i = 0; i < m; i++)
        off += p.mat[i].extra;
    return off % p.nb;
}

/* Groups [*start, *start + *count) of matrix m in layer l for block b: every block gets
 * n_groups / nb, and the n_groups % nb extra ones go to blocks starting at mega_extra_off. */
__host__ __device__ __forceinline__ void mega_groups(const struct mega_params &p, int l, int m, int b,
                                                     int *start, int *count)
{
    const struct mega_mat &M = p.mat[m];
    const int off = mega_extra_off(p, l, m);
    const int base = M.n_groups / p.nb, extra = M.extra;
    int before;
    if (off + extra <= p.nb)
        before = min(max(b - off, 0), extra);
    else
        before = min(b, off + extra - p.nb) + max(b - off, 0);
    const int has = ((b - off + p.nb) % p.nb) < extra;
    *start = b * base + before;
    *count = base + has;
}

/* SPL, a matrix with halves: block b's whole groups [*start, *start + *count) (n_groups / nb
 * each, no extra one), its first half's index *hf (of the last M.halves groups) or -1, its second
 * half's *hs or -1. The halves rotate as the extra groups do; with 2 × halves <= nb no block has
 * both. */
__host__ __device__ __forceinline__ void mega_halves(const struct mega_params &p, int l, int m, int b,
                                                     int *start, int *count, int *hf, int *hs)
{
    const struct mega_mat &M = p.mat[m];
    const int off = mega_extra_off(p, l, m);
    const int base = M.n_groups / p.nb, e = p.halves[m];
    const int jf = (b - off + p.nb) % p.nb, js = (b - off - e + 2 * p.nb) % p.nb;
    *start = b * base;
    *count = base;
    *hf = jf < e ? jf : -1;
    *hs = js < e ? js : -1;
}

/* SPL: block b's items of matrix m in layer l: whole groups [*g0, *g0 + *nw), halves *hf / *hs
 * (-1: none; mega_halves where the matrix has halves), *gn items in all (mega_item's i). */
__host__ __device__ __forceinline__ void mega_items(const struct mega_params &p, int l, int m, int b, int *g0,
                                                    int *nw, int *hf, int *hs, int *gn)
{
    mega_groups(p, l, m, b, g0, gn);
    *hf = *hs = -1;
    if (p.halves[m])
        mega_halves(p, l, m, b, g0, gn, hf, hs);
    *nw = *gn;
    *gn += (*hf >= 0) + (*hs >= 0);
}

/* Item i of a block with whole groups [g0, g0 + gn) and halves hf / hs (mega_halves) of a matrix
 * with e halves: group *g, column stages [*k0, *k1), *kind 0 whole, 1 a first half, 2 a second. */
__host__ __device__ __forceinline__ void mega_item(const struct mega_mat &M, int e, int g0, int gn, int hf, int hs,
                                                   int i, int *g, int *k0, int *k1, int *kind)
{
    const int first = M.n_groups - e;   /* the halved groups' first index */
    if (hf >= 0 && i == 0) {
        *g = first + hf;
        *k0 = 0;
        *k1 = M.nkc / 2;
        *kind = 1;
        return;
    }
    i -= hf >= 0;
    if (i < gn) {
        *g = g0 + i;
        *k0 = 0;
        *k1 = M.nkc;
        *kind = 0;
        return;
    }
    *g = first + hs;
    *k0 = M.nkc / 2;
    *k1 = M.nkc;
    *kind = 2;
}

/* The 16 slots of half j of matrix m (wo or down): its first half's partial sums, each a 64-bit
 * word (layer + 1) << 32 | float bits, written and read whole, so a reader never sees a sum
 * without its tag; the area is zeroed per launch and a layer's tag tells this layer's sums from an
 * earlier layer's. One area serves every layer: a layer's second halves read theirs before a
 * barrier that the next layer's first halves write after (with x tagged: the attention's for wo,
 * gate/up's for down; without, the phase's own). */
__device__ __forceinline__ unsigned long long *mega_half_slot(const struct mega_params &p, int m, int j)
{
    const size_t base = ((size_t)p.n_layers * (PH_N + p.n_kv + AM_N) + 1) & ~(size_t)1;
    return (unsigned long long *)(p.sync + base) + ((size_t)(m == MEGA_DOWN) * MEGA_HALF_MAX + j) * MEGA_ROWS;
}

__device__ __forceinline__ void mega_st_u64(unsigned long long *a, unsigned long long v)
{
    asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(a), "l"(v) : "memory");
}

__device__ __forceinline__ unsigned long long mega_ld_u64(const unsigned long long *a)
{
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(v) : "l"(a) : "memory");
    return v;
}

/* Two tagged words (16 bytes, 16-byte aligned), each read whole. */
__device__ __forceinline__ ulonglong2 mega_ld_u64x2(const unsigned long long *a)
{
    ulonglong2 v;
    asm volatile("ld.relaxed.gpu.global.v2.b64 {%0, %1}, [%2];" : "=l"(v.x), "=l"(v.y) : "l"(a) : "memory");
    return v;
}

/* Four 32-bit tagged words (16 bytes, 16-byte aligned), each read whole. */
__device__ __forceinline__ uint4 mega_ld_u32x4(const unsigned *a)
{
    uint4 v;
    asm volatile("ld.relaxed.gpu.global.v4.b32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(a)
                 : "memory");
    return v;
}

__device__ __forceinline__ bool mega_tagged(ulonglong2 v, unsigned tag)
{
    return (unsigned)(v.x >> 32) >= tag && (unsigned)(v.y >> 32) >= tag;
}

/* The tagged inputs' wait: loads v[i] again (load(i)) for every i that stale(v[i]) names, all of
 * them in flight at once, until none is. The caller fills v[i] past its input's end with a value
 * stale never names. */
template <int B, typename V, typename Stale, typename Load>
__device__ __forceinline__ void mega_poll(V (&v)[B], Stale stale, Load load)
{
    bool again;
    do {
        again = false;
#pragma unroll
        for (int i = 0; i < B; i++)
            if (stale(v[i])) {
                v[i] = load(i);
                again = true;
            }
    } while (again);
}

struct mega_ring {
    int slot, round;
};

/* Ring slot i's bytes: the first n_out before the barriers, the rest in the union's tail. mega_consume
 * computes the same from its invariants (ring_a, ring_b): a change of the layout changes both. */
__device__ __forceinline__ uint8_t *mega_slot(const struct mega_params &p, uint8_t *sm, int i)
{
    return i < p.n_out ? sm + p.ring_off + (size_t)i * p.slot_bytes
                       : sm + p.u_off + p.un_off + (size_t)(i - p.n_out) * p.slot_bytes;
}

__device__ __forceinline__ void mega_ring_next(struct mega_ring &r, int ns)
{
    if (++r.slot == ns) {
        r.slot = 0;
        r.round++;
    }
}

/* A position in the stage sequence every block walks: layer, matrix, group, column chunk. With
 * SPL: gi is the item (mega_item), gn the items, g its group, k1 its end, hf / hs the halves,
 * st the stages of the matrix so far. */
struct mega_cursor {
    int l, m, gi, kc, g0, gn;
    int g, k1, nw, hf, hs, st;   /* SPL only */
};

/* c's item gi: group, first and end stage. */
__host__ __device__ __forceinline__ void mega_cursor_item(const struct mega_params &p, struct mega_cursor &c)
{
    int kind;
    mega_item(p.mat[c.m], p.halves[c.m], c.g0, c.nw, c.hf, c.hs, c.gi, &c.g, &c.kc, &c.k1, &kind);
}

/* Moves c to the next matrix that has groups for block b (c->l == n_layers at the end). */
template <int SPL>
__host__ __device__ __forceinline__ void mega_cursor_settle(const struct mega_params &p, struct mega_cursor &c, int b)
{
    while (c.l < p.n_layers) {
        if constexpr (SPL) {
            mega_items(p, c.l, c.m, b, &c.g0, &c.nw, &c.hf, &c.hs, &c.gn);
            c.st = 0;
            if (c.gn > 0) {
                mega_cursor_item(p, c);
                return;
            }
        } else {
            mega_groups(p, c.l, c.m, b, &c.g0, &c.gn);
            if (c.gn > 0)
                return;
        }
        if (++c.m == MEGA_MATS) {
            c.m = 0;
            c.l++;
        }
    }
}

template <int SPL>
__host__ __device__ __forceinline__ void mega_cursor_next(const struct mega_params &p, struct mega_cursor &c, int b)
{
    if constexpr (SPL) {
        c.st++;
        if (++c.kc < c.k1)
            return;
        if (++c.gi < c.gn) {
            mega_cursor_item(p, c);
            return;
        }
    } else {
        if (++c.kc < p.mat[c.m].nkc)
            return;
        c.kc = 0;
        if (++c.gi < c.gn)
            return;
    }
    c.kc = 0;
    c.gi = 0;
    if (++c.m == MEGA_MATS) {
        c.m = 0;
        c.l++;
    }
    mega_cursor_settle<SPL>(p, c, b);
}

/* The producer warp: every stage of every matrix of every layer, in the consumers' order, into
 * the ring. (An L2 read-ahead of later stages with cp.async.bulk.prefetch was measured slower at
 * every distance, 64-512 KiB per SM: docs/PERFORMANCE_GPU.md.) */
template <int SPL>
__device__ void mega_produce(const struct mega_params &p, uint8_t *sm, uint64_t *full, uint64_t *empty)
{
    const int lane = threadIdx.x & 31, b = blockIdx.x;
    struct mega_ring r = { 0, 0 };
    struct mega_cursor c = {};
    const bool evict_first = !(p.flags & MEGA_F_EVICT_NORMAL);
    const uint64_t policy = kern_policy_evict_first();
    mega_cursor_settle<SPL>(p, c, b);
    unsigned long long blocked = 0;
    int tl = c.l, tm = c.m, held = -1, att_ok = -1;
    if (p.tm && lane < MEGA_MATS)
        mega_tmap_prefetch(&p.tmap[lane]);
    while (c.l < p.n_layers) {
        const struct mega_mat &M = p.mat[c.m];
        const int row0 = (SPL ? c.g : c.g0 + c.gi) * MEGA_ROWS;
        const int nr = min(MEGA_ROWS, M.rows - row0);
        const uint8_t *W = p.layers + (size_t)c.l * p.layer_stride + M.w_off;
        if (MEGA_TRACE_P(p) && (c.l != tl || c.m != tm)) {
            if (lane == 0)
                MEGA_TRACE_P(p)[((size_t)b * p.n_layers + tl) * MEGA_TR_N + TR_PROD + tm] = blocked;
            blocked = 0;
            tl = c.l;
            tm = c.m;
        }
        /* at most p.ahead stages of a matrix before the phase its consumers wait on is done
         * everywhere: blocks that finished a phase early do not take the bandwidth the last
         * ones need (the ring fills during a wait only as far as that) */
        if (p.ahead >= 0 && (SPL ? c.st : c.gi * M.nkc + c.kc) == p.ahead && held != c.l * MEGA_MATS + c.m &&
            (c.l > 0 || c.m != MEGA_QKV) && !(p.tags && (c.m == MEGA_QKV || c.m == MEGA_GU))) {   /* x tagged: no counter */
            const int ph = c.m == MEGA_QKV ? PH_DOWN : c.m == MEGA_WO ? PH_ATT : c.m == MEGA_GU ? PH_WO : PH_GU;
            const int *ctr = p.sync + (size_t)(c.m == MEGA_QKV ? c.l - 1 : c.l) * PH_N + ph;
            if (lane == 0) {
                while (mega_ld_acquire(ctr) < p.nb)
                    ;
            }
            __syncwarp();
            held = c.l * MEGA_MATS + c.m;
        }

        /* a slot in the attention's space: the attention the stage follows (this layer's past qkv,
         * else the layer before's) is over in every block, so in this one (its consumers arrive
         * after the attention's last read); the attention's writes (generic proxy) are then
         * ordered before the bulk copy's (async proxy) */
        if (r.slot >= p.n_out) {
            const int al = c.m == MEGA_QKV ? c.l - 1 : c.l;
            if (al > att_ok) {
                if (lane == 0) {
                    while (mega_ld_acquire(p.sync + (size_t)al * PH_N + PH_ATT) < p.nb)
                        ;
                }
                __syncwarp();
                asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   /* every lane that copies */
                att_ok = al;
            }
        }
        if (r.round > 0) {
            const unsigned long long t0 = MEGA_TRACE_P(p) ? mega_now() : 0;
            mbar_wait(&empty[r.slot], (uint32_t)(r.round - 1) & 1u);
            if (MEGA_TRACE_P(p))
                blocked += mega_now() - t0;
        }
        if (p.tm) {   /* one tensor copy: nr == MEGA_ROWS, M.cb == MEGA_CB_CONST (mega_setup) */
            /* the next matrix's map into the descriptor cache while this one streams, so its first
             * copy (after a phase's pause, on the critical path) does not wait for it (Medium 3.5:
             * 31.46 / 31.47 ms against 31.50 / 31.53 without) */
            if (lane == 0 && (SPL ? c.st == 0 : c.gi == 0 && c.kc == 0))
                mega_tmap_prefetch(&p.tmap[(c.m + 1) % MEGA_MATS]);
            if (lane == 0) {
                mbar_expect_tx(&full[r.slot], (uint32_t)(MEGA_ROWS * MEGA_CB_CONST));
                uint8_t *dst = mega_slot(p, sm, r.slot);
                const int z = c.kc * (MEGA_CB_CONST / MEGA_TMAP_CHUNK);
                if (evict_first)
                    mega_tensor4d_hint(dst, &p.tmap[c.m], 0, row0, z, c.l, &full[r.slot], policy);
                else
                    mega_tensor4d(dst, &p.tmap[c.m], 0, row0, z, c.l, &full[r.slot]);
            }
            __syncwarp();
        } else {
            if (lane == 0)
                mbar_expect_tx(&full[r.slot], (uint32_t)(nr * M.cb));
            __syncwarp();
            if (lane < nr) {
                uint8_t *dst = mega_slot(p, sm, r.slot) + (size_t)lane * M.pitch;
                const uint8_t *src = W + (size_t)(row0 + lane) * M.row_bytes + (size_t)c.kc * M.cb;
                if (evict_first)
                    mega_bulk_hint(dst, src, (uint32_t)M.cb, &full[r.slot], policy);
                else
                    mega_bulk(dst, src, (uint32_t)M.cb, &full[r.slot]);
            }
        }
        mega_ring_next(r, p.ns);
        mega_cursor_next<SPL>(p, c, b);
    }
    if (MEGA_TRACE_P(p) && lane == 0 && tl < p.n_layers)
        MEGA_TRACE_P(p)[((size_t)b * p.n_layers + tl) * MEGA_TR_N + TR_PROD + tm] = blocked;
}

/* ---- consumer side ---- */

__device__ __forceinline__ void mega_bar_c(void)
{
    attn_bar(MEGA_BAR_C, MEGA_CT);
}

/* Waits until *ctr reaches target (every block finished the phase), then all consumers go on. */
__device__ __forceinline__ void mega_wait(const int *ctr, int target, int tid, int debug)
{
    if (tid == 0 && !(debug & MEGA_DBG_NO_WAIT))
        while (mega_ld_acquire(ctr) < target)
            ;
    mega_bar_c();
}

/* This block's consumers are done with a phase: count it once their writes are visible. */
__device__ __forceinline__ void mega_arrive(int *ctr, int tid)
{
    mega_bar_c();
    if (tid == 0) {
        __threadfence();
        atomicAdd(ctr, 1);
    }
}

/* y as hi + lo at element c (f16 for FP8 weights, bf16 for BF16); hi only when xl is NULL. */
template <int FP8>
__device__ __forceinline__ void mega_store_hi_lo(float y, uint16_t *xh, uint16_t *xl, int c)
{
    if (FP8) {
        const __half hi = __float2half_rn(y);
        xh[c] = __half_as_ushort(hi);
        if (xl)
            xl[c] = __half_as_ushort(__float2half_rn(y - __half2float(hi)));
    } else {
        const uint16_t hi = kern_f32_to_bf16(y);
        xh[c] = hi;
        if (xl)
            xl[c] = kern_f32_to_bf16(y - kern_bf16(hi));
    }
}

/* The consumers' sum of ss and maximum of am, every consumer thread's, in each (scr: 2 ×
 * MEGA_CW floats; one consumer barrier). */
__device__ __forceinline__ void mega_block_sum_max(float &ss, float &am, float *scr, int tid)
{
    const int lane = tid & 31, w = tid >> 5;
    ss = kern_warp_sum(ss);
    am = kern_warp_max(am);
    if (lane == 0) {
        scr[w] = ss;
        scr[MEGA_CW + w] = am;
    }
    mega_bar_c();
    ss = 0.f;
    am = 0.f;
#pragma unroll
    for (int i = 0; i < MEGA_CW; i++) {
        ss += scr[i];
        am = fmaxf(am, scr[MEGA_CW + i]);
    }
}

/* The layer input (n floats, other blocks' writes: read through L2), optionally rms-normalised
 * with weights nw, scaled by 2^e so its largest magnitude lies in [2^13, 2^14), split into hi +
 * lo at xh / xl. Two passes (the largest magnitude first); layer 0's input, whose writer
 * publishes none. Returns 2^-e. */
template <int FP8>
__device__ float mega_load_vec(const float *in, int n, const float *nw, float eps, uint16_t *xh, uint16_t *xl,
                               float *scr, int tid)
{
    float ss = 0.f, am = 0.f;
    for (int c = tid; c < n; c += MEGA_CT) {
        float v = __ldcg(in + c);
        ss += v * v;
        am = fmaxf(am, fabsf(nw ? v * nw[c] : v));
    }
    mega_block_sum_max(ss, am, scr, tid);
    const float rstd = nw ? rsqrtf(ss / (float)n + eps) : 1.f;
    const float amx = am * rstd;
    const int e = kern_scale_exp(amx);
    const float sf = rstd * ldexpf(1.f, e);
    for (int c = tid; c < n; c += MEGA_CT) {
        const float v = __ldcg(in + c);
        mega_store_hi_lo<FP8>((nw ? v * nw[c] : v) * sf, xh, xl, c);
    }
    mega_bar_c();
    return ldexpf(1.f, -e);
}

/* Two values as a hi pair (round to nearest even, one conversion for both: f16 for FP8 weights,
 * bf16 for BF16) and their residuals ra, rb. */
template <int FP8>
__device__ __forceinline__ uint32_t mega_pack2(float a, float b, float *ra, float *rb)
{
    uint32_t u;
    float2 f;
    if (FP8) {
        const __half2 h = __floats2half2_rn(a, b);
        f = __half22float2(h);
        memcpy(&u, &h, 4);
    } else {
        const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        f = __bfloat1622float2(h);
        memcpy(&u, &h, 4);
    }
    *ra = a - f.x;
    *rb = b - f.y;
    return u;
}

/* Four values as hi + lo at elements 4 c4 .. 4 c4 + 3 (two 8-byte shared stores; hi only when xl
 * is NULL). */
template <int FP8>
__device__ __forceinline__ void mega_store4_hi_lo(float4 y, uint16_t *xh, uint16_t *xl, int c4)
{
    float r[4], dummy;
    const uint32_t h01 = mega_pack2<FP8>(y.x, y.y, &r[0], &r[1]);
    const uint32_t h23 = mega_pack2<FP8>(y.z, y.w, &r[2], &r[3]);
    if (!xl) {
        *(uint2 *)(xh + 4 * (size_t)c4) = make_uint2(h01, h23);
        return;
    }
    const uint32_t l01 = mega_pack2<FP8>(r[0], r[1], &dummy, &dummy);
    const uint32_t l23 = mega_pack2<FP8>(r[2], r[3], &dummy, &dummy);
    *(uint2 *)(xh + 4 * (size_t)c4) = make_uint2(h01, h23);
    *(uint2 *)(xl + 4 * (size_t)c4) = make_uint2(l01, l23);
}

/* One pass: like mega_load_vec, with the largest |input × nw| known beforehand (amax bits,
 * final once the phase that wrote the input has met its barrier); the rms norm is applied to
 * the sums instead (W (x nw rstd) = rstd W (x nw)). n is a multiple of 4. Every load of a batch
 * (the input, the norm weights, the max) is in flight at once: one round trip through L2 for
 * inputs up to B × 4 × MEGA_CT values. Returns the factor for the sums. */
template <int FP8, int NORM>
__device__ float mega_load_vec1(const float *in, int n, const float *nw, float eps, const int *amax_bits,
                                uint16_t *xh, uint16_t *xl, float *scr, int tid)
{
    constexpr int B = NORM ? 4 : 8;   /* float4s per thread and batch */
    const int lane = tid & 31, w = tid >> 5, n4 = n >> 2;
    const float4 *in4 = (const float4 *)in, *nw4 = (const float4 *)nw;
    const int amb = __ldcg(amax_bits);
    float ss = 0.f;
    for (int base = tid; base < n4; base += B * MEGA_CT) {
        float4 v[B], g[B];
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            v[i] = c < n4 ? __ldcg(in4 + c) : make_float4(0.f, 0.f, 0.f, 0.f);
            if (NORM)
                g[i] = c < n4 ? __ldg(nw4 + c) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        /* here, after the batch's loads are issued, so they do not wait for the max */
        const float sf = ldexpf(1.f, kern_scale_exp(__int_as_float(amb)));
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            if (c < n4) {
                float4 y = v[i];
                ss += y.x * y.x + y.y * y.y + y.z * y.z + y.w * y.w;
                if (NORM) {
                    y.x *= g[i].x;
                    y.y *= g[i].y;
                    y.z *= g[i].z;
                    y.w *= g[i].w;
                }
                y.x *= sf;
                y.y *= sf;
                y.z *= sf;
                y.w *= sf;
                mega_store4_hi_lo<FP8>(y, xh, xl, c);
            }
        }
    }
    const int e = kern_scale_exp(__int_as_float(amb));
    float rstd = 1.f;
    if (NORM) {
        ss = kern_warp_sum(ss);
        if (lane == 0)
            scr[w] = ss;
    }
    mega_bar_c();
    if (NORM) {
        ss = 0.f;
#pragma unroll
        for (int i = 0; i < MEGA_CW; i++)
            ss += scr[i];
        rstd = rsqrtf(ss / (float)n + eps);
    }
    return rstd * ldexpf(1.f, -e);
}

/* Two bf16 values (a word's low and high halves) × sf, as f16 (FP8 weights' MMAs) or as bf16 again
 * (BF16's; exact for a power of two in range), in the same halves: down's input as mega_load_h16
 * and mega_load_ht store it. bf16 → f32 is exact. */
template <int FP8>
__device__ __forceinline__ uint32_t mega_bf16x2_scaled(uint32_t u, float sf)
{
    const float a = __uint_as_float(u << 16) * sf, b = __uint_as_float(u & 0xffff0000u) * sf;
    uint32_t o;
    if (FP8) {
        const __half2 h = __floats2half2_rn(a, b);
        memcpy(&o, &h, 4);
    } else {
        const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        memcpy(&o, &h, 4);
    }
    return o;
}

/* Down's input with p.h_hi: h as gate/up's epilogue wrote it in bf16 (n values, a multiple of 8),
 * scaled by its published largest magnitude into [2^13, 2^14) and stored as hi only at xh (f16 for
 * FP8 weights, bf16 for BF16's):
 * half the bytes of f32 through L2, one round trip for up to 8 × 8 × MEGA_CT values (Medium 3.5's
 * 28,672). Returns the factor for the sums. */
template <int FP8>
__device__ float mega_load_h16(const uint16_t *in, int n, const int *amax_bits, uint16_t *xh, int tid)
{
    constexpr int B = 8;   /* uint4s (8 values) per thread and batch */
    const int n8 = n >> 3;
    const uint4 *in8 = (const uint4 *)in;
    const int amb = __ldcg(amax_bits);
    for (int base = tid; base < n8; base += B * MEGA_CT) {
        uint4 v[B];
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            v[i] = c < n8 ? __ldcg(in8 + c) : make_uint4(0, 0, 0, 0);
        }
        const float sf = ldexpf(1.f, kern_scale_exp(__int_as_float(amb)));
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            if (c < n8) {
                *(uint4 *)(xh + 8 * (size_t)c) =
                    make_uint4(mega_bf16x2_scaled<FP8>(v[i].x, sf), mega_bf16x2_scaled<FP8>(v[i].y, sf),
                               mega_bf16x2_scaled<FP8>(v[i].z, sf), mega_bf16x2_scaled<FP8>(v[i].w, sf));
            }
        }
    }
    mega_bar_c();
    return ldexpf(1.f, -kern_scale_exp(__int_as_float(amb)));
}

/* Down's input with p.tags_h: h as gate/up's epilogue wrote it, n words (a multiple of 8) of
 * tag << 16 | bf16 bits at ht, loaded until every one carries tag; each thread keeps its values'
 * bf16 bits at xh while it finds the largest magnitude, then, with the block's, stores them as
 * mega_load_h16 does with the published one (the same maximum: the epilogue publishes it as
 * stored), bit for bit. Returns the factor for the sums. */
template <int FP8>
__device__ float mega_load_ht(const unsigned *ht, unsigned tag, int n, uint16_t *xh, float *scr, int tid)
{
    constexpr int B = 8;   /* uint4s (4 words) per thread and batch */
    const int n4 = n >> 2;
    const unsigned tg = tag << 16;
    float am = 0.f;
    for (int base = tid; base < n4; base += B * MEGA_CT) {
        uint4 v[B];
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            v[i] = c < n4 ? mega_ld_u32x4(ht + 4 * (size_t)c) : make_uint4(~0u, ~0u, ~0u, ~0u);
        }
        mega_poll(v, [&](uint4 q) { return min(min(q.x, q.y), min(q.z, q.w)) < tg; },
                  [&](int i) { return mega_ld_u32x4(ht + 4 * (size_t)(base + i * MEGA_CT)); });
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            if (c < n4) {
                const uint32_t lo = (v[i].x & 0xffffu) | v[i].y << 16, hi = (v[i].z & 0xffffu) | v[i].w << 16;
                am = fmaxf(am, fmaxf(fmaxf(fabsf(__uint_as_float(v[i].x << 16)), fabsf(__uint_as_float(v[i].y << 16))),
                                     fmaxf(fabsf(__uint_as_float(v[i].z << 16)), fabsf(__uint_as_float(v[i].w << 16)))));
                *(uint2 *)(xh + 4 * (size_t)c) = make_uint2(lo, hi);
            }
        }
    }
    float ss = 0.f;
    mega_block_sum_max(ss, am, scr, tid);
    const int e = kern_scale_exp(am);
    const float sf = ldexpf(1.f, e);
    for (int c = tid; c < n4; c += MEGA_CT) {   /* this thread's values again, from shared memory */
        const uint2 u = *(const uint2 *)(xh + 4 * (size_t)c);
        *(uint2 *)(xh + 4 * (size_t)c) = make_uint2(mega_bf16x2_scaled<FP8>(u.x, sf), mega_bf16x2_scaled<FP8>(u.y, sf));
    }
    mega_bar_c();
    return ldexpf(1.f, -e);
}

/* A normalised layer input from tagged words (p.tags): x, n floats (a multiple of 4) as wo's or
 * down's epilogue wrote them at xt, each with the phase's tag; the words are loaded until every one
 * carries it. Each thread takes the float4s mega_load_vec1 takes, in its order: it keeps x × nw in
 * shared memory (the bits' high halves at xh, the low at xl) while it sums x² and finds the largest
 * |x × nw|, then, with the block's sums and maximum, stores x × nw × 2^e as hi + lo in place. The
 * stored values and the returned factor are mega_load_vec1's with the published maximum, bit for
 * bit. NORM 0: wo's input, the attention's output as its splits wrote it at p.at (p.tags_a), with
 * no norm (nw unused), as mega_load_vec1<FP8, 0>. */
template <int FP8, int NORM = 1>
__device__ float mega_load_xt(const unsigned long long *xt, unsigned tag, int n, const float *nw, float eps,
                              uint16_t *xh, uint16_t *xl, float *scr, int tid)
{
    constexpr int B = 4;   /* float4s per thread and batch */
    const int n4 = n >> 2;
    const float4 *nw4 = (const float4 *)nw;
    float ss = 0.f, am = 0.f;
    for (int base = tid; base < n4; base += B * MEGA_CT) {
        ulonglong2 v[2 * B];   /* float4 i's two pairs at 2i, 2i + 1 */
        float4 g[B];
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
#pragma unroll
            for (int k = 0; k < 2; k++)
                v[2 * i + k] = c < n4 ? mega_ld_u64x2(xt + 4 * (size_t)c + 2 * k) : make_ulonglong2(~0ull, ~0ull);
            g[i] = NORM && c < n4 ? __ldg(nw4 + c) : make_float4(1.f, 1.f, 1.f, 1.f);
        }
        mega_poll(v, [&](ulonglong2 q) { return !mega_tagged(q, tag); },
                  [&](int j) { return mega_ld_u64x2(xt + 4 * (size_t)(base + (j >> 1) * MEGA_CT) + 2 * (j & 1)); });
#pragma unroll
        for (int i = 0; i < B; i++) {
            const int c = base + i * MEGA_CT;
            if (c < n4) {
                float4 y = make_float4(__uint_as_float((unsigned)v[2 * i].x), __uint_as_float((unsigned)v[2 * i].y),
                                       __uint_as_float((unsigned)v[2 * i + 1].x), __uint_as_float((unsigned)v[2 * i + 1].y));
                ss += y.x * y.x + y.y * y.y + y.z * y.z + y.w * y.w;
                if (NORM) {
                    y.x *= g[i].x;
                    y.y *= g[i].y;
                    y.z *= g[i].z;
                    y.w *= g[i].w;
                }
                am = fmaxf(am, fmaxf(fmaxf(fabsf(y.x), fabsf(y.y)), fmaxf(fabsf(y.z), fabsf(y.w))));
                const unsigned u0 = __float_as_uint(y.x), u1 = __float_as_uint(y.y), u2 = __float_as_uint(y.z),
                               u3 = __float_as_uint(y.w);
                *(uint2 *)(xh + 4 * (size_t)c) = make_uint2(u0 >> 16 | (u1 & 0xffff0000u), u2 >> 16 | (u3 & 0xffff0000u));
                *(uint2 *)(xl + 4 * (size_t)c) = make_uint2((u0 & 0xffffu) | u1 << 16, (u2 & 0xffffu) | u3 << 16);
            }
        }
    }
    mega_block_sum_max(ss, am, scr, tid);
    const int e = kern_scale_exp(am);
    const float sf = ldexpf(1.f, e);
    for (int c = tid; c < n4; c += MEGA_CT) {   /* this thread's float4s again, from shared memory */
        const uint2 hi = *(const uint2 *)(xh + 4 * (size_t)c), lo = *(const uint2 *)(xl + 4 * (size_t)c);
        float4 y = make_float4(__uint_as_float(hi.x << 16 | (lo.x & 0xffffu)), __uint_as_float((hi.x & 0xffff0000u) | lo.x >> 16),
                               __uint_as_float(hi.y << 16 | (lo.y & 0xffffu)), __uint_as_float((hi.y & 0xffff0000u) | lo.y >> 16));
        y.x *= sf;
        y.y *= sf;
        y.z *= sf;
        y.w *= sf;
        mega_store4_hi_lo<FP8>(y, xh, xl, c);
    }
    mega_bar_c();
    return (NORM ? rsqrtf(ss / (float)n + eps) : 1.f) * ldexpf(1.f, -e);
}

/* wo's input when the attention items leave their splits uncombined (p.att_in_wo): every block
 * combines the ≤ MEGA_CMB_SPLITS partials itself — written by attn_item<…, COMBINE = false> as
 * f16 o / l × 2^e (kern_attn.cuh attn_part_out), half the bytes of f32 sums through L2 — the splits'
 * maxima, sums and scales with the first MEGA_CMB_TB splits' outputs in flight behind them, the
 * weights a warp per head and a lane per split, then the outputs weighted as they arrive — and
 * stores the result as hi + lo at xh / xl scaled by its largest magnitude. No last-split
 * detection, no combine by one block, no second barrier. cmb: 3 × n_heads × MEGA_CMB_SPLITS
 * floats. Returns the factor for the sums. */
template <int FP8>
__device__ float mega_load_att(const struct mega_params &p, int ne, uint16_t *xh, uint16_t *xl, float *scr,
                               float *cmb, int tid)
{
    const struct attn_params &ap = p.ap;
    const int lane = tid & 31, w = tid >> 5;
    const int H = ap.n_heads, hd = ap.hd, qd = H * hd, n8 = qd >> 3, G = H / ap.n_kv;
    const size_t pst = (size_t)H * (hd + 2);   /* floats of one split's partial */
    float *cm = cmb, *cw = cmb + H * MEGA_CMB_SPLITS, *ce = cw + H * MEGA_CMB_SPLITS;
    float mv[2], lv[2], ev[2];
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = tid + u * MEGA_CT;
        mv[u] = -INFINITY;
        lv[u] = ev[u] = 0.f;
        if (i < ne * H) {
            const float *pt = ap.part + (size_t)(i / H) * pst;
            mv[u] = __ldcg(pt + qd + i % H);
            lv[u] = __ldcg(pt + qd + H + i % H);
            ev[u] = __ldcg(pt + qd / 2 + (i % H) / G);
        }
    }
    uint4 o[MEGA_CMB_KM][MEGA_CMB_TB];
#pragma unroll
    for (int k = 0; k < MEGA_CMB_KM; k++)
#pragma unroll
        for (int t = 0; t < MEGA_CMB_TB; t++) {
            const int c = tid + k * MEGA_CT;
            o[k][t] = c < n8 && t < ne ? __ldcg((const uint4 *)(ap.part + (size_t)t * pst) + c)
                                       : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = tid + u * MEGA_CT;
        if (i < ne * H) {
            const int at = (i % H) * MEGA_CMB_SPLITS + i / H;
            cm[at] = mv[u];
            cw[at] = lv[u];
            ce[at] = ev[u];
        }
    }
    mega_bar_c();
    for (int h = w; h < H; h += MEGA_CW) {   /* a warp per head, a lane per split */
        const int at = h * MEGA_CMB_SPLITS + lane;
        const float m = lane < ne ? cm[at] : -INFINITY;
        const float l = lane < ne ? cw[at] : 0.f;
        const float wt = attn_split_weight(m, l, lane, ne);   /* of the unnormalised partial */
        if (lane < ne)
            cw[at] = wt * l * exp2f(-ce[at]);
    }
    mega_bar_c();
    float acc[MEGA_CMB_KM][8];
#pragma unroll
    for (int k = 0; k < MEGA_CMB_KM; k++)
#pragma unroll
        for (int i = 0; i < 8; i++)
            acc[k][i] = 0.f;
    for (int t0 = 0;;) {
#pragma unroll
        for (int k = 0; k < MEGA_CMB_KM; k++) {
            const int c = tid + k * MEGA_CT;
            if (c < n8) {
                const float *wr = cw + (8 * c / hd) * MEGA_CMB_SPLITS + t0;
#pragma unroll
                for (int t = 0; t < MEGA_CMB_TB; t++)
                    if (t0 + t < ne) {
                        const float f = wr[t];
                        const uint32_t u4[4] = { o[k][t].x, o[k][t].y, o[k][t].z, o[k][t].w };
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const float2 v = __half22float2(*(const __half2 *)&u4[i]);
                            acc[k][2 * i] += f * v.x;
                            acc[k][2 * i + 1] += f * v.y;
                        }
                    }
            }
        }
        t0 += MEGA_CMB_TB;
        if (t0 >= ne)
            break;
#pragma unroll
        for (int k = 0; k < MEGA_CMB_KM; k++)
#pragma unroll
            for (int t = 0; t < MEGA_CMB_TB; t++) {
                const int c = tid + k * MEGA_CT;
                o[k][t] = c < n8 && t0 + t < ne ? __ldcg((const uint4 *)(ap.part + (size_t)(t0 + t) * pst) + c)
                                                : make_uint4(0, 0, 0, 0);
            }
    }
    float am = 0.f;
#pragma unroll
    for (int k = 0; k < MEGA_CMB_KM; k++)
        if (tid + k * MEGA_CT < n8)
#pragma unroll
            for (int i = 0; i < 8; i++)
                am = fmaxf(am, fabsf(acc[k][i]));
    am = kern_warp_max(am);
    if (lane == 0)
        scr[w] = am;
    mega_bar_c();
    am = 0.f;
#pragma unroll
    for (int i = 0; i < MEGA_CW; i++)
        am = fmaxf(am, scr[i]);
    const int e = kern_scale_exp(am);
    const float sf = ldexpf(1.f, e);
#pragma unroll
    for (int k = 0; k < MEGA_CMB_KM; k++) {
        const int c = tid + k * MEGA_CT;
        if (c < n8) {
            mega_store4_hi_lo<FP8>(make_float4(acc[k][0] * sf, acc[k][1] * sf, acc[k][2] * sf, acc[k][3] * sf), xh, xl,
                                   2 * c);
            mega_store4_hi_lo<FP8>(make_float4(acc[k][4] * sf, acc[k][5] * sf, acc[k][6] * sf, acc[k][7] * sf), xh, xl,
                                   2 * c + 1);
        }
    }
    mega_bar_c();   /* xh / xl complete; scr free again */
    return ldexpf(1.f, -e);
}

/* Largest |v| over lanes 0-15 of warp 0 (the epilogue threads) into *amax. All 16 call it. */
__device__ __forceinline__ void mega_amax16(int *amax, float v, int tid)
{
    v = fabsf(v);
#pragma unroll
    for (int o = 8; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0x0000ffffu, v, o));
    if (tid == 0 && amax)
        atomicMax(amax, __float_as_int(v));
}

enum { EPI_STORE, EPI_ADD, EPI_SWIGLU };

/* One stage: 16 rows × cb bytes at sb times the vector part from column byte kc × cb. Warp w
 * takes 64-byte steps w, w + 16, ...; lane (g = lane / 4, q = lane % 4) loads 16 bytes of rows
 * g and g + 8 and the matching 16 vector elements (hi for g < 4, lo otherwise). */
template <int FP8>
__device__ __forceinline__ void mega_step(float (&c0)[4], float (&c1)[4], const uint8_t *ra, int pitch,
                                          const uint16_t *xp)
{
    const uint4 A = *(const uint4 *)ra;
    const uint4 B = *(const uint4 *)(ra + 8 * (size_t)pitch);
    const uint32_t aw[4] = { A.x, A.y, A.z, A.w }, bw[4] = { B.x, B.y, B.z, B.w };
    if (FP8) {
        const uint4 X0 = *(const uint4 *)xp, X1 = *(const uint4 *)(xp + 8);
        const uint32_t xw[8] = { X0.x, X0.y, X0.z, X0.w, X1.x, X1.y, X1.z, X1.w };
#pragma unroll
        for (int i = 0; i < 4; i++)
            mma_f16(i & 1 ? c1 : c0, mega_e4m3x2(aw[i]), mega_e4m3x2(bw[i]), mega_e4m3x2_hi(aw[i]),
                    mega_e4m3x2_hi(bw[i]), xw[2 * i], xw[2 * i + 1]);
    } else {
        const uint4 X = *(const uint4 *)xp;
        const uint32_t xw[4] = { X.x, X.y, X.z, X.w };
        mma_bf16(c0, aw[0], bw[0], aw[1], bw[1], xw[0], xw[1]);
        mma_bf16(c1, aw[2], bw[2], aw[3], bw[3], xw[2], xw[3]);
    }
}

/* The row of a tensor-copied stage that lane group g (0-7) multiplies: 0 4 1 5 2 6 3 7 (and + 8). */
__device__ __forceinline__ int mega_tm_row(int g)
{
    return (g >> 1) | ((g & 1) << 2);
}

/* One stage: 16 rows × cb bytes at sb times the vector part from column byte kc × cb. Warp w
 * takes 64-byte steps w, w + 16, ...; lane (g = lane / 4, q = lane % 4) loads 16 bytes of rows
 * g and g + 8 and the matching 16 vector elements (hi for g < 4, lo otherwise). Two
 * accumulator chains so consecutive MMAs do not wait on each other. */
template <int FP8, int CBT = 0>
__device__ __forceinline__ void mega_stage(float (&c0)[4], float (&c1)[4], const uint8_t *sb, int pitch, int cb,
                                           int kc, const uint16_t *xh, const uint16_t *xl, int w, int lane)
{
    if constexpr (CBT != 0) {   /* the geometry compiled in */
        cb = MEGA_CB_CONST;
        pitch = mega_pitch(MEGA_CB_CONST);
    }
    const int g = lane >> 2, q = lane & 3;
    const uint16_t *xv = (g < 4 ? xh : xl) + (FP8 ? (size_t)kc * cb + 16 * q : (((size_t)kc * cb) >> 1) + 8 * q);
    if constexpr (CBT == MEGA_CB_TMAP) {
        /* The tensor copy's stage: chunk z (128 bytes of every row) at z × 2 KiB, row y at y × 128
         * bytes in it, 16-byte unit u of the row at u ^ (y & 7). Lane group g takes rows
         * y = mega_tm_row(g) and y + 8 (same swizzle, 1 KiB on): the two groups of a quarter warp
         * get rows 4 apart, so their 64 bytes of a step lie in opposite halves of the banks. */
        const int y = mega_tm_row(g);
        const uint8_t *rb = sb + y * MEGA_TMAP_CHUNK;
        const int u0 = (q ^ y) * 16;
        constexpr int S = MEGA_CB_CONST >> 6, K = (S + MEGA_CW - 1) / MEGA_CW;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int st = w + k * MEGA_CW;
            if ((k + 1) * MEGA_CW <= S || st < S)
                mega_step<FP8>(c0, c1, rb + (st >> 1) * (MEGA_ROWS * MEGA_TMAP_CHUNK) + (u0 ^ ((st & 1) << 6)),
                               MEGA_TMAP_CHUNK, xv + st * 64);
        }
        return;
    }
    const uint8_t *rb = sb + (size_t)g * pitch + 16 * q;
    if constexpr (CBT != 0) {   /* every warp's steps unrolled; only the last round's is conditional */
        constexpr int S = CBT >> 6, K = (S + MEGA_CW - 1) / MEGA_CW;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int st = w + k * MEGA_CW;
            if ((k + 1) * MEGA_CW <= S || st < S)
                mega_step<FP8>(c0, c1, rb + st * 64, pitch, xv + (FP8 ? st * 64 : st * 32));
        }
    } else {
        const int steps = cb >> 6;
#pragma unroll 2
        for (int st = w; st < steps; st += MEGA_CW)
            mega_step<FP8>(c0, c1, rb + st * 64, pitch, xv + (FP8 ? st * 64 : st * 32));
    }
}

/* All of this block's groups of matrix m in layer l: consume their stages, reduce each group
 * across the warps and write it out (epi). SPL (EPI_ADD, a matrix with halves): a first half's
 * sums go to its slots instead; a second half adds them to its own (first + second) before the
 * epilogue. */
template <int FP8, int EPI, int CBT, int SPL = 0>
__device__ void mega_consume(const struct mega_params &p, int l, int m, uint8_t *sm, uint64_t *full,
                             uint64_t *empty, struct mega_ring &r, const uint16_t *xh, const uint16_t *xl,
                             float post, float *red, int &red_sel, float *out, int tid, int *amax = nullptr,
                             const float *next_nw = nullptr, unsigned long long *tw = nullptr, unsigned wtag = 0,
                             unsigned rtag = 0)
{
    /* tw: the outputs also as tagged words (p.tags), tagged wtag; rtag: the residual (EPI_ADD) read
     * from tw, where the phase before wrote it with that tag, instead of from out */
    const int lane = tid & 31, w = tid >> 5;
    const struct mega_mat &M = p.mat[m];
    const float *rs = (const float *)(p.layers + (size_t)l * p.layer_stride + M.rs_off);
    int g0, gn, hf = -1, hs = -1, nw = 0;
    constexpr bool spl = SPL && EPI == EPI_ADD;
    if constexpr (spl)
        mega_items(p, l, m, blockIdx.x, &g0, &nw, &hf, &hs, &gn);
    else
        mega_groups(p, l, m, blockIdx.x, &g0, &gn);
    /* the outputs' largest magnitude only where amax takes it: the shuffles, and for wo and down the
     * next norm's weight (a load in the epilogue's chain), are skipped where the readers take x as
     * tagged words */
    const bool want_max = amax != nullptr;
    /* loop invariants of the stage loop, read once (the parameters are otherwise reloaded per stage) */
    const bool math = !(MEGA_DEBUG_P(p) & MEGA_DBG_NO_MATH);
    const int n_out = p.n_out, ns = p.ns;
    const size_t slot_bytes = p.slot_bytes;
    uint8_t *const ring_a = sm + p.ring_off, *const ring_b = sm + p.u_off + p.un_off - (size_t)n_out * slot_bytes;
    for (int gi = 0; gi < gn; gi++) {
        int g = g0 + gi, k0 = 0, k1 = M.nkc, kind = 0;
        if constexpr (spl)
            mega_item(M, p.halves[m], g0, nw, hf, hs, gi, &g, &k0, &k1, &kind);
        const int row0 = g * MEGA_ROWS;
        /* the epilogue's inputs, loaded now so their latency hides behind the stages; a second
         * half's partner sums too (written a whole matrix's share of stages ago, so the tag is
         * almost always there; checked after the stages) */
        float rs0 = 0.f, rs1 = 0.f, res = 0.f;
        unsigned long long *hslot = nullptr;
        unsigned long long hv = 0, rv = 0;
        if (spl && kind && tid < MEGA_ROWS) {
            hslot = mega_half_slot(p, m, kind == 1 ? hf : hs) + tid;
            if (kind == 2)
                hv = mega_ld_u64(hslot);
        }
        if (tid < MEGA_ROWS && kind != 1) {
            const int rr = EPI == EPI_SWIGLU ? row0 + 2 * (tid & 7) + (tid >> 3) : row0 + tid;
            if (rr < M.rows) {
                rs0 = rs[rr];
                if (EPI == EPI_ADD) {
                    if (rtag)   /* its tag is checked in the epilogue, so the load's latency stays hidden */
                        rv = mega_ld_u64(tw + rr);
                    else
                        res = __ldcg(out + rr);   /* rows move between blocks: never a stale L1 line */
                }
            }
            if (EPI == EPI_SWIGLU && tid < MEGA_ROWS / 2 && row0 + 2 * tid + 1 < M.rows)
                rs1 = rs[row0 + 2 * tid + 1];
        }
        float c0[4] = { 0.f, 0.f, 0.f, 0.f }, c1[4] = { 0.f, 0.f, 0.f, 0.f };
        for (int kc = spl ? k0 : 0; kc < (spl ? k1 : M.nkc); kc++) {   /* (as written before the halves: same code) */
            mbar_wait(&full[r.slot], (uint32_t)r.round & 1u);
            if (math)   /* mega_slot's address from the invariants (keep the two in step) */
                mega_stage<FP8, CBT>(c0, c1, (r.slot < n_out ? ring_a : ring_b) + (size_t)r.slot * slot_bytes, M.pitch,
                                     M.cb, kc, xh, xl, w, lane);
            __syncwarp();
            if (lane == 0)
                mbar_arrive(&empty[r.slot]);
            mega_ring_next(r, ns);
        }
        /* column 0 holds W·hi, column 4 W·lo: lanes q = 0 and q = 2 */
        const float a0 = c0[0] + c1[0], a2 = c0[2] + c1[2];
        const float r0 = a0 + __shfl_xor_sync(0xffffffffu, a0, 2);
        const float r1 = a2 + __shfl_xor_sync(0xffffffffu, a2, 2);
        float *rb = red + red_sel * (MEGA_CW * MEGA_ROWS);
        red_sel ^= 1;
        if ((lane & 3) == 0) {
            const int y = CBT == MEGA_CB_TMAP ? mega_tm_row(lane >> 2) : lane >> 2;   /* the stage row */
            rb[w * MEGA_ROWS + y] = r0;
            rb[w * MEGA_ROWS + y + 8] = r1;
        }
        mega_bar_c();
        if (EPI == EPI_SWIGLU) {
            if (tid < MEGA_ROWS) {
                const int rg = row0 + 2 * tid;
                float hv = 0.f;
                if (tid < MEGA_ROWS / 2 && rg + 1 < M.rows) {
                    float sg = 0.f, su = 0.f;
#pragma unroll
                    for (int i = 0; i < MEGA_CW; i++) {
                        sg += rb[i * MEGA_ROWS + 2 * tid];
                        su += rb[i * MEGA_ROWS + 2 * tid + 1];
                    }
                    const float gv = sg * post * rs0, uv = su * post * rs1;
                    hv = gv / (1.f + __expf(-gv)) * uv;
                    if (p.h_hi) {   /* bf16 (down reads it as f16 hi only), its maximum as stored */
                        const __nv_bfloat16 hb = __float2bfloat16_rn(hv);
                        hv = __bfloat162float(hb);
                        if (p.tags_h)
                            asm volatile("st.relaxed.gpu.global.b32 [%0], %1;" ::"l"(p.ht + (rg >> 1)),
                                         "r"((unsigned)(l + 1) << 16 | __bfloat16_as_ushort(hb))
                                         : "memory");
                        else
                            ((__nv_bfloat16 *)out)[rg >> 1] = hb;
                    } else {
                        out[rg >> 1] = hv;
                    }
                }
                if (want_max)
                    mega_amax16(amax, hv, tid);
            }
        } else if (spl && kind == 1) {
            if (tid < MEGA_ROWS) {   /* a first half: its sums, tagged with the layer, for the second */
                float s = 0.f;
#pragma unroll
                for (int i = 0; i < MEGA_CW; i++)
                    s += rb[i * MEGA_ROWS + tid];
                mega_st_u64(hslot, (unsigned long long)(l + 1) << 32 | __float_as_uint(s));
            }
        } else if (tid < MEGA_ROWS) {
            const int row = row0 + tid;
            float nv = 0.f;
            if (row < M.rows) {
                float s = 0.f;
#pragma unroll
                for (int i = 0; i < MEGA_CW; i++)
                    s += rb[i * MEGA_ROWS + tid];
                if (spl && kind == 2) {   /* the first half's sums, then this half's (a later layer's tag
                                           * cannot come first, but with MEGA_DBG_NO_WAIT it may: no hang) */
                    while ((unsigned)(hv >> 32) < (unsigned)(l + 1))
                        hv = mega_ld_u64(hslot);
                    s = __uint_as_float((unsigned)hv) + s;
                }
                const float v = s * post * rs0;
                if (EPI == EPI_ADD && rtag) {
                    while ((unsigned)(rv >> 32) < rtag)
                        rv = mega_ld_u64(tw + row);
                    res = __uint_as_float((unsigned)rv);
                }
                const float y = EPI == EPI_ADD ? res + v : v;
                out[row] = y;
                if (tw)
                    mega_st_u64(tw + row, (unsigned long long)wtag << 32 | __float_as_uint(y));
                if (want_max)
                    nv = next_nw ? y * next_nw[row] : y;
            }
            if (want_max)
                mega_amax16(amax, nv, tid);
        }
    }
}

/* A phase's start: wait until every block finished the phase that writes its input (counter ctr),
 * then load the input (one pass with the published max amax unless two-pass), rms-normalised
 * with nw when NORM; trace events ev (wait done) and ev + 1 (input loaded). Returns the factor
 * for the sums. */
template <int FP8, int NORM>
__device__ __forceinline__ float mega_phase_in(const struct mega_params &p, const int *ctr, const float *in, int n,
                                               const float *nw, const int *amax, uint16_t *xh, uint16_t *xl,
                                               float *scr, int tid, unsigned long long *tr, int ev)
{
    mega_wait(ctr, p.nb, tid, MEGA_DEBUG_P(p));
    if (tr && tid == 0)
        tr[ev] = mega_now();
    const float eps = NORM ? p.eps : 0.f;
    const float post = !(p.flags & MEGA_F_TWO_PASS) ? mega_load_vec1<FP8, NORM>(in, n, nw, eps, amax, xh, xl, scr, tid)
                                                   : mega_load_vec<FP8>(in, n, nw, eps, xh, xl, scr, tid);
    if (tr && tid == 0)
        tr[ev + 1] = mega_now();
    return post;
}

template <int FP8, int GM, int LPK, int AM, int CBT, int SPL, int K8>
__global__ void __launch_bounds__(MEGA_THREADS, 1) mega_kernel(const __grid_constant__ struct mega_params p)
{
    extern __shared__ __align__(128) uint8_t sm_base[];
    /* the tensor copies' stages 1 KiB aligned (the swizzle's period; mega_setup reserved it) */
    uint8_t *sm = CBT == MEGA_CB_TMAP ? sm_base + ((0u - mega_smem(sm_base)) & 1023u) : sm_base;
    uint64_t *full = (uint64_t *)(sm + p.bar_off), *empty = full + p.ns;
    float *red = (float *)(sm + p.red_off);
    float *scr = (float *)(sm + p.scr_off);
    int *s_last = (int *)(scr + 2 * MEGA_CW);
    uint8_t *u = sm + p.u_off;
    const int tid = threadIdx.x;

    mbar_ring_init(full, empty, p.ns, MEGA_CW);
    if (tid >= MEGA_CT) {
        mega_produce<SPL>(p, sm, full, empty);
        return;
    }

    uint16_t *xh = (uint16_t *)u, *xl = (uint16_t *)(u + p.xl_off);
    const int pos = *p.ap.pos;   /* read once (written before the launch), not at every attention item */
    bool cmb = false;            /* this step's splits combined by wo's input load */
    int cmb_ne = 0;              /* and their count */
    if (p.att_in_wo) {
        int j0, j1;
        attn_slice(p.ap, pos, 0, &j0, &j1, &cmb_ne, attn_min_chunk<LPK, MEGA_AT>());
        cmb = cmb_ne <= MEGA_CMB_SPLITS;
    }
    struct mega_ring r = { 0, 0 };
    int red_sel = 0;
    const int nb = p.nb;
    for (int l = 0; l < p.n_layers; l++) {
        unsigned long long *tr = MEGA_TRACE_P(p) ? MEGA_TRACE_P(p) + ((size_t)blockIdx.x * p.n_layers + l) * MEGA_TR_N : nullptr;
#define MEGA_TR(e)                       \
    do {                                 \
        if (tr && tid == 0)              \
            tr[e] = mega_now();          \
    } while (0)
        MEGA_TR(TR_START);
        if (tr && tid == 0) {
            unsigned smid;
            asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
            tr[TR_SMID] = smid;
        }
        const uint8_t *Lb = p.layers + (size_t)l * p.layer_stride;
        int *sy = p.sync + (size_t)l * PH_N;
        uint16_t *kc = (uint16_t *)(p.kv + (size_t)l * p.kv_layer_stride);
        uint16_t *vc = (uint16_t *)(p.kv + (size_t)l * p.kv_layer_stride + p.kv_layer_stride / 2);
        int *am = p.sync + (size_t)p.n_layers * (PH_N + p.n_kv) + (size_t)l * AM_N;
        const bool one = !(p.flags & MEGA_F_TWO_PASS);
        const float *attn_nw = (const float *)(Lb + p.attn_norm_off), *ffn_nw = (const float *)(Lb + p.ffn_norm_off);
        /* qkv = W_qkv rmsnorm(x) */
        if (l > 0 && !p.tags)
            mega_wait(sy - PH_N + PH_DOWN, nb, tid, MEGA_DEBUG_P(p));
        MEGA_TR(TR_QKV_WAIT);
        float post = p.tags && l > 0 ? mega_load_xt<FP8>(p.xt, 2 * l, p.dim, attn_nw, p.eps, xh, xl, scr, tid)
                     : one && l > 0  ? mega_load_vec1<FP8, 1>(p.x, p.dim, attn_nw, p.eps, am + AM_QKV, xh, xl, scr, tid)
                                     : mega_load_vec<FP8>(p.x, p.dim, attn_nw, p.eps, xh, xl, scr, tid);
        MEGA_TR(TR_QKV_LOAD);
        const unsigned long long *const qt = p.tags_q ? p.qt : nullptr;
        mega_consume<FP8, EPI_STORE, CBT>(p, l, MEGA_QKV, sm, full, empty, r, xh, xl, post, red, red_sel, p.qkv, tid,
                                          nullptr, nullptr, p.tags_q ? p.qt : nullptr, l + 1);
        MEGA_TR(TR_QKV);
        /* attention: items (kv head, split) over the halves of every block; with qkv tagged each
         * item waits for its own rows only */
        if (!qt) {
            mega_arrive(sy + PH_QKV, tid);
            mega_wait(sy + PH_QKV, nb, tid, MEGA_DEBUG_P(p));
        }
        MEGA_TR(TR_ATT_WAIT);
        int *cnt = p.sync + (size_t)p.n_layers * PH_N + (size_t)l * p.n_kv;   /* the splits' combine counters */
        if constexpr (AM) {   /* large groups: items (kv head, split) on the tensor cores, one per block */
            /* the splits are sized for ap.blocks = nb (attn_mma_slice), so every item with work is
             * some block's first: all splits of a kv head run at once, and each combines its share
             * of the head (SHARE) once all are written */
            if (!(MEGA_DEBUG_P(p) & MEGA_DBG_NO_ATTN)) {
                /* one call, instantiated for two K/V tile buffers and for MEGA_AMMA_STAGES */
                auto item = [&](auto stages, int it) {
                    attn_mma_item<LPK * 8, 2, MEGA_CT, decltype(stages)::value, true, true, K8 != 0>(
                        p.ap, kc, vc, cnt, it % p.n_kv, it / p.n_kv, pos, u, s_last, tid, MEGA_BAR_C,
                        p.tags_a ? nullptr : am + AM_WO, tr && it < nb ? tr + TR_ATT_ITEM : nullptr, qt, l + 1,
                        p.tags_a ? p.at : nullptr, l + 1);
                };
                for (int it = blockIdx.x; it < p.n_kv * p.ap.n_split; it += nb) {
                    if (p.amma_st == 2)
                        item(std::integral_constant<int, 2>{}, it);
                    else
                        item(std::integral_constant<int, MEGA_AMMA_STAGES>{}, it);
                }
            }
        } else {
            const int half = tid / MEGA_AT;
            if (half < p.attn_halves && !(MEGA_DEBUG_P(p) & MEGA_DBG_NO_ATTN)) {
                float *as = (float *)(u + (size_t)half * p.attn_half_bytes);
                const int workers = nb * p.attn_halves;
                /* half 0 of every block first: the items the context needs spread over the SMs */
                for (int it = half * nb + blockIdx.x; it < p.n_kv * p.ap.n_split; it += workers) {
                    unsigned long long *ti = tr && it < nb ? tr + TR_ATT_ITEM : nullptr;
                    if (cmb)   /* the partials only: wo's input load combines them */
                        attn_item<GM, LPK, MEGA_AT, false, true, K8 != 0>(p.ap, kc, vc, cnt, it % p.n_kv, it / p.n_kv,
                                                                          pos, as, s_last + half, tid - half * MEGA_AT,
                                                                          MEGA_BAR_H + half, nullptr, ti, qt, l + 1);
                    else
                        attn_item<GM, LPK, MEGA_AT, true, true, K8 != 0>(p.ap, kc, vc, cnt, it % p.n_kv, it / p.n_kv,
                                                                         pos, as, s_last + half, tid - half * MEGA_AT,
                                                                         MEGA_BAR_H + half, am + AM_WO, ti, qt, l + 1);
                }
            }
        }
        MEGA_TR(TR_ATT);
        mega_arrive(sy + PH_ATT, tid);
        /* x += W_o att */
        if (!AM && cmb) {
            mega_wait(sy + PH_ATT, nb, tid, MEGA_DEBUG_P(p));
            MEGA_TR(TR_WO_WAIT);
            post = mega_load_att<FP8>(p, cmb_ne, xh, xl, scr, (float *)(u + p.cmb_off), tid);
            MEGA_TR(TR_WO_LOAD);
        } else if (AM && p.tags_a) {   /* the words, once every split has written its share */
            MEGA_TR(TR_WO_WAIT);
            post = mega_load_xt<FP8, 0>(p.at, l + 1, p.q_dim, nullptr, 0.f, xh, xl, scr, tid);
            MEGA_TR(TR_WO_LOAD);
        } else {
            post = mega_phase_in<FP8, 0>(p, sy + PH_ATT, p.att, p.q_dim, NULL, am + AM_WO, xh, xl, scr, tid, tr,
                                         TR_WO_WAIT);
        }
        unsigned long long *const xt = p.tags ? p.xt : nullptr;
        mega_consume<FP8, EPI_ADD, CBT, SPL>(p, l, MEGA_WO, sm, full, empty, r, xh, xl, post, red, red_sel, p.x,
                                             tid, p.tags ? nullptr : am + AM_GU, ffn_nw, xt, 2 * l + 1,
                                             p.tags && l > 0 ? 2 * l : 0);
        MEGA_TR(TR_WO);
        /* h = silu(gate) × up of rmsnorm(x) */
        if (p.tags) {
            MEGA_TR(TR_GU_WAIT);
            post = mega_load_xt<FP8>(p.xt, 2 * l + 1, p.dim, ffn_nw, p.eps, xh, xl, scr, tid);
            MEGA_TR(TR_GU_LOAD);
        } else {
            mega_arrive(sy + PH_WO, tid);
            post = mega_phase_in<FP8, 1>(p, sy + PH_WO, p.x, p.dim, ffn_nw, am + AM_GU, xh, xl, scr, tid, tr,
                                         TR_GU_WAIT);
        }
        mega_consume<FP8, EPI_SWIGLU, CBT>(p, l, MEGA_GU, sm, full, empty, r, xh, xl, post, red, red_sel, p.h,
                                           tid, p.tags_h ? nullptr : am + AM_DOWN);
        MEGA_TR(TR_GU);
        /* x += W_down h; h as hi only (p.h_hi): every lane's B columns take hi, so the two columns the
         * sum adds hold W·hi each and the factor halves (exact) */
        if (p.tags_h) {   /* the words, once every block has written its share of h */
            mega_arrive(sy + PH_GU, tid);
            MEGA_TR(TR_DOWN_WAIT);
            post = mega_load_ht<FP8>(p.ht, l + 1, p.hid, xh, scr, tid);
            MEGA_TR(TR_DOWN_LOAD);
        } else if (p.h_hi) {
            mega_arrive(sy + PH_GU, tid);
            mega_wait(sy + PH_GU, nb, tid, MEGA_DEBUG_P(p));
            MEGA_TR(TR_DOWN_WAIT);
            post = mega_load_h16<FP8>((const uint16_t *)p.h, p.hid, am + AM_DOWN, xh, tid);
            MEGA_TR(TR_DOWN_LOAD);
        } else {
            mega_arrive(sy + PH_GU, tid);
            post = mega_phase_in<FP8, 0>(p, sy + PH_GU, p.h, p.hid, NULL, am + AM_DOWN, xh, xl, scr, tid, tr,
                                         TR_DOWN_WAIT);
        }
        const bool last = l + 1 == p.n_layers;
        mega_consume<FP8, EPI_ADD, CBT, SPL>(p, l, MEGA_DOWN, sm, full, empty, r, xh, p.h_hi ? xh : xl,
                                             p.h_hi ? 0.5f * post : post, red, red_sel, p.x, tid,
                                             last || p.tags ? nullptr : am + AM_N + AM_QKV,
                                             last ? nullptr : (const float *)(Lb + p.layer_stride + p.attn_norm_off),
                                             xt, 2 * l + 2, p.tags ? 2 * l + 1 : 0);
        MEGA_TR(TR_DOWN);
        if (!p.tags)
            mega_arrive(sy + PH_DOWN, tid);
#undef MEGA_TR
    }
}

/* ---- host side ---- */

/* ints before the tagged inputs: the counters and maxima, then (8-byte aligned) the halves' slots
 * (mega_half_slot), rounded up to 16 bytes */
static size_t mega_tag_base(int n_layers, int n_kv)
{
    const size_t n = (((size_t)n_layers * (PH_N + (size_t)n_kv + AM_N) + 1) & ~(size_t)1) + 2 * MEGA_HALF_MAX * MEGA_ROWS * 2;
    return (n + 3) & ~(size_t)3;
}

/* qkv's rows, rounded up to even: the attention output's words after them stay 16-byte aligned */
static size_t mega_qkv_words(int n_heads, int n_kv, int head_dim)
{
    return ((size_t)(n_heads + 2 * n_kv) * (size_t)head_dim + 1) & ~(size_t)1;
}

extern "C" size_t kern_mega_sync_ints(int n_layers, int n_kv, int dim, int hidden, int n_heads, int head_dim)
{
    /* then x as dim tagged words, qkv as its rows, the attention output as n_heads × head_dim (64-bit
     * words), h as hidden 32-bit words */
    return mega_tag_base(n_layers, n_kv) + 2 * (size_t)dim + 2 * mega_qkv_words(n_heads, n_kv, head_dim) +
           2 * (size_t)n_heads * (size_t)head_dim + (size_t)hidden;
}

/* Bytes of a row per stage (0: none fits): the largest multiple of 64 up to cb_max (0: MEGA_CB_MAX)
 * that divides the row. With the default cap, a row that no chunk of MEGA_CB_MAX divides takes a
 * divisor up to MEGA_CB_WIDE instead where one exists: a stage costs a block about the same time
 * whatever its bytes, so narrow stages stream slowly, and wider slots hold fewer stages. Small
 * 24B's rows of 5,120 bytes: 2,560, not 1,280 (its gate/up 151 → 80 µs a layer, the step 10.2 →
 * 7.2 ms: docs/PERFORMANCE_GPU.md, 21st session). */
static int mega_cb(int row_bytes, int cb_max)
{
    const int cap = cb_max > 0 ? cb_max : MEGA_CB_MAX;
    int best = 0;
    for (int c = cap / 64 * 64; c >= 64 && !best; c -= 64)
        if (row_bytes % c == 0)
            best = c;
    if (cb_max <= 0 && best < MEGA_CB_MAX)
        for (int c = MEGA_CB_MAX + 64; c <= MEGA_CB_WIDE; c += 64)
            if (row_bytes % c == 0)
                return c;
    return best;
}

static int mega_hd_lpk(int hd)
{
    return hd == 16 ? 2 : hd == 32 ? 4 : hd == 64 ? 8 : hd == 128 ? 16 : 0;
}

/* A block streams at most about 1/MEGA_STREAM_SHARE of the device's read bandwidth, however few
 * stream beside it (H200: ≈ 36 GB/s; a stage costs a block about the same time whatever the
 * bandwidth left to it). Small 24B: 108 blocks 7.24 ms a token, 128 blocks 7.12 (21st session). */
#define MEGA_STREAM_SHARE 128

/* A phase ends when its most loaded block does, and with b blocks streaming together each has
 * 1/b of the bandwidth, but no more than 1/MEGA_STREAM_SHARE: the critical path of a layer's
 * matrices is Σ ⌈groups / nb⌉ × max(b, MEGA_STREAM_SHARE) × a group's bytes, b = min(nb, groups).
 * The count of at most sm_count blocks (down to 3/4 of them) that minimises it; ties go to more
 * blocks. On an H200 (132 SMs) every Mistral preset gets 128: their rows are multiples of 2,048
 * (128 groups of 16), where 132 blocks leave every phase waiting ≈ 3 % longer on the blocks that
 * have one group more (Small 24B's 5,120 rows, 320 groups, were given 108 before the floor). */
extern "C" int kern_mega_amma(const struct kern_mega_args *a)
{
    const int G = a->n_kv > 0 ? a->n_heads / a->n_kv : 0;
    /* Groups of up to 4 heads whose every row is a multiple of 2,048 elements (7B, Ministral 8B): the
     * tensor-core attention too, whose splits each combine a share of their kv head, so wo's input
     * is one short load instead of every split's partials (H200, 2026-12-01: 7B FP8 -5 % a token at
     * 512 tokens, -22 % at 4,096 where attn_item lost to the per-kernel step; Ministral 8B -6 %;
     * BF16, since qkv and the attention's output are tagged words, -0.2 % at 512 tokens and -19 to
     * -22 % at 4,096 and 16,384, where the per-kernel step had run; not Small 24B's rows of 5,120,
     * 5 % slower in FP8 and 16 % in BF16 without its halves; no sliding window, which this path has
     * not been measured with) */
    /* With an FP8 cache the same choice (its tiles widened in shared memory): 7B FP8 at 8,192 tokens
     * 2.87 ms a token against 3.81 on the per-kernel step with attn_item, Medium 3.5 32.3 ms against
     * 41.1; at 512 tokens 2.48 against attn_item's 2.44 (H200, 2026-12-02). Its FP8-cache instances
     * are head_dim 128's (mega_launch_g). */
    if (a->kv_fp8 && a->head_dim != 128)
        return 0;
    const bool g4 = (a->dtype == BORA_DT_F8_E4M3 || a->dtype == BORA_DT_BF16) && G >= 1 && G <= 4 &&
                    a->head_dim == 128 && a->window <= 0 && a->dim % MEGA_CB_CONST == 0 &&
                    (a->n_heads * a->head_dim) % MEGA_CB_CONST == 0 && a->hidden % MEGA_CB_CONST == 0 &&
                    !(a->flags & MEGA_F_NO_AMMA);
    return (G > 4 || g4 || (a->flags & MEGA_F_AMMA)) && (a->head_dim == 64 || a->head_dim == 128);
}

extern "C" int kern_mega_blocks(const struct kern_mega_args *a)
{
    const int hi = a->sm_count;
    if (hi < 1)
        return 1;
    if (a->blocks_max > 0)
        return a->blocks_max < hi ? a->blocks_max : hi;
    const int es = a->dtype == BORA_DT_F8_E4M3 ? 1 : 2;
    const long long q_dim = (long long)a->n_heads * a->head_dim, kv_dim = (long long)a->n_kv * a->head_dim;
    const long long rows[MEGA_MATS] = { q_dim + 2 * kv_dim, a->dim, 2LL * a->hidden, a->dim };
    const long long cols[MEGA_MATS] = { a->dim, q_dim, a->dim, a->hidden };
    const long long floor_share = MEGA_STREAM_SHARE < hi ? MEGA_STREAM_SHARE : hi;
    int best = hi;
    double best_cost = 0;
    for (int nb = hi; nb >= (hi * 3 + 3) / 4 && nb >= 1; nb--) {
        double cost = 0;
        for (int m = 0; m < MEGA_MATS; m++) {
            const long long groups = (rows[m] + MEGA_ROWS - 1) / MEGA_ROWS;
            const long long busy = groups < nb ? groups : nb;   /* blocks that stream this matrix */
            const long long share = busy > floor_share ? busy : floor_share;
            cost += (double)((groups + nb - 1) / nb) * share * (double)(MEGA_ROWS * cols[m] * es);
        }
        if (nb == hi || cost < best_cost) {
            best = nb;
            best_cost = cost;
        }
    }
    return best;
}

/* Fills p (everything but what the kernel instance needs) and *smem; -ENOTSUP with the reason. */
static int mega_setup(const struct kern_mega_args *a, struct mega_params *p, size_t *smem, struct bora_err *err)
{
    memset(p, 0, sizeof *p);
    if (!BORA_MEGA_DIAG && (a->debug || a->trace))
        return bora_errf(err, -EINVAL, "persistent decode: %s asked of a kernel built without its diagnostics "
                         "(build with make MEGA_DIAG=1)", a->debug ? "diagnostic switches (debug)" : "a trace");
    if (a->dtype != BORA_DT_F8_E4M3 && a->dtype != BORA_DT_BF16)
        return bora_errf(err, -ENOTSUP, "persistent decode: weights of dtype %s", bora_dtype_name(a->dtype));
    if (a->n_kv <= 0 || a->n_heads % a->n_kv || a->n_heads / a->n_kv > KERN_ATTN_MAX_GROUP)
        return bora_errf(err, -ENOTSUP, "persistent decode: %d query heads over %d kv heads", a->n_heads, a->n_kv);
    if (!mega_hd_lpk(a->head_dim) || (a->head_dim == 16 && a->n_heads / a->n_kv > 8))
        return bora_errf(err, -ENOTSUP, "persistent decode: head_dim %d (16, 32, 64 or 128)", a->head_dim);
    if (a->sm_count < 1 || a->smem_optin < 64 * 1024)
        return bora_errf(err, -ENOTSUP, "persistent decode: %d SMs, %d bytes of shared memory per block",
                         a->sm_count, a->smem_optin);
    if (a->kv_fp8 && a->head_dim != 128)   /* groups of more than 4 then take the tensor cores (kern_mega_amma) */
        return bora_errf(err, -ENOTSUP,
                         "persistent decode: an FP8 KV cache with groups of %d heads of head_dim %d (it takes "
                         "head_dim 128)", a->n_heads / a->n_kv, a->head_dim);
    p->kv8 = a->kv_fp8;
    const int es = a->dtype == BORA_DT_F8_E4M3 ? 1 : 2;
    const int q_dim = a->n_heads * a->head_dim, kv_dim = a->n_kv * a->head_dim;
    const int rows[MEGA_MATS] = { q_dim + 2 * kv_dim, a->dim, 2 * a->hidden, a->dim };
    const int cols[MEGA_MATS] = { a->dim, q_dim, a->dim, a->hidden };
    const size_t w_off[MEGA_MATS] = { a->l_qkv, a->l_wo, a->l_gu, a->l_down };
    const size_t rs_off[MEGA_MATS] = { a->l_qkv_rs, a->l_wo_rs, a->l_gu_rs, a->l_down_rs };
    p->nb = kern_mega_blocks(a);
    int slot = 0, kmax = 0;
    for (int m = 0; m < MEGA_MATS; m++) {
        struct mega_mat *M = &p->mat[m];
        M->w_off = w_off[m];
        M->rs_off = rs_off[m];
        M->rows = rows[m];
        M->cols = cols[m];
        M->row_bytes = cols[m] * es;
        M->cb = mega_cb(M->row_bytes, a->cb_max);
        if (!M->cb)
            return bora_errf(err, -ENOTSUP, "persistent decode: rows of %d bytes (a multiple of 64 needed)",
                             M->row_bytes);
        M->pitch = mega_pitch(M->cb);
        M->nkc = M->row_bytes / M->cb;
        M->n_groups = (rows[m] + MEGA_ROWS - 1) / MEGA_ROWS;
        M->extra = M->n_groups % p->nb;
        p->extra_sum += M->extra;
        if (MEGA_ROWS * M->pitch > slot)
            slot = MEGA_ROWS * M->pitch;
        if (cols[m] > kmax)
            kmax = cols[m];
    }
    if (rows[MEGA_GU] % 2)
        return bora_errf(err, -ENOTSUP, "persistent decode: odd gate/up rows");
    if (a->dim % 4 || q_dim % 4 || a->hidden % 4 || (a->l_attn_norm | a->l_ffn_norm | a->layer_stride) % 16)
        return bora_errf(err, -ENOTSUP, "persistent decode: vectors not in float4s (dim %d, q_dim %d, hidden %d)",
                         a->dim, q_dim, a->hidden);
    p->slot_bytes = (slot + 127) / 128 * 128;
    /* shared memory: ring | barriers | red | scratch | union(x hi/lo, attention halves) */
    const size_t xbytes = (size_t)kmax * 2;
    size_t xl_off = (xbytes + 127) / 128 * 128;
    const size_t xbuf = 2 * xl_off;
    const int G = a->n_heads / a->n_kv;
    const int chunk_max = attn_chunk_max(a->max_ctx, a->window, a->n_split);
    const size_t ahalf = (attn_smem_bytes(G, a->head_dim, chunk_max, a->n_split, MEGA_AT) + 127) / 128 * 128;
    size_t fixed = 2 * sizeof(float) * MEGA_CW * MEGA_ROWS + 256 + 128;   /* red, scratch, alignment */
    const size_t total = (size_t)a->smem_optin;
    /* the tensor-core attention (as kern_attention; kern_mega_amma: groups of more than 4 heads,
     * and 7B's / Ministral 8B's FP8 shapes), one item per block on every consumer warp */
    p->amma = kern_mega_amma(a);
    /* Its K/V tiles: where every split of the context holds at most one tile (AMMA_BK keys: a
     * max_ctx up to 64 × the blocks a kv head gets, 1,024 on an H200 with 8 kv heads; as
     * attn_mma_slice sizes them), a third buffer is never used, and without it one more ring stage
     * lies outside the attention's space, so the producer streams further into wo during the
     * attention (7B: all of a block's wo) */
    {
        const int keys = a->window > 0 && a->window < a->max_ctx ? a->window : a->max_ctx;
        const int tb = p->nb / a->n_kv > 1 ? p->nb / a->n_kv : 1;
        p->amma_st = p->amma && (keys + tb - 1) / tb <= AMMA_BK && !(a->flags & MEGA_F_AMMA_ST3) ? 2 : MEGA_AMMA_STAGES;
    }
    /* the instances with the geometry compiled in (mega_launch_g): head_dim 128, FP8 only (BF16
     * measured no faster with it: docs/PERFORMANCE_GPU.md, fourteenth session) */
    p->cb_const = es == 1 && a->head_dim == 128 && (p->amma || G <= 4) && !(a->flags & MEGA_F_CB_RUNTIME);
    for (int m = 0; m < MEGA_MATS; m++)
        p->cb_const = p->cb_const && p->mat[m].cb == MEGA_CB_CONST;
    /* With that geometry a stage can be one tensor copy (the 16 row copies read ≈ 2 % under the
     * ceiling, one copy reads at it: docs/PERFORMANCE_GPU.md, twentieth session) where every
     * matrix has whole groups and the maps can address the weights (16-byte aligned, strides of
     * 16 bytes), and where a layer streams long enough per block (MEGA_TMAP_MIN_BYTES); its stage
     * has no padding and needs 1 KiB alignment. */
    size_t layer_bytes = 0;
    for (int m = 0; m < MEGA_MATS; m++)
        layer_bytes += (size_t)rows[m] * (size_t)p->mat[m].row_bytes;
    p->tm = p->cb_const && !(a->flags & MEGA_F_NO_TMAP) && a->layer_stride % 16 == 0 && a->n_layers > 0 &&
            (layer_bytes / (size_t)p->nb >= MEGA_TMAP_MIN_BYTES || (a->flags & MEGA_F_TMAP));
    for (int m = 0; m < MEGA_MATS; m++)
        p->tm = p->tm && rows[m] % MEGA_ROWS == 0 && ((uintptr_t)a->layers + w_off[m]) % 16 == 0;
    if (p->tm) {
        p->slot_bytes = MEGA_ROWS * MEGA_CB_CONST;
        for (int m = 0; m < MEGA_MATS; m++)
            p->mat[m].pitch = MEGA_CB_CONST;
        fixed += 2048;   /* the base aligned to 1 KiB (≤ 1,008 bytes), the union too (≤ 896 more) */
    }
    const size_t al = p->tm ? 1024 : 128;   /* alignment of the ring's slots */
    int halves = 2;
    /* attn_item's splits combined by wo's input load: an output (f16, in 8-element chunks), and
     * maxima and sums (two a consumer thread), that fit the loader, and (checked per step) at
     * most MEGA_CMB_SPLITS splits */
    p->att_in_wo = !p->amma && q_dim <= 8 * MEGA_CMB_KM * MEGA_CT && a->head_dim % 8 == 0 &&
                   a->n_heads * MEGA_CMB_SPLITS <= 2 * MEGA_CT &&
                   !(a->flags & MEGA_F_ATT_LAST);
    const size_t xcmb = xbuf + (p->att_in_wo ? 3 * sizeof(float) * a->n_heads * MEGA_CMB_SPLITS : 0);
    size_t uni = xcmb > 2 * ahalf ? xcmb : 2 * ahalf;
    if (p->amma) {
        const size_t ab = attn_mma_smem_bytes(a->head_dim, p->amma_st, G, a->n_split, a->kv_fp8);
        halves = 1;
        uni = xbuf > ab ? xbuf : ab;
    } else if (total < fixed + uni + MEGA_MIN_RING + 16 * 16) {
        halves = 1;
        uni = xcmb > ahalf ? xcmb : ahalf;
    }
    if (total < fixed + uni + 16 * 16 + 2 * (size_t)p->slot_bytes)
        return bora_errf(err, -ENOTSUP, "persistent decode: %zu bytes of shared memory needed, %d available",
                         fixed + uni + 2 * (size_t)p->slot_bytes, a->smem_optin);
    int ns = (int)((total - fixed - uni) / ((size_t)p->slot_bytes + 16));
    if (ns > 32)
        ns = 32;
    if (a->ns_max > 0 && ns > a->ns_max)
        ns = a->ns_max < 2 ? 2 : a->ns_max;
    /* A shallow ring (Medium 3.5: h's hi + lo take 112 KiB and the attention 110, so 3 stages) gets
     * more from the attention's space: outside the attention window the union holds only the
     * layer input, so with h as f16 hi only the rest of that space holds ring slots; the producer
     * fills them only once the attention they follow is over everywhere (mega_produce). h then
     * goes through L2 in bf16, as the reference implementations compute it (FP8 weights: 2^-9
     * relative on down's input, against the weights' own 2^-4; half the bytes to write and load).
     * Medium 3.5: 3 → 5 stages. */
    int n_out = ns;
    size_t un_off = 0, cmb_off = xbuf;
    p->h_hi = false;
    /* with h as hi only (both layouts below): the inputs still kept as hi + lo are at most
     * max(dim, q_dim) values, lo at xl2; h's hi takes hb */
    const int kx = a->dim > q_dim ? a->dim : q_dim;
    const size_t xl2 = ((size_t)kx * 2 + 127) / 128 * 128, hb = ((size_t)a->hidden * 2 + 127) / 128 * 128;
    /* A plain layout (attention on attn_item) whose ring is shallow because h's hi + lo fill the
     * union (Small 24B: 32,768 hidden units, 128 KiB, so 2 stages) keeps h as hi only (f16 for
     * FP8 weights, bf16 for BF16's), in bf16 through L2, as the union ring below does: the union
     * shrinks to the larger of h's hi and the other inputs' hi + lo, and the ring takes the rest.
     * bf16 h is what the reference implementations compute; FP8 weights carry 2^-4, BF16's 2^-8. */
    const bool h16_even = (a->flags & MEGA_F_H16) || es == 2;   /* where it loses no stage */
    if (!p->amma && a->hidden % 8 == 0 && (ns < MEGA_H16_BELOW || h16_even) &&
        !(a->flags & (MEGA_F_PLAIN_RING | MEGA_F_TWO_PASS))) {
        const size_t xb2 = 2 * xl2 > hb ? 2 * xl2 : hb;
        const size_t xcmb2 = xb2 + (xcmb - xbuf);
        int halves2 = 2;
        size_t uni2 = xcmb2 > 2 * ahalf ? xcmb2 : 2 * ahalf;
        if (total < fixed + uni2 + MEGA_MIN_RING + 16 * 16) {
            halves2 = 1;
            uni2 = xcmb2 > ahalf ? xcmb2 : ahalf;
        }
        if (total >= fixed + uni2 + 16 * 16 + 2 * (size_t)p->slot_bytes) {
            int ns2 = (int)((total - fixed - uni2) / ((size_t)p->slot_bytes + 16));
            if (ns2 > 32)
                ns2 = 32;
            if (a->ns_max > 0 && ns2 > a->ns_max)
                ns2 = a->ns_max < 2 ? 2 : a->ns_max;
            if (ns2 > ns || (h16_even && ns2 == ns)) {
                ns = n_out = ns2;
                uni = uni2;
                halves = halves2;
                xl_off = xl2;
                cmb_off = xb2;
                p->h_hi = true;
            }
        }
    }
    if (p->amma && a->hidden % 8 == 0 && !(a->flags & (MEGA_F_PLAIN_RING | MEGA_F_TWO_PASS)) &&
        (ns < 5 || (a->flags & MEGA_F_UNION_RING))) {
        const bool force = a->flags & MEGA_F_UNION_RING;
        const size_t mreg = ((2 * xl2 > hb ? 2 * xl2 : hb) + al - 1) / al * al;
        const size_t ab = attn_mma_smem_bytes(a->head_dim, p->amma_st, G, a->n_split, a->kv_fp8);
        const int cap = a->ns_max > 0 ? (a->ns_max < 2 ? 2 : a->ns_max) : 32;
        int best = force ? 0 : ns, bo = 0, bu = 0;
        size_t buni = 0;
        for (int un = 1; un <= 8; un++) {
            const size_t tail = mreg + (size_t)un * p->slot_bytes, u2 = tail > ab ? tail : ab;
            if (fixed + u2 + 16 * (size_t)un > total)
                break;
            int out = (int)((total - fixed - u2 - 16 * (size_t)un) / ((size_t)p->slot_bytes + 16));
            if (out + un > cap)
                out = cap - un;
            if (out < (force ? 1 : 2) || out + un <= best)
                continue;
            best = out + un;
            bo = out;
            bu = un;
            buni = u2;
        }
        if (bu) {
            n_out = bo;
            ns = bo + bu;
            uni = buni;
            xl_off = xl2;
            un_off = mreg;
            p->h_hi = true;
        }
    }
    p->ns = ns;
    p->n_out = n_out;
    p->un_off = un_off;
    p->attn_halves = halves;
    p->ring_off = 0;
    p->bar_off = (size_t)n_out * p->slot_bytes;
    p->red_off = p->bar_off + (size_t)ns * 16;
    p->scr_off = p->red_off + 2 * sizeof(float) * MEGA_CW * MEGA_ROWS;
    p->u_off = (p->scr_off + 256 + al - 1) / al * al;
    p->xl_off = xl_off;
    p->cmb_off = cmb_off;
    p->attn_half_bytes = ahalf;
    *smem = p->u_off + uni + (p->tm ? 1024 : 0);
    if (*smem > total)
        return bora_errf(err, -ENOTSUP, "persistent decode: layout of %zu bytes over %zu", *smem, total);

    p->layers = a->layers;
    p->layer_stride = a->layer_stride;
    p->attn_norm_off = a->l_attn_norm;
    p->ffn_norm_off = a->l_ffn_norm;
    p->kv = a->kv;
    p->kv_layer_stride = a->kv_layer_stride;
    p->x = a->x;
    p->qkv = a->qkv;
    p->att = a->att;
    p->h = a->h;
    p->sync = a->sync;
    p->n_layers = a->n_layers;
    p->dim = a->dim;
    p->hid = a->hidden;
    p->q_dim = q_dim;
    p->n_kv = a->n_kv;
    p->eps = a->eps;
    p->debug = a->debug;
    p->flags = a->flags;
    /* where every input is a tagged word (the tensor-core attention) a hold is only a poll of a
     * counter that is, by then, nearly always complete: one round trip the producer waits out */
    p->ahead = a->ahead != KERN_MEGA_AHEAD_AUTO ? a->ahead : p->amma ? -1 : KERN_MEGA_AHEAD;
    p->tags = !(a->flags & (MEGA_F_NO_TAGS | MEGA_F_TWO_PASS)) && a->dim % 4 == 0;
    p->xt = a->sync ? (unsigned long long *)(a->sync + mega_tag_base(a->n_layers, a->n_kv)) : nullptr;
    /* on the tensor-core attention, qkv tagged only where every block streams some of qkv: x's words
     * are then safe from wo(l + 1) through every block's own qkv, not only through the blocks that
     * consume x (tags_a's comment); conservative, kept from the first measured form */
    p->tags_a = p->tags && p->amma && q_dim % 4 == 0 && !(a->debug & MEGA_DBG_NO_ATTN) &&
                !(a->flags & MEGA_F_NO_TAGS_A);
    /* h tagged: not with groups in halves (Small 24B, 0.4-0.5 % slower; 7B and Ministral 8B BF16 and
     * Medium 3.5 0.4-0.6 % faster, their FP8 the same: H200, 2026-12-01), turned off below where
     * they are; q_dim even keeps ht 16-byte aligned */
    p->tags_h = p->tags && p->h_hi && q_dim % 2 == 0 && !(a->flags & MEGA_F_NO_TAGS_H);
    p->tags_q = p->tags && !(a->flags & MEGA_F_NO_TAGS_Q) &&
                (!p->amma || (p->mat[MEGA_QKV].n_groups >= p->nb && !(a->debug & MEGA_DBG_NO_ATTN)));
    p->qt = a->sync ? p->xt + a->dim : nullptr;
    p->at = a->sync ? p->qt + mega_qkv_words(a->n_heads, a->n_kv, a->head_dim) : nullptr;
    p->ht = a->sync ? (unsigned *)(p->at + q_dim) : nullptr;
    p->trace = a->trace;
    struct attn_params *ap = &p->ap;
    ap->qkv = a->qkv;
    ap->out = a->att;
    ap->part = a->partial;
    ap->pos = a->d_pos;
    ap->max_ctx = a->max_ctx;
    ap->n_heads = a->n_heads;
    ap->n_kv = a->n_kv;
    ap->hd = a->head_dim;
    ap->window = a->window;
    ap->n_split = a->n_split;
    ap->chunk_max = chunk_max;
    ap->softmax_scale = 1.f / sqrtf((float)a->head_dim);
    ap->rope = a->rope;
    ap->blocks = p->nb;   /* the tensor-core items: about one per block */
    /* wo's and down's extra groups in halves where each block gets at most one half, on the
     * instance that has the code for it (mega_launch_g: attn_item, head_dim 128, the geometry read
     * at run time; so 7B's and Medium 3.5's instances do not carry it, and they need none) */
    const bool spl_ok = !p->amma && !p->cb_const && !p->tm && G <= 4 && a->head_dim == 128 &&
                        !(a->flags & MEGA_F_NO_HALVES);
    for (int m = MEGA_WO; m <= MEGA_DOWN; m += MEGA_DOWN - MEGA_WO) {
        struct mega_mat *M = &p->mat[m];
        if (spl_ok && M->extra > 0 && 2 * M->extra <= p->nb && M->extra <= MEGA_HALF_MAX && M->nkc % 2 == 0) {
            p->halves[m] = M->extra;
            p->spl = true;
        }
    }
    if (p->spl)
        p->tags_h = false;
    return 0;
}

/* p->tmap: matrix m of every layer as a 4-D uint8 tensor (128 bytes, rows, 128-byte chunks of a
 * row, layers) read in boxes of 128 × 16 × 16 × 1 with the 128-byte swizzle; 0 or the driver's error. */
static int mega_encode(const struct kern_mega_args *a, struct mega_params *p)
{
    kern_tmap_encode_fn enc = kern_tmap_encoder();
    if (!enc)
        return -1;
    for (int m = 0; m < MEGA_MATS; m++) {
        const struct mega_mat *M = &p->mat[m];
        const cuuint64_t dims[4] = { MEGA_TMAP_CHUNK, (cuuint64_t)M->rows, (cuuint64_t)M->row_bytes / MEGA_TMAP_CHUNK,
                                     (cuuint64_t)a->n_layers };
        const cuuint64_t strides[3] = { (cuuint64_t)M->row_bytes, MEGA_TMAP_CHUNK, (cuuint64_t)a->layer_stride };
        const cuuint32_t box[4] = { MEGA_TMAP_CHUNK, MEGA_ROWS, MEGA_CB_CONST / MEGA_TMAP_CHUNK, 1 };
        const cuuint32_t es[4] = { 1, 1, 1, 1 };
        /* no L2 promotion: with 256-byte promotion the same copies read 7 % slower (readbw_probe) */
        CUresult r = enc(&p->tmap[m], CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, (void *)(a->layers + M->w_off), dims, strides,
                         box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                         CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        if (r != CUDA_SUCCESS)
            return (int)r;
    }
    return 0;
}

/* mega_setup, then the tensor maps where it chose tensor copies and the weights are there
 * (a->layers); where there is no encoder or the driver refuses a map, the row copies' layout
 * (so the description the engine reports is the one that runs). */
static int mega_prepare(const struct kern_mega_args *a, struct mega_params *p, size_t *smem, struct bora_err *err)
{
    int rc = mega_setup(a, p, smem, err);
    if (rc || !p->tm || !a->layers || mega_encode(a, p) == 0)
        return rc;
    struct kern_mega_args b = *a;
    b.flags |= MEGA_F_NO_TMAP;
    return mega_setup(&b, p, smem, err);
}

/* One block's walk of the schedule as the producer (SPL's cursor) makes it: a stage each entry of
 * out (l, m, group, stage), at most cap; the count, or -1 past cap. */
template <int SPL>
static long mega_walk_producer(const struct mega_params &p, int b, int (*out)[4], long cap)
{
    struct mega_cursor c = {};
    long n = 0;
    mega_cursor_settle<SPL>(p, c, b);
    while (c.l < p.n_layers) {
        if (n == cap)
            return -1;
        out[n][0] = c.l;
        out[n][1] = c.m;
        out[n][2] = SPL ? c.g : c.g0 + c.gi;
        out[n][3] = c.kc;
        n++;
        mega_cursor_next<SPL>(p, c, b);
    }
    return n;
}

extern "C" int kern_mega_schedule_check(const struct kern_mega_args *a, struct bora_err *err)
{
    struct mega_params p;
    size_t smem;
    int rc = mega_setup(a, &p, &smem, err);
    if (rc)
        return rc;
    long per_layer = 0;
    for (int m = 0; m < MEGA_MATS; m++)
        per_layer += (long)p.mat[m].n_groups * p.mat[m].nkc;
    const long total = per_layer * p.n_layers;
    unsigned char *seen = (unsigned char *)calloc((size_t)total, 1);
    int(*walk)[4] = (int(*)[4])malloc(sizeof *walk * (size_t)(total + 1));
    if (!seen || !walk) {
        free(seen);
        free(walk);
        return bora_errf(err, -ENOMEM, "schedule check: no host memory for %ld stages", total);
    }
    rc = 0;
    for (int b = 0; b < p.nb && !rc; b++) {
        const long n = p.spl ? mega_walk_producer<1>(p, b, walk, total + 1) : mega_walk_producer<0>(p, b, walk, total + 1);
        if (n < 0)
            rc = bora_errf(err, -EPROTO, "schedule: block %d: the producer walks more than the step's %ld stages", b,
                           total);
        long i = 0;
        /* the consumers' walk, as mega_consume makes it, against the producer's */
        for (int l = 0; l < p.n_layers && !rc; l++) {
            for (int m = 0; m < MEGA_MATS && !rc; m++) {
                const struct mega_mat &M = p.mat[m];
                int g0, gn, hf = -1, hs = -1, nw = 0;
                const bool spl = p.spl && (m == MEGA_WO || m == MEGA_DOWN);
                if (spl)
                    mega_items(p, l, m, b, &g0, &nw, &hf, &hs, &gn);
                else
                    mega_groups(p, l, m, b, &g0, &gn);
                for (int gi = 0; gi < gn && !rc; gi++) {
                    int g = g0 + gi, k0 = 0, k1 = M.nkc, kind = 0;
                    if (spl)
                        mega_item(M, p.halves[m], g0, nw, hf, hs, gi, &g, &k0, &k1, &kind);
                    if ((kind == 1 && gi != 0) || (kind == 2 && gi != gn - 1))
                        rc = bora_errf(err, -EPROTO, "schedule: block %d layer %d matrix %d: a half at item %d of %d",
                                       b, l, m, gi, gn);
                    for (int kc = k0; kc < k1 && !rc; kc++, i++) {
                        if (i >= n || walk[i][0] != l || walk[i][1] != m || walk[i][2] != g || walk[i][3] != kc)
                            rc = bora_errf(err, -EPROTO, "schedule: block %d stage %ld: consumers at layer %d matrix %d "
                                           "group %d stage %d, producer %s", b, i, l, m, g, kc,
                                           i >= n ? "done" : "elsewhere");
                        else if (g < 0 || g >= M.n_groups)
                            rc = bora_errf(err, -EPROTO, "schedule: block %d: group %d of matrix %d out of range", b,
                                           g, m);
                        else {
                            long at = (long)l * per_layer;
                            for (int q = 0; q < m; q++)
                                at += (long)p.mat[q].n_groups * p.mat[q].nkc;
                            at += (long)g * M.nkc + kc;
                            if (seen[at]++)
                                rc = bora_errf(err, -EPROTO, "schedule: layer %d matrix %d group %d stage %d streamed "
                                               "twice (block %d)", l, m, g, kc, b);
                        }
                    }
                }
            }
        }
        if (!rc && i != n)
            rc = bora_errf(err, -EPROTO, "schedule: block %d: the producer streams %ld stages, the consumers take %ld",
                           b, n, i);
    }
    for (long at = 0; at < total && !rc; at++)
        if (!seen[at])
            rc = bora_errf(err, -EPROTO, "schedule: stage %ld of the step (layer %ld) streamed by no block", at,
                           at / per_layer);
    free(seen);
    free(walk);
    return rc;
}

extern "C" size_t kern_mega_trace_slots(int n_layers, int sm_count)
{
    return (size_t)n_layers * sm_count * MEGA_TR_N;
}

extern "C" int kern_mega_diag(void)
{
    return BORA_MEGA_DIAG;
}

extern "C" int kern_mega_check(const struct kern_mega_args *a, struct bora_err *err)
{
    struct mega_params p;
    size_t smem;
    return mega_setup(a, &p, &smem, err);
}

extern "C" int kern_mega_describe(const struct kern_mega_args *a, char *buf, size_t n, struct bora_err *err)
{
    struct mega_params p;
    size_t smem;
    int rc = mega_prepare(a, &p, &smem, err);
    if (rc)
        return rc;
    int k = snprintf(buf, n, "%d blocks, %zu KiB shared each, a ring of %d stages of %d KiB", p.nb, smem / 1024, p.ns,
                     p.slot_bytes / 1024);
    if (k > 0 && (size_t)k < n && p.ns > p.n_out)
        k += snprintf(buf + k, n - (size_t)k, " (%d in the attention's space; h in bf16)", p.ns - p.n_out);
    else if (k > 0 && (size_t)k < n && p.h_hi)
        k += snprintf(buf + k, n - (size_t)k, " (h in bf16)");
    if (k > 0 && (size_t)k < n && p.cb_const)
        k += snprintf(buf + k, n - (size_t)k, "; stage geometry compiled in");
    if (k > 0 && (size_t)k < n && p.tm)
        k += snprintf(buf + k, n - (size_t)k, ", one tensor copy a stage");
    if (k > 0 && (size_t)k < n && p.kv8)
        k += snprintf(buf + k, n - (size_t)k, "; FP8 KV cache");
    const int hw = p.halves[MEGA_WO], hd = p.halves[MEGA_DOWN];
    if (k > 0 && (size_t)k < n && hw && hd)
        k += snprintf(buf + k, n - (size_t)k, "; in halves: %d group%s of wo and %d of down", hw, hw == 1 ? "" : "s", hd);
    else if (k > 0 && (size_t)k < n && (hw || hd))
        k += snprintf(buf + k, n - (size_t)k, "; in halves: %d group%s of %s", hw ? hw : hd,
                      (hw ? hw : hd) == 1 ? "" : "s", hw ? "wo" : "down");
    if (k > 0 && (size_t)k < n && p.tags)
        k += snprintf(buf + k, n - (size_t)k, "; x tagged%s%s%s", p.tags_q ? ", qkv too" : "",
                      p.tags_a ? ", attention output too" : "", p.tags_h ? ", h too" : "");
    if (k > 0 && (size_t)k < n && p.amma)
        k += snprintf(buf + k, n - (size_t)k, "; %d K/V tile buffers", p.amma_st);
    if (k > 0 && (size_t)k < n) {
        if (p.ahead < 0)
            snprintf(buf + k, n - (size_t)k, "; producers never held");
        else
            snprintf(buf + k, n - (size_t)k, "; producers held %d stage%s into wo and down", p.ahead,
                     p.ahead == 1 ? "" : "s");
    }
    return 0;
}

template <int FP8, int GM, int LPK, int AM = 0, int CBT = 0, int SPL = 0, int K8 = 0>
static int mega_launch(const struct mega_params &p, size_t smem, cudaStream_t s, struct bora_err *err)
{
    auto k = mega_kernel<FP8, GM, LPK, AM, CBT, SPL, K8>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, MEGA_THREADS, smem));
    if (per_sm < 1)
        return bora_errf(err, -ENOTSUP, "persistent decode: a block (%d threads, %zu bytes) does not fit an SM",
                         MEGA_THREADS, smem);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p.nb);
    cfg.blockDim = dim3(MEGA_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative;   /* the blocks wait on each other: all resident */
    at[0].val.cooperative = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, k, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* The instance for the model's group and head size: the tensor-core attention where
 * kern_mega_amma says (groups > 4 heads of head_dim 64 / 128, the FP8 shapes it names, MEGA_F_AMMA),
 * attn_item's for the rest (mega_setup has refused
 * the shapes neither takes). */
template <int FP8>
static int mega_launch_g(const struct mega_params &p, size_t smem, cudaStream_t s, struct bora_err *err)
{
    const int G = p.ap.n_heads / p.ap.n_kv, hd = p.ap.hd;
    if (p.kv8) {   /* an FP8 KV cache, head_dim 128 (mega_setup): the tensor-core attention where it runs,
                    * else groups of up to 4 heads on attn_item */
        if constexpr (FP8) {
            if (p.tm)
                return p.amma ? mega_launch<FP8, 16, 16, 1, MEGA_CB_TMAP, 0, 1>(p, smem, s, err)
                              : mega_launch<FP8, 4, 16, 0, MEGA_CB_TMAP, 0, 1>(p, smem, s, err);
            if (p.cb_const)
                return p.amma ? mega_launch<FP8, 16, 16, 1, MEGA_CB_CONST, 0, 1>(p, smem, s, err)
                              : mega_launch<FP8, 4, 16, 0, MEGA_CB_CONST, 0, 1>(p, smem, s, err);
        }
        if (p.amma)
            return mega_launch<FP8, 16, 16, 1, 0, 0, 1>(p, smem, s, err);
        return p.spl ? mega_launch<FP8, 4, 16, 0, 0, 1, 1>(p, smem, s, err)
                     : mega_launch<FP8, 4, 16, 0, 0, 0, 1>(p, smem, s, err);
    }
    /* the Mistral shapes in FP8 (head_dim 128, 2 KiB row chunks) with their stage geometry compiled in */
    if constexpr (FP8) {
        if (p.tm)
            return p.amma ? mega_launch<FP8, 16, 16, 1, MEGA_CB_TMAP>(p, smem, s, err)
                          : mega_launch<FP8, 4, 16, 0, MEGA_CB_TMAP>(p, smem, s, err);
        if (p.cb_const)
            return p.amma ? mega_launch<FP8, 16, 16, 1, MEGA_CB_CONST>(p, smem, s, err)
                          : mega_launch<FP8, 4, 16, 0, MEGA_CB_CONST>(p, smem, s, err);
    }
    if (p.amma)
        return hd == 64 ? mega_launch<FP8, 16, 8, 1>(p, smem, s, err) : mega_launch<FP8, 16, 16, 1>(p, smem, s, err);
    if (G <= 4)
        return hd == 16 ? mega_launch<FP8, 4, 2>(p, smem, s, err)
             : hd == 32 ? mega_launch<FP8, 4, 4>(p, smem, s, err)
             : hd == 64 ? mega_launch<FP8, 4, 8>(p, smem, s, err)
                        : p.spl ? mega_launch<FP8, 4, 16, 0, 0, 1>(p, smem, s, err)
                                : mega_launch<FP8, 4, 16>(p, smem, s, err);
    if (G <= 8)   /* head_dim 16 or 32 here */
        return hd == 16 ? mega_launch<FP8, 8, 2>(p, smem, s, err) : mega_launch<FP8, 8, 4>(p, smem, s, err);
    if (hd == 32)
        return mega_launch<FP8, 16, 4>(p, smem, s, err);
    return bora_errf(err, -ENOTSUP, "persistent decode: head_dim %d with %d-head groups", hd, G);
}

extern "C" int kern_decode_layers(const struct kern_mega_args *a, struct CUstream_st *stream, struct bora_err *err)
{
    struct mega_params p;
    size_t smem;
    int rc = mega_prepare(a, &p, &smem, err);
    if (rc)
        return rc;
    cudaStream_t s = (cudaStream_t)stream;
    CUDA_CHECK(cudaMemsetAsync(a->sync, 0, kern_mega_sync_ints(a->n_layers, a->n_kv, a->dim, a->hidden, a->n_heads, a->head_dim) * sizeof(int), s));
    if (a->dtype == BORA_DT_F8_E4M3)
        return mega_launch_g<1>(p, smem, s, err);
    return mega_launch_g<0>(p, smem, s, err);
}
