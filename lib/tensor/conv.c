/*
 * tensor/conv.c: 2-D convolution (cross-correlation, as
 * torch.nn.functional.conv2d) forward and backward by im2col + GEMM, all
 * through CLBlast.  Per image i of the batch:
 *   forward   col = im2col(x_i)                   (C*kh*kw) x (OH*OW)
 *             y_i = W * col                       W is K x (C*kh*kw)
 *   backward  dW  = beta * dW + dy_i * col^T      beta = beta_acc for i = 0, then 1
 *             dcol = W^T * dy_i ; dx_i = col2im(dcol)
 * The caller's workspace `col` holds one image's columns and is reused.
 *
 * CLBlastSconvgemm was tried for the forward: it passes the same tests and
 * ran at about the same speed on PoCL (N32 C16 32x32 K32 3x3: ~0.15 s
 * both), but it allocates a hidden column buffer for the whole batch on
 * every call (N times this workspace) and runs the XgemmDirect kernel,
 * which CLBlastOverrideParameters("Xgemm") tuning does not reach.
 * im2col + mpt__op_gemm keeps memory in the caller's hands, shares the
 * columns path with backward and uses the tuned Xgemm, so it stays.
 *
 * One large GEMM per pass for the whole batch (columns of all images
 * side by side, K x C*kh*kw x N*OH*OW, with layout swaps around it) was
 * tried too: on 2 PoCL cores it trained cnn-fashion at 174 samples/s
 * against 196 for this per-image loop, and needs the whole batch's
 * columns twice as workspace, so the loop stays.
 *
 * Leaves out dilation, groups, different strides or paddings per axis and
 * the bias (mpt__op_bias_add_channels).
 */
#include <clblast_c.h>

#include "tensor/tensor.h"


int mpt__conv_shape(mpt__conv_t *cv)
{
    if (cv->c == 0 || cv->h == 0 || cv->w == 0 || cv->k == 0 || cv->kh == 0 || cv->kw == 0 ||
        cv->stride == 0)
        return mpt__fail(MPT_ERR_INVALID,
                         "conv2d: zero size (C %zu, H %zu, W %zu, K %zu, kernel %zu x %zu, "
                         "stride %zu)",
                         cv->c, cv->h, cv->w, cv->k, cv->kh, cv->kw, cv->stride);
    if (cv->h + 2 * cv->pad < cv->kh || cv->w + 2 * cv->pad < cv->kw)
        return mpt__fail(MPT_ERR_INVALID,
                         "conv2d: kernel %zu x %zu does not fit the %zu x %zu input padded by %zu",
                         cv->kh, cv->kw, cv->h, cv->w, cv->pad);
    cv->oh = (cv->h + 2 * cv->pad - cv->kh) / cv->stride + 1;
    cv->ow = (cv->w + 2 * cv->pad - cv->kw) / cv->stride + 1;
    return MPT_OK;
}

size_t mpt__conv_col_floats(const mpt__conv_t *cv)
{
    mpt__conv_t s = *cv;
    if (mpt__conv_shape(&s) < 0)
        return 0;
    return s.c * s.kh * s.kw * s.oh * s.ow;
}

/* A view `off` floats further into t. */
static mpt__tensor_t at(const mpt__tensor_t *t, size_t off)
{
    mpt__tensor_t v = *t;
    v.off += off;
    return v;
}

/* Whether `floats` floats from t's offset lie inside its buffer: CLBlast's
 * im2col and col2im do not check, and the workspace size is the caller's. */
static int fits(const mpt__tensor_t *t, size_t floats, const char *what)
{
    size_t cap = t->buf->size / sizeof(float);
    if (t->off > cap || floats > cap - t->off)
        return mpt__fail(MPT_ERR_RANGE,
                         "conv2d: %s needs floats [%zu, %zu) of a buffer of %zu floats", what,
                         t->off, t->off + floats, cap);
    return MPT_OK;
}

/* Validates cv (recomputing the output size) and the tensors' extents. */
static int conv_check(const mpt__conv_t *cv, mpt__conv_t *s, const mpt__tensor_t *x,
                      const mpt__tensor_t *weight, const mpt__tensor_t *col,
                      const mpt__tensor_t *y, const char *yname)
{
    int status;
    *s = *cv;
    MPT_TRY(mpt__conv_shape(s));
    size_t patch = s->c * s->kh * s->kw, pixels = s->oh * s->ow;
    MPT_TRY(fits(x, s->n * s->c * s->h * s->w, "input"));
    MPT_TRY(fits(weight, s->k * patch, "weight"));
    MPT_TRY(fits(col, patch * pixels, "column workspace"));
    MPT_TRY(fits(y, s->n * s->k * pixels, yname));
out:
    return status;
}

