/*
 * kernels/transformer.cl: the transformer's own kernels: token + position
 * embedding (forward, and a deterministic backward), and the causal
 * softmax of attention scores (forward and backward).  Valid OpenCL C 1.2
 * on its own; launched by lib/tensor/attention.c.  The GEMMs of attention
 * and of the projections are CLBlast's.
 *
 * Token ids arrive as floats (the model's input is a float tensor; ids up
 * to 2^24 are exact).
 */

/* y[r, c] = wte[token(r), c] + wpe[r % T, c] over rows = batch x T rows of
 * C; a token outside [0, V) gives NaN, so that a bad id is seen. */
__kernel void mpt_embedding_forward(__global const float *x, uint xo, __global const float *wte,
                                    uint wteo, __global const float *wpe, uint wpeo,
                                    __global float *y, uint yo, uint T, uint C, uint V,
                                    uint total)
{
    uint i = get_global_id(0);
    if (i >= total)
        return;
    uint r = i / C, c = i % C;
    float id = x[xo + r];
    int ok = id >= 0.0f && id < (float)V && id == floor(id);
    y[yo + i] = ok ? wte[wteo + (uint)id * C + c] + wpe[wpeo + (r % T) * C + c] : NAN;
}

/* dwte[v, c] = beta * dwte[v, c] + sum of dy[r, c] over the rows r whose
 * token is v.  One work-item per channel walks every row in order: the sum
 * is the same on every run and device (no atomics), and channels (tens to
 * thousands) give enough parallel work for the sizes here. */
__kernel void mpt_embedding_backward_wte(__global const float *x, uint xo,
                                         __global const float *dy, uint dyo,
                                         __global float *dwte, uint dwteo, uint rows, uint C,
                                         uint V, float beta)
{
    uint c = get_global_id(0);
    if (c >= C)
        return;
    for (uint v = 0; v < V; v++)
        dwte[dwteo + v * C + c] = beta == 0.0f ? 0.0f : beta * dwte[dwteo + v * C + c];
    for (uint r = 0; r < rows; r++) {
        float id = x[xo + r];
        if (id >= 0.0f && id < (float)V)
            dwte[dwteo + (uint)id * C + c] += dy[dyo + r * C + c];
    }
}

/* dwpe[t, c] = sum over the batch of dy[b, t, c]. */
__kernel void mpt_embedding_backward_wpe(__global const float *dy, uint dyo,
                                         __global float *dwpe, uint dwpeo, uint batch, uint T,
                                         uint C)
{
    uint i = get_global_id(0);
    if (i >= T * C)
        return;
    float s = 0.0f;
    for (uint b = 0; b < batch; b++)
        s += dy[dyo + b * T * C + i];
    dwpe[dwpeo + i] = s;
}

/* In place over rows of T scores, row r being query position t = r % T:
 * p[j] = softmax over j <= t of scale * s[j], and 0 for j > t (the causal
 * mask).  The maximum is subtracted first, so no exp() overflows. */
__kernel void mpt_causal_softmax(__global float *s, uint so, uint rows, uint T, float scale)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    __global float *row = s + so + (size_t)r * T;
    uint t = r % T;
    float m = -INFINITY, sum = 0.0f;
    for (uint j = 0; j <= t; j++)
        m = fmax(m, scale * row[j]);
    for (uint j = 0; j <= t; j++) {
        float e = exp(scale * row[j] - m);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (uint j = 0; j <= t; j++)
        row[j] *= inv;
    for (uint j = t + 1; j < T; j++)
        row[j] = 0.0f;
}

/* In place: d[j] (the gradient of p[j]) becomes the gradient of the raw
 * score, scale * p[j] * (d[j] - sum_k p[k] d[k]), 0 above the diagonal. */
__kernel void mpt_causal_softmax_backward(__global const float *p, uint po, __global float *d,
                                          uint dof, uint rows, uint T, float scale)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *prow = p + po + (size_t)r * T;
    __global float *drow = d + dof + (size_t)r * T;
    uint t = r % T;
    float dot = 0.0f;
    for (uint j = 0; j <= t; j++)
        dot += prow[j] * drow[j];
    for (uint j = 0; j <= t; j++)
        drow[j] = scale * prow[j] * (drow[j] - dot);
    for (uint j = t + 1; j < T; j++)
        drow[j] = 0.0f;
}
