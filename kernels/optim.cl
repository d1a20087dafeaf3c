/*
 * kernels/optim.cl: the optimizer updates, one work-item per parameter:
 * SGD (with and without momentum) and AdamW, written as torch.optim's
 * single-tensor ("foreach=False") loops are.  Valid OpenCL C 1.2 on its
 * own; launched by lib/tensor/optim.c, which computes every scalar that
 * does not depend on the element (bias corrections, 1 - beta, the decay
 * factor) on the host in double, as torch does in Python floats.
 *
 * Left out: gradient clipping and loss scaling (they scale g before these
 * kernels, with mpt__op_nrm2 and mpt__op_scale), Nesterov, dampening and
 * AMSGrad (not offered by the API).
 */

/* SGD without momentum: p -= lr * (g + wd * p).  The decay term is added
 * only when wd != 0, as torch does, so that wd = 0 with p = inf leaves the
 * step at g instead of making it NaN. */
__kernel void mpt_sgd(__global float *p, uint po, __global const float *g, uint go, uint n,
                      float lr, float wd)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    float d = g[go + i];
    if (wd != 0.0f)
        d += wd * p[po + i];
    p[po + i] -= lr * d;
}

/* SGD with momentum (dampening 0, not Nesterov): d = g + wd * p;
 * buf = first ? d : momentum * buf + d;  p -= lr * buf.  On the first
 * step the buffer is written without being read (torch clones d into a
 * new buffer), so it need not be initialised. */
__kernel void mpt_sgd_momentum(__global float *p, uint po, __global const float *g, uint go,
                               __global float *buf, uint bo, uint n, float lr, float momentum,
                               float wd, uint first)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    float d = g[go + i];
    if (wd != 0.0f)
        d += wd * p[po + i];
    float b = first ? d : momentum * buf[bo + i] + d;
    buf[bo + i] = b;
    p[po + i] -= lr * b;
}

/* AdamW (amsgrad = False), torch.optim.AdamW's _single_tensor_adamw:
 *   p *= decay                        decay = 1 - lr * wd
 *   m = beta1 * m + one_minus_b1 * g
 *   v = beta2 * v + one_minus_b2 * g * g
 *   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
 * step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t). */
__kernel void mpt_adamw(__global float *p, uint po, __global const float *g, uint go,
                        __global float *m, uint mo, __global float *v, uint vo, uint n,
                        float decay, float beta1, float one_minus_b1, float beta2,
                        float one_minus_b2, float eps, float step_size, float bc2_sqrt)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    float gi = g[go + i];
    float pi = p[po + i] * decay;
    float mi = beta1 * m[mo + i] + one_minus_b1 * gi;
    float vi = beta2 * v[vo + i] + one_minus_b2 * (gi * gi);
    float denom = sqrt(vi) / bc2_sqrt + eps;
    m[mo + i] = mi;
    v[vo + i] = vi;
    p[po + i] = pi - step_size * (mi / denom);
}
