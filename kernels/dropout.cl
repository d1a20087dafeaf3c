/*
 * kernels/dropout.cl: inverted dropout whose mask is a pure function of
 * (seed, stream, counter), so backward regenerates it and any replica,
 * micro-batch or tensor-parallel slice reproduces the elements it holds.
 * Valid OpenCL C 1.2 alone.
 *
 * The generator is Philox4x32-10 exactly as lib/core/rng.c: counter c
 * uses lane c % 4 of the block with counter {lo(c/4), hi(c/4), lo(stream),
 * hi(stream)} and key {lo(seed), hi(seed)}; u = (bits >> 8) * 2^-24 and
 * the element is kept iff u >= p.
 *
 * The tensor is `rows` samples of `cols` elements; its sample r draws the
 * counters [base0 + r * row, base0 + r * row + cols) (the host computes
 * base0 from the sample's and the slice's place in the whole batch,
 * tensor/dropout.c).  One work-item draws one block of four counters of
 * one sample and serves those of its elements that fall in the run;
 * `nblk` work-items per sample cover the run whatever its alignment.
 */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static uint4 philox4x32_10(uint4 c, uint2 key)
{
    uint k0 = key.s0, k1 = key.s1;
    for (int round = 0; round < 10; round++) {
        /* The 32x32 -> 64-bit products as (mul_hi, low 32 bits). */
        uint hi0 = mul_hi(PHILOX_M0, c.s0), lo0 = PHILOX_M0 * c.s0;
        uint hi1 = mul_hi(PHILOX_M1, c.s2), lo1 = PHILOX_M1 * c.s2;
        c = (uint4)(hi1 ^ c.s1 ^ k0, lo1, hi0 ^ c.s3 ^ k1, lo0);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return c;
}

/* out[i] = in[i] * (keep(i) ? scale : 0) for i < rows * cols; forward
 * (x -> y) and backward (dy -> dx) are the same map.  Multiplying by 0
 * rather than writing 0 keeps NaN visible, as PyTorch's x * mask does.
 * scale = 1 / (1 - p) comes from the host (0 when p = 1). */
__kernel void mpt_dropout(__global const float *in, uint io, __global float *out, uint oo,
                          uint rows, uint cols, uint nblk, ulong base0, ulong row, float p,
                          float scale, uint seed_lo, uint seed_hi, uint stream_lo,
                          uint stream_hi)
{
    uint gid = get_global_id(0);
    if (gid >= rows * nblk) /* the host checked that rows * nblk fits */
        return;
    uint r = gid / nblk;
    ulong base = base0 + (ulong)r * row; /* counter of the sample's first element here */
    ulong block = (base >> 2) + gid % nblk;
    uint4 bits = philox4x32_10((uint4)((uint)block, (uint)(block >> 32), stream_lo, stream_hi),
                               (uint2)(seed_lo, seed_hi));
    uint lanes[4] = {bits.s0, bits.s1, bits.s2, bits.s3};
    for (uint lane = 0; lane < 4; lane++) {
        ulong c = block * 4u + lane;
        if (c < base)
            continue; /* the previous sample's (or another slice's) counter */
        if (c - base >= cols)
            return;
        uint i = r * cols + (uint)(c - base);
        float u = (float)(lanes[lane] >> 8) * (1.0f / 16777216.0f);
        out[oo + i] = in[io + i] * (u >= p ? scale : 0.0f);
    }
}
