/*
 * kernels/conv.cl: the layout changes around convolution's batched GEMMs
 * (lib/tensor/conv.c), for a chunk of B images of C x H x W, a kh x kw
 * kernel, one stride and one zero padding on both axes, output K x OH x OW
 * per image (P = OH * OW pixels).  Valid OpenCL C 1.2 alone.
 *
 * The column matrix of a chunk is (C*kh*kw) x (B*P), row-major: row
 * (c, ky, kx), column (b, oy, ox), so that one GEMM with the weight
 * (K x C*kh*kw) gives every image's output at once, as K x (B*P).  The
 * kernels convert between that and the tensors' N x K x OH x OW layout.
 *
 * Each work-item writes one contiguous row (an output row of the columns,
 * an input row of dx, one image's plane of one channel), so the index
 * divisions, slow on CPU devices, are paid once a row and not once an
 * element (one work-item per element measured several times slower on
 * PoCL).  col2im gathers (each input element sums the columns that hold
 * it, in a fixed order), so no atomics and no zeroing pass are needed.
 */

/* col[(c, ky, kx), (b, oy, ox)] = x[b, c, oy*s + ky - pad, ox*s + kx - pad],
 * 0 outside the image; one work-item per (c, ky, kx, b, oy), a row of ow. */
__kernel void mpt_conv_im2col(__global const float *x, uint xo, __global float *col, uint co,
                              uint c, uint h, uint w, uint kh, uint kw, uint s, uint pad,
                              uint oh, uint ow, uint b)
{
    uint i = get_global_id(0);
    if (i >= c * kh * kw * b * oh)
        return;
    uint row = i / (b * oh), j = i - row * (b * oh);
    uint img = j / oh, oy = j - img * oh;
    uint ch = row / (kh * kw), q = row - ch * (kh * kw);
    uint ky = q / kw, kx = q - ky * kw;
    __global float *out = col + co + (size_t)i * ow;
    int iy = (int)(oy * s + ky) - (int)pad;
    if (iy < 0 || iy >= (int)h) {
        for (uint ox = 0; ox < ow; ox++)
            out[ox] = 0.0f;
        return;
    }
    __global const float *in = x + xo + ((img * c + ch) * h + (uint)iy) * w;
    for (uint ox = 0; ox < ow; ox++) {
        int ix = (int)(ox * s + kx) - (int)pad;
        out[ox] = ix >= 0 && ix < (int)w ? in[ix] : 0.0f;
    }
}

/* dx[b, c, iy, ix] = the sum of the columns' entries that im2col copied
 * from (iy, ix): every (ky, kx) with oy*s + ky - pad = iy inside the
 * output, likewise for x.  Overwrites dx; one work-item per (b, c, iy),
 * a row of w. */
__kernel void mpt_conv_col2im(__global const float *col, uint co, __global float *dx, uint dxo,
                              uint c, uint h, uint w, uint kh, uint kw, uint s, uint pad,
                              uint oh, uint ow, uint b)
{
    uint i = get_global_id(0);
    if (i >= b * c * h)
        return;
    uint plane = i / h, iy = i - plane * h;
    uint img = plane / c, ch = plane - img * c;
    uint bp = b * oh * ow;
    __global float *out = dx + dxo + (size_t)i * w;
    for (uint ix = 0; ix < w; ix++)
        out[ix] = 0.0f;
    for (uint ky = 0; ky < kh; ky++) {
        int ty = (int)(iy + pad) - (int)ky;
        if (ty < 0 || (uint)ty % s != 0 || (uint)ty / s >= oh)
            continue;
        uint oy = (uint)ty / s;
        for (uint kx = 0; kx < kw; kx++) {
            __global const float *in =
                col + co + ((ch * kh + ky) * kw + kx) * bp + img * (oh * ow) + oy * ow;
            /* ix = ox*s + kx - pad for the ox inside [0, ow) */
            for (uint ox = 0; ox < ow; ox++) {
                int ix = (int)(ox * s + kx) - (int)pad;
                if (ix >= 0 && ix < (int)w)
                    out[ix] += in[ox];
            }
        }
    }
}

/* y[b, k, :] = t[k, (b, :)] + bias[k] (K x (B*P) to B x K x P; the bias
 * only when has_bias, the conv layer's, fused here to save a pass); one
 * work-item per (b, k), a plane of p. */
__kernel void mpt_conv_to_images(__global const float *t, uint to, __global float *y, uint yo,
                                 __global const float *bias, uint bo, uint has_bias, uint k,
                                 uint b, uint p)
{
    uint i = get_global_id(0);
    if (i >= b * k)
        return;
    uint img = i / k, kk = i - img * k;
    __global const float *in = t + to + (kk * b + img) * p;
    __global float *out = y + yo + (size_t)i * p;
    if (!has_bias) {
        for (uint pp = 0; pp < p; pp++)
            out[pp] = in[pp];
        return;
    }
    float add = bias[bo + kk];
    for (uint pp = 0; pp < p; pp++)
        out[pp] = in[pp] + add;
}

/* t[k, (b, :)] = dy[b, k, :] (B x K x P to K x (B*P)); one work-item per
 * (k, b), a plane of p. */
__kernel void mpt_conv_from_images(__global const float *dy, uint dyo, __global float *t,
                                   uint to, uint k, uint b, uint p)
{
    uint i = get_global_id(0);
    if (i >= k * b)
        return;
    uint kk = i / b, img = i - kk * b;
    __global const float *in = dy + dyo + (img * k + kk) * p;
    __global float *out = t + to + (size_t)i * p;
    for (uint pp = 0; pp < p; pp++)
        out[pp] = in[pp];
}
