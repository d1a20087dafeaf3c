/*
 * tensor/conv.c: 2-D convolution (cross-correlation, as
 * torch.nn.functional.conv2d) forward and backward by im2col + GEMM over
 * chunks of B images (kernels/conv.cl for the layout changes, the device's
 * GEMM provider for the GEMMs, device/gemm.h).  P = OH*OW, patch = C*kh*kw;
 * per chunk:
 *   forward   col = im2col(x_chunk)                 patch x (B*P)
 *             t   = W * col                         K x (B*P), W is K x patch
 *             y_chunk = to_images(t) + bias         B x K x P
 *   backward  col = im2col(x_chunk); t = from_images(dy_chunk)
 *             dW  = beta * dW + t * col^T           beta = beta_acc first, then 1
 *             col = W^T * t ; dx_chunk = col2im(col)
 * so a step runs three GEMMs per layer and chunk instead of three per
 * image.  With B = 1 the K x P output of one image is already
 * in the tensor layout: the GEMMs read dy and write y in place and the
 * layout kernels are skipped (the per-image path).
 *
 * Chunk size, measured with a throwaway harness timing forward + backward
 * of cnn-fashion's two layers at batch 128 (one PoCL device on 2 cores of
 * an AMD EPYC, a loaded machine, best of 2-4 runs, chunk sizes
 * alternated; milliseconds for chunks of 1 / 4 / 15 / 32 / 128 images):
 *   host BLAS  layer 1   38 / 10 / 11 /   9 /  15
 *              layer 2  142 / 101 / 115 / 116 / 117
 *   CLBlast    layer 1   61 / 40 / 29 /  41 /  76
 *              layer 2  797 / 622 / 765 / 872 / 776
 * One image a chunk loses under both providers (a GEMM per image is too
 * small to use the BLAS threads, and under the host provider each maps
 * the buffers, a queue round trip); past a few images the size matters
 * little, and the whole batch's columns (35 MB for layer 2) only cost
 * memory.  So under every provider the chunk is as many images as
 * MPT_CONV_CHUNK_FLOATS of workspace hold (4 MiB: layer 2 15 images,
 * layer 1 32), and the per-image path is left to images too large for
 * the bound.  GPUs were not measured: larger chunks may pay there.
 * A caller may ask for a chunk (cv->chunk; the tests do).
 *
 * Leaves out dilation, groups, different strides or paddings per axis.
 */
#include "tensor/tensor.h"

/* Work-group size of the layout kernels (as elementwise.c: within every
 * device's limit; the driver's own choice, local = 0, can be groups of one
 * for a prime count, which PoCL runs several times slower). */
#define LOCAL 64

/* Floats of workspace an automatic chunk may use (4 MiB): see the header
 * comment. */
#define MPT_CONV_CHUNK_FLOATS ((size_t)1 << 20)

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

/* Workspace floats per image of a chunk of B > 1 (columns + the K x P
 * block of t), and of a chunk of one image (columns only). */
static size_t per_image(const mpt__conv_t *s)
{
    return (s->c * s->kh * s->kw + s->k) * s->oh * s->ow;
}

static size_t single_image(const mpt__conv_t *s)
{
    return s->c * s->kh * s->kw * s->oh * s->ow;
}

size_t mpt__conv_chunk(const mpt__conv_t *cv)
{
    mpt__conv_t s = *cv;
    if (mpt__conv_shape(&s) < 0 || s.n == 0)
        return 0;
    size_t b = s.chunk ? s.chunk : MPT_CONV_CHUNK_FLOATS / per_image(&s);
    return b < 1 ? 1 : b > s.n ? s.n : b;
}

size_t mpt__conv_workspace_floats(const mpt__conv_t *cv)
{
    mpt__conv_t s = *cv;
    size_t b = mpt__conv_chunk(cv);
    if (b == 0)
        return 0;
    mpt__conv_shape(&s);
    return b == 1 ? single_image(&s) : b * per_image(&s);
}

/* A view `off` floats further into t. */
static mpt__tensor_t at(const mpt__tensor_t *t, size_t off)
{
    mpt__tensor_t v = *t;
    v.off += off;
    return v;
}

/* Validates cv (recomputing the output size and the chunk) and the
 * extents of x, weight, the workspace and y (or dy), so that no GEMM or
 * kernel is enqueued for a call that would fail half-way. */
static int conv_check(const mpt__conv_t *cv, mpt__conv_t *s, const mpt__tensor_t *x,
                      const mpt__tensor_t *weight, const mpt__tensor_t *ws,
                      const mpt__tensor_t *y, const char *op, const char *yname)
{
    mpt_device_t *dev = mpt__tensor_device(ws);
    cl_uint u;
    int status;
    *s = *cv;
    MPT_TRY(mpt__conv_shape(s));
    s->chunk = mpt__conv_chunk(s);
    size_t patch = s->c * s->kh * s->kw, pixels = s->oh * s->ow;
    MPT_TRY(mpt__check_view(x, s->n * s->c * s->h * s->w, dev, op, "input", &u));
    MPT_TRY(mpt__check_view(weight, s->k * patch, dev, op, "weight", &u));
    MPT_TRY(mpt__check_view(ws, mpt__conv_workspace_floats(s), dev, op, "workspace", &u));
    MPT_TRY(mpt__check_view(y, s->n * s->k * pixels, dev, op, yname, &u));
out:
    return status;
}

