/*
 * tensor/dropout.c: inverted dropout forward and backward
 * (kernels/dropout.cl) with a counter-based mask: element i is kept iff
 * mpt__u01(mpt__rng_u32(seed, stream, i)) >= p, exactly as the host rule in
 * core/rng.h, so nothing is stored between forward and backward.  Leaves
 * out a first-element offset (a shard of a larger tensor would pass its
 * global index): no caller needs one yet.
 */
#include "tensor/tensor.h"

/* Both directions apply the same map: out = in * (keep ? 1/(1-p) : 0). */
static int dropout_apply(const mpt__tensor_t *in, mpt__tensor_t *out, size_t n, float p,
                         uint64_t seed, uint64_t stream)
{
    cl_uint io, oo, un;
    int status;
    if (!(p >= 0.0f && p <= 1.0f)) /* also rejects NaN */
        return mpt__fail(MPT_ERR_INVALID, "dropout probability %g outside [0, 1]", (double)p);
    MPT_TRY(mpt__u32(n, &un));
    MPT_TRY(mpt__check_view(in, n, mpt__tensor_device(out), "dropout", "input", &io));
    MPT_TRY(mpt__check_view(out, n, mpt__tensor_device(out), "dropout", "output", &oo));
    /* The scale is rounded to float once, here, so that host references can
     * reproduce every output bit; p = 1 drops everything and divides by
     * nothing. */
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    cl_uint seed_lo = (cl_uint)seed, seed_hi = (cl_uint)(seed >> 32);
    cl_uint stream_lo = (cl_uint)stream, stream_hi = (cl_uint)(stream >> 32);
    mpt__arg_t args[] = {
        MPT_ARG(in->buf->mem), MPT_ARG(io),
        MPT_ARG(out->buf->mem), MPT_ARG(oo),
        MPT_ARG(un), MPT_ARG(p), MPT_ARG(scale),
        MPT_ARG(seed_lo), MPT_ARG(seed_hi), MPT_ARG(stream_lo), MPT_ARG(stream_hi)};
    /* One work-item per Philox block of four elements. */
    status = mpt__launch(mpt__tensor_device(out), "dropout", "mpt_dropout", (n + 3) / 4, 0,
                         (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}

int mpt__op_dropout_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n, float p,
                            uint64_t seed, uint64_t stream)
{
    return dropout_apply(x, y, n, p, seed, stream);
}

int mpt__op_dropout_backward(const mpt__tensor_t *dy, mpt__tensor_t *dx, size_t n, float p,
                             uint64_t seed, uint64_t stream)
{
    return dropout_apply(dy, dx, n, p, seed, stream);
}