static int im2col(const mpt__conv_t *s, const mpt__tensor_t *x, size_t image, mpt__tensor_t *col)
{
    mpt_device_t *dev = mpt__tensor_device(col);
    cl_event ev = NULL;
    CLBlastStatusCode r = CLBlastSim2col(
        CLBlastKernelModeCrossCorrelation, s->c, s->h, s->w, s->kh, s->kw, s->pad, s->pad,
        s->stride, s->stride, 1, 1, x->buf->mem, x->off + image * s->c * s->h * s->w,
        col->buf->mem, col->off, &dev->queue, &ev);
    return mpt__blas_done(dev, r, ev, "Sim2col");
}

int mpt__op_conv2d_forward(const mpt__conv_t *cv, const mpt__tensor_t *x,
                           const mpt__tensor_t *weight, mpt__tensor_t *col, mpt__tensor_t *y)
{
    mpt__conv_t s;
    int status;
    MPT_TRY(conv_check(cv, &s, x, weight, col, y, "output"));
    size_t patch = s.c * s.kh * s.kw, pixels = s.oh * s.ow;
    for (size_t i = 0; i < s.n; i++) {
        mpt__tensor_t yi = at(y, i * s.k * pixels);
        MPT_TRY(im2col(&s, x, i, col));
        /* y_i (K x OH*OW) = W (K x patch) * col (patch x OH*OW) */
        MPT_TRY(mpt__op_gemm(0, 0, s.k, pixels, patch, 1.0f, weight, patch, col, pixels, 0.0f,
                             &yi, pixels));
    }
out:
    return status;
}

/* Zeroes n floats of t: CLBlast's col2im adds into the image. */
static int zero(mpt__tensor_t *t, size_t n)
{
    mpt_device_t *dev = mpt__tensor_device(t);
    const float z = 0.0f;
    cl_event ev = NULL;
    if (n == 0)
        return MPT_OK;
    cl_int err = clEnqueueFillBuffer(dev->queue, t->buf->mem, &z, sizeof z, t->off * sizeof z,
                                     n * sizeof z, 0, NULL, &ev);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "zeroing %zu floats on device %d", n, dev->info.index);
    mpt__device_event(dev, ev, 0);
    return MPT_OK;
}

int mpt__op_conv2d_backward(const mpt__conv_t *cv, const mpt__tensor_t *x,
                            const mpt__tensor_t *weight, const mpt__tensor_t *dy,
                            float beta_acc, mpt__tensor_t *col, mpt__tensor_t *dweight,
                            mpt__tensor_t *dx)
{
    mpt_device_t *dev = mpt__tensor_device(col);
    mpt__conv_t s;
    int status;
    MPT_TRY(conv_check(cv, &s, x, weight, col, dy, "output gradient"));
    size_t patch = s.c * s.kh * s.kw, pixels = s.oh * s.ow, image = s.c * s.h * s.w;
    MPT_TRY(fits(dweight, s.k * patch, "weight gradient"));
    if (s.n == 0) /* no images: dW = beta_acc * dW */
        return beta_acc == 0.0f ? zero(dweight, s.k * patch)
                                : mpt__op_scale(dweight, s.k * patch, beta_acc);
    if (dx) {
        MPT_TRY(fits(dx, s.n * image, "input gradient"));
        MPT_TRY(zero(dx, s.n * image));
    }
    for (size_t i = 0; i < s.n; i++) {
        mpt__tensor_t dyi = at(dy, i * s.k * pixels);
        MPT_TRY(im2col(&s, x, i, col));
        /* dW (K x patch) = beta * dW + dy_i (K x OH*OW) * col^T (OH*OW x patch) */
        MPT_TRY(mpt__op_gemm(0, 1, s.k, patch, pixels, 1.0f, &dyi, pixels, col, pixels,
                             i == 0 ? beta_acc : 1.0f, dweight, patch));
        if (!dx)
            continue;
        /* dcol (patch x OH*OW) = W^T (patch x K) * dy_i (K x OH*OW), into the
         * workspace: the in-order queue has finished reading col by then. */
        MPT_TRY(mpt__op_gemm(1, 0, patch, pixels, s.k, 1.0f, weight, patch, &dyi, pixels, 0.0f,
                             col, pixels));
        cl_event ev = NULL;
        CLBlastStatusCode r = CLBlastScol2im(
            CLBlastKernelModeCrossCorrelation, s.c, s.h, s.w, s.kh, s.kw, s.pad, s.pad, s.stride,
            s.stride, 1, 1, col->buf->mem, col->off, dx->buf->mem, dx->off + i * image,
            &dev->queue, &ev);
        MPT_TRY(mpt__blas_done(dev, r, ev, "Scol2im"));
    }
out:
    return status;
}
