/*
 * tensor/elementwise.c: launchers of kernels/elementwise.cl: fill, bias
 * additions (dense and per channel), the per-channel bias gradient, ReLU
 * and tanh-GELU forward and backward.
 *
 * Each launcher checks what would otherwise fail silently on the device:
 * a view that does not fit its buffer, tensors of different devices,
 * counts beyond 32 bits.  It leaves out dtype dispatch (f32 only) and
 * strided views (tensors here are contiguous).
 */
#include "tensor/tensor.h"

/* Work-group size: a multiple of every warp/wavefront width (32, 64) and
 * within every device's limit for these small kernels; the global size is
 * rounded up to it and the kernels guard their index.  Leaving it to the
 * driver (local = 0) would give work-groups of 1 for a prime count. */
#define LOCAL 64


/* a * b, or MPT_ERR_RANGE when it overflows size_t. */
static int product(size_t a, size_t b, const char *op, size_t *out)
{
    if (a && b > (size_t)-1 / a)
        return mpt__fail(MPT_ERR_RANGE, "%s: %zu x %zu elements overflow", op, a, b);
    *out = a * b;
    return MPT_OK;
}

int mpt__op_fill(mpt__tensor_t *x, size_t n, float value)
{
    cl_uint xo, un;
    int status;
    if (!x || !x->buf)
        return mpt__fail(MPT_ERR_INVALID, "mpt__op_fill: tensor x is missing");
    mpt_device_t *dev = mpt__tensor_device(x);
    MPT_TRY(mpt__check_view(x, n, dev, "mpt__op_fill", "x", &xo));
    MPT_TRY(mpt__u32(n, &un));
    mpt__arg_t args[] = {MPT_ARG(x->buf->mem), MPT_ARG(xo), MPT_ARG(value), MPT_ARG(un)};
    status = mpt__launch(dev, "elementwise", "mpt_fill", n, LOCAL, 4, args);
out:
    return status;
}

