/* attn_shape.h — the decode attention item's shape arithmetic (kern_attn.cuh's attn_item), plain C
 * so that kernels/plan.c sizes the splits with the same formulas the kernels launch with. */
#ifndef BORA_KERNELS_ATTN_SHAPE_H
#define BORA_KERNELS_ATTN_SHAPE_H

#include <stdbool.h>
#include <stddef.h>

#define ATTN_MIN_CHUNK 64              /* keys per split below which fewer splits are used */
#define ATTN_ITEM_SMEM_MAX (200 * 1024) /* shared memory attention.cu gives an attn_item block */
#define ATTN_ITEM_THREADS 256          /* attention.cu's block (ATTN_THREADS) */

/* Whether kern_attention runs a group of G query heads of head_dim hd on the tensor cores
 * (kern_attn_mma.cuh: groups of more than 4 heads of 64 or 128, from a bf16 or an e4m3 cache) rather
 * than on attn_item. */
static inline bool attn_on_tensor_cores(int G, int hd)
{
    return G > 4 && (hd == 64 || hd == 128);
}

/* Shared memory (bytes) attn_item needs for NT threads: floats q G*hd | scores G*chunk_max |
 * red WARPS*G*hd | ml 2G | cm G*n_split | cw G*n_split. */
static inline size_t attn_smem_bytes(int G, int hd, int chunk_max, int n_split, int nt)
{
    return sizeof(float) * ((size_t)G * hd + (size_t)G * chunk_max + (size_t)(nt / 32) * G * hd + 2 * (size_t)G +
                            2 * (size_t)G * n_split);
}

/* Keys per split the kernel's split rule can give (the scores buffer's size). */
static inline int attn_chunk_max(int max_ctx, int window, int n_split)
{
    int len = window > 0 && window < max_ctx ? window : max_ctx;
    int c = (len + n_split - 1) / n_split;
    return c < ATTN_MIN_CHUNK ? ATTN_MIN_CHUNK : c;
}

#endif
