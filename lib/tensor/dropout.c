/*
 * tensor/dropout.c: inverted dropout forward and backward
 * (kernels/dropout.cl) with a counter-based mask: an element is kept iff
 * mpt__u01(mpt__rng_u32(seed, stream, counter)) >= p, exactly as the host
 * rule in core/rng.h, so nothing is stored between forward and backward.
 * The counter is the element's place in the whole step's activation
 * (mpt__dropout_at_t, tensor/tensor.h), so that data, pipeline and tensor
 * parallelism draw the one-device masks.
 */
#include "tensor/tensor.h"

/* Both directions apply the same map: out = in * (keep ? 1/(1-p) : 0). */
static int dropout_apply(const mpt__tensor_t *in, mpt__tensor_t *out, size_t n,
                         const mpt__dropout_at_t *at, float p, uint64_t seed, uint64_t stream)
{
    cl_uint io, oo, urows, ucols, unblk;
    int status;
    mpt__dropout_at_t whole = {0, n, n, 0};
    if (!at)
        at = &whole;
    if (!(p >= 0.0f && p <= 1.0f)) /* also rejects NaN */
        return mpt__fail(MPT_ERR_INVALID, "dropout probability %g outside [0, 1]", (double)p);
    if (n == 0)
        return MPT_OK;
    if (at->cols == 0 || n % at->cols || at->first_col > at->row ||
        at->cols > at->row - at->first_col)
        return mpt__fail(MPT_ERR_INVALID, "dropout of %zu elements as samples of %zu elements "
                         "from element %zu of %zu", n, at->cols, at->first_col, at->row);
    size_t rows = n / at->cols;
    /* Counters are 64-bit; refuse a batch whose last counter would wrap. */
    uint64_t samples_max = (UINT64_MAX >> 2) / at->row;
    if (rows > samples_max || at->first_sample > samples_max - rows)
        return mpt__fail(MPT_ERR_RANGE, "dropout counters past 2^62: sample %llu of %zu "
                         "elements", (unsigned long long)at->first_sample, at->row);
    /* Blocks of four counters a sample's run touches: exact when every
     * run starts at the same alignment (row a multiple of 4), else the
     * most any alignment needs. */
    size_t nblk = at->row % 4 == 0 ? (at->first_col % 4 + at->cols + 3) / 4 : (at->cols + 6) / 4;
    MPT_TRY(mpt__u32(n, &urows)); /* n fits, so do rows and cols */
    urows = (cl_uint)rows, ucols = (cl_uint)at->cols;
    if (nblk > UINT32_MAX / rows)
        return mpt__fail(MPT_ERR_RANGE, "dropout of %zu samples: too many work-items", rows);
    unblk = (cl_uint)nblk;
    MPT_TRY(mpt__check_view(in, n, mpt__tensor_device(out), "dropout", "input", &io));
    MPT_TRY(mpt__check_view(out, n, mpt__tensor_device(out), "dropout", "output", &oo));
    /* The scale is rounded to float once, here, so that host references can
     * reproduce every output bit; p = 1 drops everything and divides by
     * nothing. */
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    cl_ulong base0 = (cl_ulong)(at->first_sample * at->row + at->first_col), row = at->row;
    cl_uint seed_lo = (cl_uint)seed, seed_hi = (cl_uint)(seed >> 32);
    cl_uint stream_lo = (cl_uint)stream, stream_hi = (cl_uint)(stream >> 32);
    mpt__arg_t args[] = {
        MPT_ARG(in->buf->mem), MPT_ARG(io),
        MPT_ARG(out->buf->mem), MPT_ARG(oo),
        MPT_ARG(urows), MPT_ARG(ucols), MPT_ARG(unblk), MPT_ARG(base0), MPT_ARG(row),
        MPT_ARG(p), MPT_ARG(scale),
        MPT_ARG(seed_lo), MPT_ARG(seed_hi), MPT_ARG(stream_lo), MPT_ARG(stream_hi)};
    status = mpt__launch(mpt__tensor_device(out), "dropout", "mpt_dropout", rows * nblk, 0,
                         (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}

int mpt__op_dropout_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n,
                            const mpt__dropout_at_t *at, float p, uint64_t seed,
                            uint64_t stream)
{
    return dropout_apply(x, y, n, at, p, seed, stream);
}

int mpt__op_dropout_backward(const mpt__tensor_t *dy, mpt__tensor_t *dx, size_t n,
                             const mpt__dropout_at_t *at, float p, uint64_t seed,
                             uint64_t stream)
{
    return dropout_apply(dy, dx, n, at, p, seed, stream);
}