int mpt__op_bias_add(mpt__tensor_t *y, const mpt__tensor_t *bias, size_t rows, size_t cols)
{
    const char *op = "mpt__op_bias_add";
    cl_uint yo, bo, ucols, utotal;
    size_t total = 0;
    int status;
    if (!y || !y->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor y is missing", op);
    mpt_device_t *dev = mpt__tensor_device(y);
    MPT_TRY(product(rows, cols, op, &total));
    MPT_TRY(mpt__check_view(y, total, dev, op, "y", &yo));
    MPT_TRY(mpt__check_view(bias, cols, dev, op, "bias", &bo));
    MPT_TRY(mpt__u32(cols, &ucols));
    MPT_TRY(mpt__u32(total, &utotal));
    mpt__arg_t args[] = {MPT_ARG(y->buf->mem),    MPT_ARG(yo),   MPT_ARG(bias->buf->mem),
                         MPT_ARG(bo),             MPT_ARG(ucols), MPT_ARG(utotal)};
    status = mpt__launch(dev, "elementwise", "mpt_bias_add", total, LOCAL, 6, args);
out:
    return status;
}

int mpt__op_bias_add_channels(mpt__tensor_t *y, const mpt__tensor_t *bias, size_t n, size_t c,
                              size_t p)
{
    const char *op = "mpt__op_bias_add_channels";
    cl_uint yo, bo, uc, up, utotal;
    size_t np = 0, total = 0;
    int status;
    if (!y || !y->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor y is missing", op);
    mpt_device_t *dev = mpt__tensor_device(y);
    MPT_TRY(product(n, p, op, &np));
    MPT_TRY(product(np, c, op, &total));
    MPT_TRY(mpt__check_view(y, total, dev, op, "y", &yo));
    MPT_TRY(mpt__check_view(bias, c, dev, op, "bias", &bo));
    MPT_TRY(mpt__u32(c, &uc));
    MPT_TRY(mpt__u32(p, &up));
    MPT_TRY(mpt__u32(total, &utotal));
    mpt__arg_t args[] = {MPT_ARG(y->buf->mem), MPT_ARG(yo), MPT_ARG(bias->buf->mem), MPT_ARG(bo),
                         MPT_ARG(uc),          MPT_ARG(up), MPT_ARG(utotal)};
    status = mpt__launch(dev, "elementwise", "mpt_bias_add_channels", total, LOCAL, 7, args);
out:
    return status;
}

int mpt__op_bias_grad_channels(const mpt__tensor_t *dy, size_t n, size_t c, size_t p, float beta,
                               mpt__tensor_t *db)
{
    const char *op = "mpt__op_bias_grad_channels";
    cl_uint dyo, dbo, un, uc, up;
    size_t np = 0, total = 0;
    int status;
    if (!db || !db->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor db is missing", op);
    mpt_device_t *dev = mpt__tensor_device(db);
    MPT_TRY(product(n, p, op, &np));
    MPT_TRY(product(np, c, op, &total));
    MPT_TRY(mpt__check_view(dy, total, dev, op, "dy", &dyo));
    MPT_TRY(mpt__check_view(db, c, dev, op, "db", &dbo));
    MPT_TRY(mpt__u32(n, &un));
    MPT_TRY(mpt__u32(c, &uc));
    MPT_TRY(mpt__u32(p, &up));
    mpt__arg_t args[] = {MPT_ARG(dy->buf->mem), MPT_ARG(dyo),  MPT_ARG(un),
                         MPT_ARG(uc),           MPT_ARG(up),   MPT_ARG(beta),
                         MPT_ARG(db->buf->mem), MPT_ARG(dbo)};
    status = mpt__launch(dev, "elementwise", "mpt_bias_grad_channels", c, LOCAL, 8, args);
out:
    return status;
}

/* y = f(x) over n elements: the launcher shared by the two forwards. */
static int unary(const char *op, const char *kernel, const mpt__tensor_t *x, mpt__tensor_t *y,
                 size_t n)
{
    cl_uint xo, yo, un;
    int status;
    if (!y || !y->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor y is missing", op);
    mpt_device_t *dev = mpt__tensor_device(y);
    MPT_TRY(mpt__check_view(x, n, dev, op, "x", &xo));
    MPT_TRY(mpt__check_view(y, n, dev, op, "y", &yo));
    MPT_TRY(mpt__u32(n, &un));
    mpt__arg_t args[] = {MPT_ARG(x->buf->mem), MPT_ARG(xo), MPT_ARG(y->buf->mem), MPT_ARG(yo),
                         MPT_ARG(un)};
    status = mpt__launch(dev, "elementwise", kernel, n, LOCAL, 5, args);
out:
    return status;
}

/* dx = dy * f'(x) over n elements: shared by the two backwards. */
static int unary_backward(const char *op, const char *kernel, const mpt__tensor_t *x,
                          const mpt__tensor_t *dy, mpt__tensor_t *dx, size_t n)
{
    cl_uint xo, dyo, dxo, un;
    int status;
    if (!dx || !dx->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor dx is missing", op);
    mpt_device_t *dev = mpt__tensor_device(dx);
    MPT_TRY(mpt__check_view(x, n, dev, op, "x", &xo));
    MPT_TRY(mpt__check_view(dy, n, dev, op, "dy", &dyo));
    MPT_TRY(mpt__check_view(dx, n, dev, op, "dx", &dxo));
    MPT_TRY(mpt__u32(n, &un));
    mpt__arg_t args[] = {MPT_ARG(x->buf->mem),  MPT_ARG(xo),  MPT_ARG(dy->buf->mem),
                         MPT_ARG(dyo),          MPT_ARG(dx->buf->mem), MPT_ARG(dxo),
                         MPT_ARG(un)};
    status = mpt__launch(dev, "elementwise", kernel, n, LOCAL, 7, args);
out:
    return status;
}

int mpt__op_activation(const char *kernel, const mpt__tensor_t *x, mpt__tensor_t *y, size_t n)
{
    return unary(kernel, kernel, x, y, n);
}

int mpt__op_activation_backward(const char *kernel, const mpt__tensor_t *x,
                                const mpt__tensor_t *dy, mpt__tensor_t *dx, size_t n)
{
    return unary_backward(kernel, kernel, x, dy, dx, n);
}

int mpt__op_relu_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n)
{
    return unary("mpt__op_relu_forward", "mpt_relu_forward", x, y, n);
}

/* As torch: dx = x <= 0 ? 0 : dy (a select; see kernels/elementwise.cl),
 * which differs from the product dy * (x > 0) only where x or dy is NaN. */
int mpt__op_relu_backward(const mpt__tensor_t *x, const mpt__tensor_t *dy, mpt__tensor_t *dx,
                          size_t n)
{
    return unary_backward("mpt__op_relu_backward", "mpt_relu_backward", x, dy, dx, n);
}

int mpt__op_gelu_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n)
{
    return unary("mpt__op_gelu_forward", "mpt_gelu_forward", x, y, n);
}

int mpt__op_gelu_backward(const mpt__tensor_t *x, const mpt__tensor_t *dy, mpt__tensor_t *dx,
                          size_t n)
{
    return unary_backward("mpt__op_gelu_backward", "mpt_gelu_backward", x, dy, dx, n);
}
