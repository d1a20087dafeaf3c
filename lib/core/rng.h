/*
 * core/rng.h: Philox4x32-10, the counter-based generator behind every
 * random number mpt draws (parameter init, dropout masks, data shuffles).
 * A number is a pure function of (seed, stream, index): any shard, device
 * or process computes exactly the numbers of the elements it owns.  The
 * OpenCL kernels (kernels/dropout.cl) implement the same function.
 */
#ifndef MPT_CORE_RNG_H
#define MPT_CORE_RNG_H

#include <stdint.h>

/* The uses of the generator never share a stream: the top byte of a
 * stream names the use, the rest its key within the use. */
#define MPT_RNG_INIT 1ull    /* parameter init: layer index * 16 + slot */
#define MPT_RNG_DROPOUT 2ull /* dropout masks: step << 16 | layer index */
#define MPT_RNG_SHUFFLE 3ull /* data order: epoch */
#define MPT_RNG_WINDOWS 4ull /* token windows: the batch's index */
#define MPT_RNG_STREAM(use, key) (((uint64_t)(use) << 56) | ((uint64_t)(key) & ((1ull << 56) - 1)))
#define MPT_RNG_MAX_LAYERS 65536 /* dropout keys hold the layer in 16 bits */

/* Philox4x32-10 (Salmon et al., SC'11): 4x32-bit counter, 2x32-bit key. */
void mpt__philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* 32 random bits number `index` of stream (seed, stream): counter =
 * {lo(index/4), hi(index/4), lo(stream), hi(stream)}, key = {lo(seed),
 * hi(seed)}, lane index % 4. */
uint32_t mpt__rng_u32(uint64_t seed, uint64_t stream, uint64_t index);

/* A float in [0, 1) from 32 bits: the top 24 bits times 2^-24 (exact). */
static inline float mpt__u01(uint32_t bits)
{
    return (float)(bits >> 8) * (1.0f / 16777216.0f);
}

/* Fills out[0..n) with uniform floats in [-bound, bound): element j gets
 * (2 u - 1) * bound with u from mpt__rng_u32(seed, stream, first + j). */
void mpt__rng_uniform(uint64_t seed, uint64_t stream, uint64_t first, float bound, float *out,
                      uint64_t n);
/* Fills out[0..n) with normal(0, std) floats by Box-Muller: element j
 * from the two 32-bit draws 2 (first + j) and 2 (first + j) + 1, so any
 * slice of a tensor is drawn alike wherever it is filled. */
void mpt__rng_normal(uint64_t seed, uint64_t stream, uint64_t first, float std, float *out,
                     uint64_t n);

#endif
