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
 * Backward runs one work-item per input element and gathers dy from every
 * window that contains it: overlapping windows (stride < k) need no atomics,
 * every dx element is written exactly once, and the sum order is fixed.
 */

/* One work-item per output element (n, c, oy, ox). */
__kernel void mpt_maxpool_forward(__global const float *x, uint xo, __global float *y, uint yo,
                                  __global float *argmax, uint ao, uint planes, uint h, uint w,
                                  uint oh, uint ow, uint k, uint s, uint pad)
{
    uint i = get_global_id(0);
    if (i >= planes * oh * ow)
        return;
    uint plane = i / (oh * ow), o = i - plane * (oh * ow);
    uint oy = o / ow, ox = o - oy * ow;
    /* Window [y0, y1) x [x0, x1) in image coordinates, clipped. */
    int y0 = (int)(oy * s) - (int)pad, x0 = (int)(ox * s) - (int)pad;
    int y1 = min(y0 + (int)k, (int)h), x1 = min(x0 + (int)k, (int)w);
    y0 = max(y0, 0);
    x0 = max(x0, 0);
    __global const float *img = x + xo + (size_t)plane * h * w;
    float best = -INFINITY;
    uint best_at = (uint)y0 * w + (uint)x0;
    for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++) {
            uint at = (uint)iy * w + (uint)ix;
            float v = img[at];
            if (v > best || isnan(v)) {
                best = v;
                best_at = at;
            }
        }
    y[yo + i] = best;
    argmax[ao + i] = (float)best_at;
}

/* One work-item per input element (n, c, iy, ix): dx = sum of dy over the
 * windows whose argmax is this element. */
__kernel void mpt_maxpool_backward(__global const float *dy, uint dyo,
                                   __global const float *argmax, uint ao, __global float *dx,
                                   uint dxo, uint planes, uint h, uint w, uint oh, uint ow,
                                   uint k, uint s, uint pad)
{
    uint i = get_global_id(0);
    if (i >= planes * h * w)
        return;
    uint plane = i / (h * w), at = i - plane * (h * w);
    uint iy = at / w, ix = at - iy * w;
    /* Output rows whose window covers iy: oy*s - pad <= iy < oy*s - pad + k. */
    int py = (int)(iy + pad), px = (int)(ix + pad);
    int oy0 = py < (int)k ? 0 : (py - (int)k) / (int)s + 1;
    int ox0 = px < (int)k ? 0 : (px - (int)k) / (int)s + 1;
    int oy1 = min(py / (int)s, (int)oh - 1), ox1 = min(px / (int)s, (int)ow - 1);
    size_t base = (size_t)plane * oh * ow;
    float want = (float)at, sum = 0.0f;
    for (int oy = oy0; oy <= oy1; oy++)
        for (int ox = ox0; ox <= ox1; ox++) {
            size_t o = base + (size_t)oy * ow + (size_t)ox;
            if (argmax[ao + o] == want)
                sum += dy[dyo + o];
        }
    dx[dxo + i] = sum;
}
