/*
 * tensor/linear.c: a linear layer and the activation after it as one op
 * each way, so that the pair costs the device as few launches and host
 * waits as its provider allows:
 *
 *   provider   forward                       backward
 *   CLBlast    GEMM + bias/activation kernel activation/bias-gradient kernel
 *                                            + GEMM dW (+ GEMM dx)
 *   host BLAS  one host call: GEMM, bias,    one host call: activation
 *              activation on the mapped      backward, bias gradient, GEMM
 *              buffers                       dW (+ GEMM dx)
 *
 * Unfused, the same pair took 3 launches forward (GEMM, bias, activation)
 * and 4-5 backward, and under the host provider each GEMM and the bias
 * gradient waited for the queue separately (PoCL: ~45 us a round trip).
 *
 * The host side computes the activations with the same float operations,
 * in the same order, as kernels/elementwise.cl (tanh clamped past 9.1 for
 * GELU, x / (1 + exp(-x)) for SiLU, selects for ReLU), so both providers
 * pass the same tests.  Left out: fusing the bias into the GEMM itself
 * (beta = 1 over a broadcast bias would cost a copy per call).
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "device/gemm.h"
#include "tensor/tensor.h"

/* Work-group size (see elementwise.c). */
#define LOCAL 64

/* ---- the activations on the host (as kernels/elementwise.cl) ------------- */

static float host_tanh(float z)
{
    return fabsf(z) > 9.1f ? copysignf(1.0f, z) : tanhf(z);
}

/* v where keep, else +0.0f, without a branch: ReLU's select on the
 * signs of a layer's outputs is a coin toss for the branch predictor,
 * and as a branch it cost ~4 ns an element (1.1 ms beside the 2.0 ms
 * GEMM of an MLP's first layer at batch 1024, docs/performance.md). */
static inline float keep_or_zero(int keep, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits &= -(uint32_t)(keep != 0);
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ReLU backward: dy where the forward input v > 0 (or NaN), else 0. */
static inline float relu_b(float v, float dy)
{
    return keep_or_zero(!(v <= 0.0f), dy);
}

/* ReLU forward: v unless v <= 0 (a NaN passes, as the kernel's select). */
static inline float relu_f(float v)
{
    return relu_b(v, v);
}

static float act_f(mpt__act_t act, float v)
{
    switch (act) {
    case MPT_ACT_RELU:
        return relu_f(v);
    case MPT_ACT_GELU: {
        float t = host_tanh(0.7978845608028654f * (v + 0.044715f * (v * v * v)));
        return 0.5f * v * (1.0f + t);
    }
    case MPT_ACT_SILU:
        return v / (1.0f + expf(-v));
    default:
        return v;
    }
}

static float act_b(mpt__act_t act, float v, float dy)
{
    switch (act) {
    case MPT_ACT_RELU:
        return relu_b(v, dy);
    case MPT_ACT_GELU: {
        float x_sq = v * v;
        float t = host_tanh(0.7978845608028654f * (v + 0.044715f * (x_sq * v)));
        float left = 0.5f * v, right = 1.0f + t;
        float right_derivative =
            left * (1.0f - t * t) * (0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x_sq));
        return dy * (0.5f * right + right_derivative);
    }
    case MPT_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-v));
        return dy * s * (1.0f + v * (1.0f - s));
    }
    default:
        return dy;
    }
}

/* ---- shared checks -------------------------------------------------------- */

typedef struct {
    mpt__act_t act;
    size_t batch, in, out;
    int bias, dx;
} shape_t;

static int check_shape(const char *op, mpt_device_t *dev, const shape_t *s)
{
    if (s->act < MPT_ACT_NONE || s->act > MPT_ACT_SILU)
        return mpt__fail(MPT_ERR_INVALID, "%s: unknown activation %d", op, (int)s->act);
    if (s->batch > INT_MAX || s->in > INT_MAX || s->out > INT_MAX ||
        (s->out && s->batch > UINT32_MAX / s->out) || (s->in && s->batch > UINT32_MAX / s->in) ||
        (s->in && s->out > UINT32_MAX / s->in))
        return mpt__fail(MPT_ERR_RANGE, "%s: %zu x %zu -> %zu on device %d: beyond 32-bit sizes",
                         op, s->batch, s->in, s->out, dev->info.index);
    return MPT_OK;
}

/* ---- forward ---------------------------------------------------------------- */

/* z += b and y = act(z) along one row, the activation chosen once a row
 * (a switch once an element cost as much again). */
static void forward_row(mpt__act_t act, size_t n, const float *restrict b, float *restrict z,
                        float *restrict y)
{
    if (y && b && act == MPT_ACT_RELU) { /* the common case, in one pass */
        for (size_t c = 0; c < n; c++) {
            float v = z[c] + b[c];
            z[c] = v;
            y[c] = relu_f(v);
        }
        return;
    }
    if (b)
        for (size_t c = 0; c < n; c++)
            z[c] += b[c];
    if (!y)
        return;
    if (act == MPT_ACT_RELU)
        for (size_t c = 0; c < n; c++)
            y[c] = relu_f(z[c]);
    else
        for (size_t c = 0; c < n; c++)
            y[c] = act_f(act, z[c]);
}

