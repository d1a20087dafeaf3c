/*
 * core/rng.c: Philox4x32-10 on the host (see rng.h).
 */
#include <math.h>
#include "core/rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

void mpt__philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

uint32_t mpt__rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t block = index >> 2;
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, out[4];
    mpt__philox4x32(ctr, key, out);
    return out[index & 3];
}

void mpt__rng_uniform(uint64_t seed, uint64_t stream, uint64_t first, float bound, float *out,
                      uint64_t n)
{
    for (uint64_t j = 0; j < n; j++)
        out[j] = (2.0f * mpt__u01(mpt__rng_u32(seed, stream, first + j)) - 1.0f) * bound;
}

void mpt__rng_normal(uint64_t seed, uint64_t stream, uint64_t first, float std, float *out,
                     uint64_t n)
{
    for (uint64_t j = 0; j < n; j++) {
        /* u1 in (0, 1]: log(0) never happens. */
        double u1 = 1.0 - mpt__u01(mpt__rng_u32(seed, stream, 2 * (first + j)));
        double u2 = mpt__u01(mpt__rng_u32(seed, stream, 2 * (first + j) + 1));
        out[j] = (float)(std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}
