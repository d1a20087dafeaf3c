/*
 * kernels/elementwise.cl: fill, bias additions, the conv bias gradient and
 * the activations (ReLU, tanh-approximated GELU, SiLU), forward and
 * backward.
 * Valid OpenCL C 1.2 on its own; launched by lib/tensor/elementwise.c.
 *
 * Every buffer argument is followed by its offset in floats.  One
 * work-item per element (per channel for the bias gradient); each kernel
 * guards its index against the real count, since the host rounds the
 * global size up to a multiple of the work-group size.  The fused kernels
 * at the end (bias + activation forward; activation backward + bias
 * gradient) run a linear layer and the activation after it in one launch
 * each way, with the same per-element functions as the separate kernels,
 * so fusing changes the number of launches, not a result.
 */

/* x[i] = value. */
__kernel void mpt_fill(__global float *x, uint xo, float value, uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    x[xo + i] = value;
}

/* y[r, c] += b[c] over a rows x cols matrix; total = rows * cols. */
__kernel void mpt_bias_add(__global float *y, uint yo, __global const float *b, uint bo,
                           uint cols, uint total)
{
    uint i = get_global_id(0);
    if (i >= total)
        return;
    y[yo + i] += b[bo + i % cols];
}

/* y[n, c, p] += b[c] over N x C x P; total = N * C * P. */
__kernel void mpt_bias_add_channels(__global float *y, uint yo, __global const float *b, uint bo,
                                    uint c, uint p, uint total)
{
    uint i = get_global_id(0);
    if (i >= total)
        return;
    y[yo + i] += b[bo + (i / p) % c];
}

/* db[ch] = beta * db[ch] + sum over n, p of dy[n, ch, p], one work-item a
 * channel, summed in a fixed order (n outer, p inner) so that the result
 * is the same on every run.  beta == 0 overwrites db without reading it
 * (BLAS convention: a fresh gradient buffer may hold anything, NaN too). */
__kernel void mpt_bias_grad_channels(__global const float *dy, uint dyo, uint n, uint c, uint p,
                                     float beta, __global float *db, uint dbo)
{
    uint ch = get_global_id(0);
    if (ch >= c)
        return;
    float s = 0.0f;
    for (uint img = 0; img < n; img++) {
        __global const float *row = dy + dyo + ((size_t)img * c + ch) * p;
        for (uint j = 0; j < p; j++)
            s += row[j];
    }
    db[dbo + ch] = beta == 0.0f ? s : beta * db[dbo + ch] + s;
}

/* y = max(x, 0), with NaN passed through as torch.relu does (relu(nan) =
 * nan): fmax(x, 0) would turn NaN into 0 and hide it. */
static float relu_f(float v)
{
    return (v > 0.0f || isnan(v)) ? v : 0.0f;
}

__kernel void mpt_relu_forward(__global const float *x, uint xo, __global float *y, uint yo,
                               uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    y[yo + i] = relu_f(x[xo + i]);
}

static float relu_b(float x, float dy)
{
    return x <= 0.0f ? 0.0f : dy;
}

/* dx = x <= 0 ? 0 : dy, a select as torch's threshold_backward does (not
 * a product): x = NaN passes dy through, and dy = NaN where x <= 0 gives
 * 0, exactly as torch.relu's backward. */
__kernel void mpt_relu_backward(__global const float *x, uint xo, __global const float *dy,
                                uint dyo, __global float *dx, uint dxo, uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    dx[dxo + i] = relu_b(x[xo + i], dy[dyo + i]);
}

/* sqrt(2 / pi) and the cubic coefficient of the tanh approximation. */
#define GELU_BETA 0.7978845608028654f
#define GELU_KAPPA 0.044715f

/* tanh(z), exactly +-1 where a correctly rounded tanh is: for |z| > 9.1,
 * 1 - |tanh z| ~ 2 exp(-2|z|) < 2^-25, half an ulp below 1.  OpenCL allows
 * tanh 5 ulp, and PoCL 3.1 returns -0.99999994 for tanh(-inf): 1 + t then
 * keeps 6e-8 instead of 0, so gelu(-20) would be -6e-7 (torch: -0) and
 * gelu(-1e30) -3e22.  NaN fails the comparison and stays NaN. */
static float gelu_tanh(float z)
{
    return fabs(z) > 9.1f ? copysign(1.0f, z) : tanh(z);
}