/* ptr: x, w, z, then b and y when present (in that order). */
static void host_forward(void *arg, float *const *ptr)
{
    const shape_t *s = arg;
    const float *x = ptr[0], *w = ptr[1];
    float *z = ptr[2];
    const float *b = s->bias ? ptr[3] : NULL;
    float *y = s->act != MPT_ACT_NONE ? ptr[3 + s->bias] : NULL;
    mpt__host_sgemm(0, 1, s->batch, s->out, s->in, 1.0f, x, s->in, w, s->in, 0.0f, z,
                    s->out);
    for (size_t r = 0; r < s->batch; r++)
        forward_row(s->act, s->out, b, z + r * s->out, y ? y + r * s->out : NULL);
}

int mpt__op_linear_forward(const mpt__tensor_t *x, const mpt__tensor_t *w,
                           const mpt__tensor_t *b, mpt__act_t act, size_t batch, size_t in,
                           size_t out, mpt__tensor_t *z, mpt__tensor_t *y)
{
    const char *op = "mpt__op_linear_forward";
    shape_t s = {act, batch, in, out, b != NULL, 0};
    cl_uint xo, wo, bo = 0, zo, yo = 0, ucols, utotal, uact = (cl_uint)act;
    int status;
    if (!z || !z->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor z is missing", op);
    mpt_device_t *dev = mpt__tensor_device(z);
    MPT_TRY(check_shape(op, dev, &s));
    if (batch == 0 || out == 0)
        return MPT_OK;
    MPT_TRY(mpt__check_view(x, batch * in, dev, op, "x", &xo));
    MPT_TRY(mpt__check_view(w, out * in, dev, op, "w", &wo));
    MPT_TRY(mpt__check_view(z, batch * out, dev, op, "z", &zo));
    if (b)
        MPT_TRY(mpt__check_view(b, out, dev, op, "b", &bo));
    if (act != MPT_ACT_NONE)
        MPT_TRY(mpt__check_view(y, batch * out, dev, op, "y", &yo));
    if (in == 0) { /* no GEMM: z = b (or 0), y = act(z) */
        MPT_TRY(mpt__op_fill(z, batch * out, 0.0f));
    } else if (dev->gemm_host) {
        mpt__host_arg_t args[5] = {{x->buf->mem, x->off, batch * in, 0},
                                   {w->buf->mem, w->off, out * in, 0},
                                   {z->buf->mem, z->off, batch * out, 1}};
        size_t n = 3;
        if (b)
            args[n++] = (mpt__host_arg_t){b->buf->mem, b->off, out, 0};
        if (act != MPT_ACT_NONE)
            args[n++] = (mpt__host_arg_t){y->buf->mem, y->off, batch * out, 1};
        return mpt__host_call(dev, "host linear forward", args, n, host_forward, &s,
                              sizeof s);
    } else {
        MPT_TRY(mpt__op_gemm(0, 1, batch, out, in, 1.0f, x, in, w, in, 0.0f, z, out));
    }
    if (act == MPT_ACT_NONE)
        return b ? mpt__op_bias_add(z, b, batch, out) : MPT_OK;
    /* Bias-free linear layers are row-parallel shards, which never fuse. */
    if (!b)
        return mpt__fail(MPT_ERR_INVALID, "%s: an activation needs the layer's bias", op);
    MPT_TRY(mpt__u32(out, &ucols));
    MPT_TRY(mpt__u32(batch * out, &utotal));
    mpt__arg_t args[] = {MPT_ARG(z->buf->mem), MPT_ARG(zo),    MPT_ARG(b->buf->mem),
                         MPT_ARG(bo),          MPT_ARG(y->buf->mem), MPT_ARG(yo),
                         MPT_ARG(ucols),       MPT_ARG(utotal), MPT_ARG(uact)};
    status = mpt__launch(dev, "elementwise", "mpt_bias_act_forward", batch * out, LOCAL, 9, args);
out:
    return status;
}

/* ---- backward --------------------------------------------------------------- */

/* dy = act'(z) dy in place along one row, then its sum into db, the
 * activation chosen once a row as in forward_row. */
static void backward_row(mpt__act_t act, size_t n, const float *restrict z, float *restrict dy,
                         float *restrict db)
{
    if (act == MPT_ACT_RELU && db) { /* the common case, in one pass */
        for (size_t c = 0; c < n; c++) {
            float d = relu_b(z[c], dy[c]);
            dy[c] = d;
            db[c] += d;
        }
        return;
    }
    if (act == MPT_ACT_RELU)
        for (size_t c = 0; c < n; c++)
            dy[c] = relu_b(z[c], dy[c]);
    else if (act != MPT_ACT_NONE)
        for (size_t c = 0; c < n; c++)
            dy[c] = act_b(act, z[c], dy[c]);
    if (db)
        for (size_t c = 0; c < n; c++)
            db[c] += dy[c];
}

/* ptr: x, w, z, dy, dw, then db and dx when present (in that order). */
static void host_backward(void *arg, float *const *ptr)
{
    const shape_t *s = arg;
    const float *x = ptr[0], *w = ptr[1], *z = ptr[2];
    float *dy = ptr[3], *dw = ptr[4];
    float *db = s->bias ? ptr[5] : NULL, *dx = s->dx ? ptr[5 + s->bias] : NULL;
    if (db)
        for (size_t c = 0; c < s->out; c++)
            db[c] = 0.0f;
    /* Row by row, along memory: dz in place, then into the column sums. */
    for (size_t r = 0; r < s->batch; r++)
        backward_row(s->act, s->out, z + r * s->out, dy + r * s->out, db);
    /* dW (out x in) = dz^T (out x batch) x (batch x in) */
    mpt__host_sgemm(1, 0, s->out, s->in, s->batch, 1.0f, dy, s->out, x, s->in, 0.0f, dw,
                    s->in);
    /* dx (batch x in) = dz (batch x out) W (out x in) */
    if (dx)
        mpt__host_sgemm(0, 0, s->batch, s->in, s->out, 1.0f, dy, s->out, w, s->in, 0.0f,
                        dx, s->in);
}

int mpt__op_linear_backward(const mpt__tensor_t *x, const mpt__tensor_t *w,
                            const mpt__tensor_t *z, mpt__act_t act, size_t batch, size_t in,
                            size_t out, mpt__tensor_t *dy, mpt__tensor_t *dw,
                            mpt__tensor_t *db, mpt__tensor_t *dx)
{
    const char *op = "mpt__op_linear_backward";
    shape_t s = {act, batch, in, out, db != NULL, dx != NULL};
    cl_uint xo, wo, zo = 0, dyo, dwo, dbo = 0, dxo = 0, urows, ucols, uact = (cl_uint)act;
    int status;
    if (!dw || !dw->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor dw is missing", op);
    mpt_device_t *dev = mpt__tensor_device(dw);
    MPT_TRY(check_shape(op, dev, &s));
    if (out == 0 || in == 0 || batch == 0) /* nothing the GEMMs could do: the general path */
        goto general;
    MPT_TRY(mpt__check_view(x, batch * in, dev, op, "x", &xo));
    MPT_TRY(mpt__check_view(w, out * in, dev, op, "w", &wo));
    MPT_TRY(mpt__check_view(dy, batch * out, dev, op, "dy", &dyo));
    MPT_TRY(mpt__check_view(dw, out * in, dev, op, "dw", &dwo));
    if (act != MPT_ACT_NONE)
        MPT_TRY(mpt__check_view(z, batch * out, dev, op, "z", &zo));
    if (db)
        MPT_TRY(mpt__check_view(db, out, dev, op, "db", &dbo));
    if (dx)
        MPT_TRY(mpt__check_view(dx, batch * in, dev, op, "dx", &dxo));
    if (dev->gemm_host) {
        /* z is read only with an activation; without one, dy stands in (a
         * region it maps anyway) so that the pointers keep their places. */
        const mpt__tensor_t *zz = act != MPT_ACT_NONE ? z : dy;
        mpt__host_arg_t args[7] = {{x->buf->mem, x->off, batch * in, 0},
                                   {w->buf->mem, w->off, out * in, 0},
                                   {zz->buf->mem, zz->off, batch * out, 0},
                                   {dy->buf->mem, dy->off, batch * out, 1},
                                   {dw->buf->mem, dw->off, out * in, 1}};
        size_t n = 5;
        if (db)
            args[n++] = (mpt__host_arg_t){db->buf->mem, db->off, out, 1};
        if (dx)
            args[n++] = (mpt__host_arg_t){dx->buf->mem, dx->off, batch * in, 1};
        return mpt__host_call(dev, "host linear backward", args, n, host_backward, &s,
                              sizeof s);
    }
general:
    if (act != MPT_ACT_NONE) {
        if (!db)
            return mpt__fail(MPT_ERR_INVALID, "%s: an activation needs the layer's bias", op);
        MPT_TRY(mpt__u32(batch, &urows));
        MPT_TRY(mpt__u32(out, &ucols));
        mpt__arg_t args[] = {MPT_ARG(z->buf->mem),  MPT_ARG(zo),    MPT_ARG(dy->buf->mem),
                             MPT_ARG(dyo),          MPT_ARG(db->buf->mem), MPT_ARG(dbo),
                             MPT_ARG(urows),        MPT_ARG(ucols), MPT_ARG(uact)};
        MPT_TRY(mpt__launch(dev, "elementwise", "mpt_act_backward_bias_grad", out, LOCAL, 9,
                            args));
    } else if (db) {
        MPT_TRY(mpt__op_sum_rows(dy, batch, out, 0.0f, db));
    }
    /* dW (out x in) = dy^T (out x batch) x (batch x in) */
    MPT_TRY(mpt__op_gemm(1, 0, out, in, batch, 1.0f, dy, out, x, in, 0.0f, dw, in));
    /* dx (batch x in) = dy (batch x out) W (out x in) */
    if (dx)
        MPT_TRY(mpt__op_gemm(0, 0, batch, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in));
out:
    return status;
}