/* The kernels' shape arguments for a chunk of b images. */
typedef struct {
    cl_uint c, h, w, kh, kw, s, pad, oh, ow, b;
} conv_args_t;

static conv_args_t args_of(const mpt__conv_t *s, size_t b)
{
    /* conv_check bounded every count by the 32-bit view checks */
    return (conv_args_t){(cl_uint)s->c,  (cl_uint)s->h,      (cl_uint)s->w,   (cl_uint)s->kh,
                         (cl_uint)s->kw, (cl_uint)s->stride, (cl_uint)s->pad, (cl_uint)s->oh,
                         (cl_uint)s->ow, (cl_uint)b};
}

/* im2col (to_columns) or col2im between images [first, first + b) of
 * `img` and the columns at `col`. */
static int columns(int to_columns, const mpt__conv_t *s, size_t first, size_t b,
                   const mpt__tensor_t *img, const mpt__tensor_t *col)
{
    const char *kernel = to_columns ? "mpt_conv_im2col" : "mpt_conv_col2im";
    mpt_device_t *dev = mpt__tensor_device(col);
    size_t image = s->c * s->h * s->w, ncol = s->c * s->kh * s->kw * b * s->oh * s->ow;
    mpt__tensor_t chunk = at(img, first * image);
    cl_uint io, co;
    int status;
    MPT_TRY(mpt__check_view(&chunk, b * image, dev, kernel, "images", &io));
    MPT_TRY(mpt__check_view(col, ncol, dev, kernel, "columns", &co));
    conv_args_t a = args_of(s, b);
    cl_mem src = to_columns ? chunk.buf->mem : col->buf->mem,
           dst = to_columns ? col->buf->mem : chunk.buf->mem;
    cl_uint so = to_columns ? io : co, dso = to_columns ? co : io;
    mpt__arg_t args[] = {MPT_ARG(src), MPT_ARG(so), MPT_ARG(dst), MPT_ARG(dso),
                         MPT_ARG(a.c), MPT_ARG(a.h), MPT_ARG(a.w), MPT_ARG(a.kh), MPT_ARG(a.kw),
                         MPT_ARG(a.s), MPT_ARG(a.pad), MPT_ARG(a.oh), MPT_ARG(a.ow), MPT_ARG(a.b)};
    /* one work-item a row: of the columns (ow), of dx (w) */
    size_t rows = to_columns ? s->c * s->kh * s->kw * b * s->oh : b * s->c * s->h;
    status = mpt__launch(dev, "conv", kernel, rows, LOCAL,
                         (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}

/* y_chunk (b x K x P) = t (K x b*P) + bias (NULL: none). */
static int to_images(const mpt__conv_t *s, size_t b, const mpt__tensor_t *t,
                     const mpt__tensor_t *bias, mpt__tensor_t *y_chunk)
{
    mpt_device_t *dev = mpt__tensor_device(t);
    size_t n = b * s->k * s->oh * s->ow;
    cl_uint to, yo, bo = 0, has_bias = bias != NULL, k = (cl_uint)s->k, ub = (cl_uint)b,
                    p = (cl_uint)(s->oh * s->ow);
    int status;
    MPT_TRY(mpt__check_view(t, n, dev, "conv2d forward", "workspace", &to));
    MPT_TRY(mpt__check_view(y_chunk, n, dev, "conv2d forward", "output", &yo));
    if (bias)
        MPT_TRY(mpt__check_view(bias, s->k, dev, "conv2d forward", "bias", &bo));
    /* without a bias, any valid buffer: the kernel does not read it */
    cl_mem bmem = bias ? bias->buf->mem : t->buf->mem;
    mpt__arg_t args[] = {MPT_ARG(t->buf->mem), MPT_ARG(to), MPT_ARG(y_chunk->buf->mem),
                         MPT_ARG(yo),          MPT_ARG(bmem), MPT_ARG(bo),
                         MPT_ARG(has_bias),    MPT_ARG(k),   MPT_ARG(ub), MPT_ARG(p)};
    status = mpt__launch(dev, "conv", "mpt_conv_to_images", b * s->k, LOCAL, /* a plane each */
                         (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}

/* t (K x b*P) = dy_chunk (b x K x P). */
static int from_images(const mpt__conv_t *s, size_t b, const mpt__tensor_t *dy_chunk,
                       const mpt__tensor_t *t)
{
    mpt_device_t *dev = mpt__tensor_device(t);
    size_t n = b * s->k * s->oh * s->ow;
    cl_uint dyo, to, k = (cl_uint)s->k, ub = (cl_uint)b, p = (cl_uint)(s->oh * s->ow);
    int status;
    MPT_TRY(mpt__check_view(dy_chunk, n, dev, "conv2d backward", "output gradient", &dyo));
    MPT_TRY(mpt__check_view(t, n, dev, "conv2d backward", "workspace", &to));
    mpt__arg_t args[] = {MPT_ARG(dy_chunk->buf->mem), MPT_ARG(dyo), MPT_ARG(t->buf->mem),
                         MPT_ARG(to), MPT_ARG(k), MPT_ARG(ub), MPT_ARG(p)};
    status = mpt__launch(dev, "conv", "mpt_conv_from_images", b * s->k, LOCAL, /* a plane each */
                         (int)(sizeof args / sizeof args[0]), args);
out:
    return status;
}

int mpt__op_conv2d_forward(const mpt__conv_t *cv, const mpt__tensor_t *x,
                           const mpt__tensor_t *weight, const mpt__tensor_t *bias,
                           mpt__tensor_t *ws, mpt__tensor_t *y)
{
    mpt__conv_t s;
    int status;
    MPT_TRY(conv_check(cv, &s, x, weight, ws, y, "conv2d forward", "output"));
    size_t patch = s.c * s.kh * s.kw, pixels = s.oh * s.ow;
    for (size_t first = 0; first < s.n; first += s.chunk) {
        size_t b = s.n - first < s.chunk ? s.n - first : s.chunk;
        mpt__tensor_t y_chunk = at(y, first * s.k * pixels);
        /* t after the columns; with one image per chunk, y itself */
        mpt__tensor_t t = s.chunk == 1 ? y_chunk : at(ws, patch * s.chunk * pixels);
        MPT_TRY(columns(1, &s, first, b, x, ws));
        /* t (K x b*P) = W (K x patch) * col (patch x b*P) */
        MPT_TRY(mpt__op_gemm(0, 0, s.k, b * pixels, patch, 1.0f, weight, patch, ws, b * pixels,
                             0.0f, &t, b * pixels));
        if (s.chunk > 1)
            MPT_TRY(to_images(&s, b, &t, bias, &y_chunk));
    }
    if (s.chunk == 1 && bias && s.n > 0) /* once for the batch, not per image */
        MPT_TRY(mpt__op_bias_add_channels(y, bias, s.n, s.k, pixels));
out:
    return status;
}

int mpt__op_conv2d_backward(const mpt__conv_t *cv, const mpt__tensor_t *x,
                            const mpt__tensor_t *weight, const mpt__tensor_t *dy,
                            float beta_acc, mpt__tensor_t *ws, mpt__tensor_t *dweight,
                            mpt__tensor_t *dx)
{
    mpt_device_t *dev = mpt__tensor_device(ws);
    mpt__conv_t s;
    cl_uint u;
    int status;
    MPT_TRY(conv_check(cv, &s, x, weight, ws, dy, "conv2d backward", "output gradient"));
    size_t patch = s.c * s.kh * s.kw, pixels = s.oh * s.ow;
    MPT_TRY(mpt__check_view(dweight, s.k * patch, dev, "conv2d backward", "weight gradient", &u));
    if (dx)
        MPT_TRY(mpt__check_view(dx, s.n * s.c * s.h * s.w, dev, "conv2d backward",
                                "input gradient", &u));
    if (s.n == 0) /* no images: dW = beta_acc * dW (beta 0: output only, NaN included) */
        return beta_acc == 0.0f ? mpt__op_fill(dweight, s.k * patch, 0.0f)
                                : mpt__op_scale(dweight, s.k * patch, beta_acc);
    for (size_t first = 0; first < s.n; first += s.chunk) {
        size_t b = s.n - first < s.chunk ? s.n - first : s.chunk;
        mpt__tensor_t dy_chunk = at(dy, first * s.k * pixels);
        mpt__tensor_t t = s.chunk == 1 ? dy_chunk : at(ws, patch * s.chunk * pixels);
        MPT_TRY(columns(1, &s, first, b, x, ws));
        if (s.chunk > 1)
            MPT_TRY(from_images(&s, b, &dy_chunk, &t));
        /* dW (K x patch) = beta * dW + t (K x b*P) * col^T (b*P x patch) */
        MPT_TRY(mpt__op_gemm(0, 1, s.k, patch, b * pixels, 1.0f, &t, b * pixels, ws, b * pixels,
                             first == 0 ? beta_acc : 1.0f, dweight, patch));
        if (!dx)
            continue;
        /* dcol (patch x b*P) = W^T (patch x K) * t (K x b*P), over the
         * columns: the in-order queue has finished reading them by then. */
        MPT_TRY(mpt__op_gemm(1, 0, patch, b * pixels, s.k, 1.0f, weight, patch, &t, b * pixels,
                             0.0f, ws, b * pixels));
        MPT_TRY(columns(0, &s, first, b, dx, ws));
    }
out:
    return status;
}