/* y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in float, with the
 * operations in the order of PyTorch's CPU kernel (GeluKernel.cpp) so that
 * overflow for huge |x| behaves the same way (e.g. gelu(-inf) = NaN). */
static float gelu_f(float v)
{
    float t = gelu_tanh(GELU_BETA * (v + GELU_KAPPA * (v * v * v)));
    return 0.5f * v * (1.0f + t);
}

__kernel void mpt_gelu_forward(__global const float *x, uint xo, __global float *y, uint yo,
                               uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    y[yo + i] = gelu_f(x[xo + i]);
}

/* dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)),
 * t = tanh(inner): the derivative of the forward above, arranged as
 * PyTorch's GeluBackward (left and right derivatives). */
static float gelu_b(float v, float dy)
{
    float x_sq = v * v;
    float t = gelu_tanh(GELU_BETA * (v + GELU_KAPPA * (x_sq * v)));
    float left = 0.5f * v;
    float right = 1.0f + t;
    float left_derivative = 0.5f * right;
    float right_derivative = left * (1.0f - t * t) * (GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x_sq));
    return dy * (left_derivative + right_derivative);
}

__kernel void mpt_gelu_backward(__global const float *x, uint xo, __global const float *dy,
                                uint dyo, __global float *dx, uint dxo, uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    dx[dxo + i] = gelu_b(x[xo + i], dy[dyo + i]);
}

/* SiLU (swish): y = x sigmoid(x), computed as x / (1 + exp(-x)) as
 * PyTorch's CPU kernel does.  For x < -88, exp(-x) overflows to inf
 * and sigmoid to 0, so y is -0 as torch gives; silu(-inf) = -inf * 0 = NaN,
 * also as torch.  NaN stays NaN. */
static float silu_f(float v)
{
    return v / (1.0f + exp(-v));
}

__kernel void mpt_silu_forward(__global const float *x, uint xo, __global float *y, uint yo,
                               uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    y[yo + i] = silu_f(x[xo + i]);
}

/* dx = dy s (1 + x (1 - s)), s = sigmoid(x): the derivative of x s(x),
 * arranged as PyTorch's silu_backward. */
static float silu_b(float v, float dy)
{
    float s = 1.0f / (1.0f + exp(-v));
    return dy * s * (1.0f + v * (1.0f - s));
}

__kernel void mpt_silu_backward(__global const float *x, uint xo, __global const float *dy,
                                uint dyo, __global float *dx, uint dxo, uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    dx[dxo + i] = silu_b(x[xo + i], dy[dyo + i]);
}

/* ---- fused: a linear layer's bias with the activation after it ------------ */

/* The activation codes of tensor/tensor.h (mpt__act_t). */
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_GELU 2
#define ACT_SILU 3

static float act_f(uint act, float v)
{
    return act == ACT_RELU ? relu_f(v) : act == ACT_GELU ? gelu_f(v)
                                       : act == ACT_SILU ? silu_f(v) : v;
}

static float act_b(uint act, float v, float dy)
{
    return act == ACT_RELU ? relu_b(v, dy) : act == ACT_GELU ? gelu_b(v, dy)
                                           : act == ACT_SILU ? silu_b(v, dy) : dy;
}

/* z[r, c] += b[c]; y[r, c] = act(z[r, c]) over rows x cols (total):
 * the pre-activation z stays for the backward. */
__kernel void mpt_bias_act_forward(__global float *z, uint zo, __global const float *b, uint bo,
                                   __global float *y, uint yo, uint cols, uint total, uint act)
{
    uint i = get_global_id(0);
    if (i >= total)
        return;
    float v = z[zo + i] + b[bo + i % cols];
    z[zo + i] = v;
    y[yo + i] = act_f(act, v);
}

/* In place, dy[r, c] becomes dz = act'(z[r, c]) dy[r, c], and
 * db[c] = sum over r of dz[r, c]: one work-item per column, rows in order
 * (the same sum on every run).  db is overwritten (a fresh gradient). */
__kernel void mpt_act_backward_bias_grad(__global const float *z, uint zo, __global float *dy,
                                         uint dyo, __global float *db, uint dbo, uint rows,
                                         uint cols, uint act)
{
    uint c = get_global_id(0);
    if (c >= cols)
        return;
    float s = 0.0f;
    for (uint r = 0; r < rows; r++) {
        size_t i = (size_t)r * cols + c;
        float d = act_b(act, z[zo + i], dy[dyo + i]);
        dy[dyo + i] = d;
        s += d;
    }
    db[dbo + c] = s;
}
