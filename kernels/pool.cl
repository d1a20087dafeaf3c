/*
 * kernels/pool.cl: 2-D max pooling over N x C x H x W, forward and backward,
 * as torch.nn.MaxPool2d(k, stride, padding) with ceil_mode=False and no
 * dilation.  Valid OpenCL C 1.2 alone.
 *
 * Padding never wins: windows are clipped to the image.  As PyTorch's CPU
 * kernel, a value replaces the running maximum when it is greater or NaN,
 * so ties keep the first position (row-major) and NaN propagates.  The
 * argmax is stored as a float index within the H x W plane (exact below
 * 2^24, checked by the host).
 *
 * Each work-item handles one row (an output row forward, an input row
 * backward), so the index divisions, slow on CPU devices, are paid once a
 * row and not once an element; the NaN test is v != v because PoCL's
 * isnan() made the forward 2-4x slower (docs/performance.md, the CNN's
 * own kernels).
 *
 * Backward: the work-item of input row (plane, iy) zeroes that row of dx,
 * then visits the output rows whose windows cover iy and adds dy to the
 * element each window's argmax names, when it lies in this row.  Every
 * dx element is written by one work-item only (no atomics, overlapping
 * windows included) and its terms are added in a fixed order (oy, then
 * ox, ascending).
 */

/* One work-item per output row (plane, oy): a row of ow outputs. */
__kernel void mpt_maxpool_forward(__global const float *x, uint xo, __global float *y, uint yo,
                                  __global float *argmax, uint ao, uint planes, uint h, uint w,
                                  uint oh, uint ow, uint k, uint s, uint pad)
{
    uint i = get_global_id(0);
    if (i >= planes * oh)
        return;
    uint plane = i / oh, oy = i - plane * oh;
    /* Rows [y0, y1) of the window in image coordinates, clipped. */
    int y0 = (int)(oy * s) - (int)pad;
    int y1 = min(y0 + (int)k, (int)h);
    y0 = max(y0, 0);
    __global const float *img = x + xo + (size_t)plane * h * w;
    __global float *out = y + yo + (size_t)i * ow;
    __global float *arg = argmax + ao + (size_t)i * ow;
    for (uint ox = 0; ox < ow; ox++) {
        int x0 = (int)(ox * s) - (int)pad;
        int x1 = min(x0 + (int)k, (int)w);
        x0 = max(x0, 0);
        float best = -INFINITY;
        uint best_at = (uint)y0 * w + (uint)x0;
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) {
                uint at = (uint)iy * w + (uint)ix;
                float v = img[at];
                if (v > best || v != v) { /* v != v: isnan, a call on PoCL */
                    best = v;
                    best_at = at;
                }
            }
        out[ox] = best;
        arg[ox] = (float)best_at;
    }
}

/* One work-item per input row (plane, iy): dx[plane, iy, :] = the sums of
 * dy over the windows whose argmax lies in that row (see above). */
__kernel void mpt_maxpool_backward(__global const float *dy, uint dyo,
                                   __global const float *argmax, uint ao, __global float *dx,
                                   uint dxo, uint planes, uint h, uint w, uint oh, uint ow,
                                   uint k, uint s, uint pad)
{
    uint i = get_global_id(0);
    if (i >= planes * h)
        return;
    uint plane = i / h, iy = i - plane * h;
    __global float *out = dx + dxo + (size_t)i * w;
    for (uint ix = 0; ix < w; ix++)
        out[ix] = 0.0f;
    /* Output rows whose window covers iy: oy*s - pad <= iy < oy*s - pad + k. */
    int py = (int)(iy + pad);
    int oy0 = py < (int)k ? 0 : (py - (int)k) / (int)s + 1;
    int oy1 = min(py / (int)s, (int)oh - 1);
    uint row0 = iy * w; /* argmax is an index within the plane */
    for (int oy = oy0; oy <= oy1; oy++) {
        size_t o = (size_t)plane * oh * ow + (size_t)oy * ow;
        __global const float *g = dy + dyo + o;
        __global const float *arg = argmax + ao + o;
        for (uint ox = 0; ox < ow; ox++) {
            uint at = (uint)arg[ox];
            if (at >= row0 && at - row0 < w)
                out[at - row0] += g[ox];
        }
    }
}
