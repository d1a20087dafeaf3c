/*
 * tensor/pool.c: 2-D max pooling forward and backward (kernels/pool.cl),
 * as torch.nn.MaxPool2d(kernel_size=k, stride=s, padding=pad) with
 * dilation 1 and ceil_mode=False.  Leaves out average pooling, dilation
 * and ceil mode.
 */
#include "tensor/tensor.h"

/* Work-group size (as elementwise.c: within every device's limit; the
 * driver's own choice, local = 0, can be groups of one for a prime count,
 * which PoCL runs several times slower). */
#define LOCAL 64

typedef struct {
    cl_uint planes, h, w, oh, ow, k, s, pad;
} pool_args_t;

/* Validates the shape as PyTorch does and fills the kernel arguments. */
static int pool_shape(size_t n, size_t c, size_t h, size_t w, size_t k, size_t s, size_t pad,
                      pool_args_t *a)
{
    int status;
    if (k == 0 || s == 0 || h == 0 || w == 0)
        return mpt__fail(MPT_ERR_INVALID,
                         "max pooling of a %zu x %zu input with kernel %zu, stride %zu", h, w, k,
                         s);
    /* PyTorch's rule; it also guarantees that every window holds a real
     * element, so that padding can never be the maximum. */
    if (2 * pad > k)
        return mpt__fail(MPT_ERR_INVALID,
                         "max pooling padding %zu exceeds half the kernel size %zu", pad, k);
    if (h + 2 * pad < k || w + 2 * pad < k)
        return mpt__fail(MPT_ERR_INVALID,
                         "max pooling window %zu does not fit a %zu x %zu input padded by %zu", k,
                         h, w, pad);
    size_t oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
    if (h * w > (1u << 24))
        return mpt__fail(MPT_ERR_RANGE,
                         "max pooling plane of %zu x %zu: argmax floats are exact below 2^24", h,
                         w);
    if (n * c > 0xffffffffu / (h * w) || n * c > 0xffffffffu / (oh * ow))
        return mpt__fail(MPT_ERR_RANGE, "max pooling of %zu x %zu x %zu x %zu exceeds 2^32", n,
                         c, h, w);
    MPT_TRY(mpt__u32(n * c, &a->planes));
    a->h = (cl_uint)h, a->w = (cl_uint)w, a->oh = (cl_uint)oh, a->ow = (cl_uint)ow;
    a->k = (cl_uint)k, a->s = (cl_uint)s, a->pad = (cl_uint)pad;
out:
    return status;
}

int mpt__op_maxpool_forward(const mpt__tensor_t *x, size_t n, size_t c, size_t h, size_t w,
                            size_t k, size_t s, size_t pad, mpt__tensor_t *y,
                            mpt__tensor_t *argmax)
{
    pool_args_t a;
    cl_uint xo, yo, ao;
    int status;
    MPT_TRY(pool_shape(n, c, h, w, k, s, pad, &a));
    size_t in_n = (size_t)a.planes * a.h * a.w, out_n = (size_t)a.planes * a.oh * a.ow;
    mpt_device_t *dev = mpt__tensor_device(y);
    MPT_TRY(mpt__check_view(x, in_n, dev, "maxpool", "x", &xo));
    MPT_TRY(mpt__check_view(y, out_n, dev, "maxpool", "y", &yo));
    MPT_TRY(mpt__check_view(argmax, out_n, dev, "maxpool", "argmax", &ao));
    mpt__arg_t args[] = {
        MPT_ARG(x->buf->mem), MPT_ARG(xo),
        MPT_ARG(y->buf->mem), MPT_ARG(yo),
        MPT_ARG(argmax->buf->mem), MPT_ARG(ao),
        MPT_ARG(a.planes), MPT_ARG(a.h), MPT_ARG(a.w), MPT_ARG(a.oh), MPT_ARG(a.ow),
        MPT_ARG(a.k), MPT_ARG(a.s), MPT_ARG(a.pad)};
    status = mpt__launch(dev, "pool", "mpt_maxpool_forward", (size_t)a.planes * a.oh, /* rows */
                         LOCAL, (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}

int mpt__op_maxpool_backward(const mpt__tensor_t *dy, const mpt__tensor_t *argmax, size_t n,
                             size_t c, size_t h, size_t w, size_t k, size_t s, size_t pad,
                             mpt__tensor_t *dx)
{
    pool_args_t a;
    cl_uint dyo, ao, dxo;
    int status;
    MPT_TRY(pool_shape(n, c, h, w, k, s, pad, &a));
    size_t in_n = (size_t)a.planes * a.h * a.w, out_n = (size_t)a.planes * a.oh * a.ow;
    mpt_device_t *dev = mpt__tensor_device(dx);
    MPT_TRY(mpt__check_view(dy, out_n, dev, "maxpool backward", "dy", &dyo));
    MPT_TRY(mpt__check_view(argmax, out_n, dev, "maxpool backward", "argmax", &ao));
    MPT_TRY(mpt__check_view(dx, in_n, dev, "maxpool backward", "dx", &dxo));
    /* The work-item of each input row writes all of it: no separate
     * zeroing pass is needed. */
    mpt__arg_t args[] = {
        MPT_ARG(dy->buf->mem), MPT_ARG(dyo),
        MPT_ARG(argmax->buf->mem), MPT_ARG(ao),
        MPT_ARG(dx->buf->mem), MPT_ARG(dxo),
        MPT_ARG(a.planes), MPT_ARG(a.h), MPT_ARG(a.w), MPT_ARG(a.oh), MPT_ARG(a.ow),
        MPT_ARG(a.k), MPT_ARG(a.s), MPT_ARG(a.pad)};
    status = mpt__launch(dev, "pool", "mpt_maxpool_backward", (size_t)a.planes * a.h, /* rows */
                         LOCAL, (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}
