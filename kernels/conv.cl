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
 * Each kernel runs one work-item per element it writes, indexed so that
 * consecutive work-items write consecutive addresses; col2im gathers
 * (each input element sums the columns that hold it, in a fixed order),
 * so no atomics and no zeroing pass are needed.
 */

/* col[(c, ky, kx), (b, oy, ox)] = x[b, c, oy*s + ky - pad, ox*s + kx - pad],
 * 0 outside the image. */
__kernel void mpt_conv_im2col(__global const float *x, uint xo, __global float *col, uint co,
                              uint c, uint h, uint w, uint kh, uint kw, uint s, uint pad,
                              uint oh, uint ow, uint b)
{
    uint i = get_global_id(0);
    uint bp = b * oh * ow;
    if (i >= c * kh * kw * bp)
        return;
    uint row = i / bp, j = i - row * bp;
    uint img = j / (oh * ow), p = j - img * (oh * ow);
    uint oy = p / ow, ox = p - oy * ow;
    uint ch = row / (kh * kw), q = row - ch * (kh * kw);
    uint ky = q / kw, kx = q - ky * kw;
    int iy = (int)(oy * s + ky) - (int)pad, ix = (int)(ox * s + kx) - (int)pad;
    float v = 0.0f;
    if (iy >= 0 && ix >= 0 && iy < (int)h && ix < (int)w)
        v = x[xo + ((img * c + ch) * h + (uint)iy) * w + (uint)ix];
    col[co + i] = v;
}

/* dx[b, c, iy, ix] = the sum of the columns' entries that im2col copied
 * from (iy, ix): every (ky, kx) with oy*s + ky - pad = iy inside the
 * output, likewise for x.  Overwrites dx. */
__kernel void mpt_conv_col2im(__global const float *col, uint co, __global float *dx, uint dxo,
                              uint c, uint h, uint w, uint kh, uint kw, uint s, uint pad,
                              uint oh, uint ow, uint b)
{
    uint i = get_global_id(0);
    if (i >= b * c * h * w)
        return;
    uint plane = i / (h * w), at = i - plane * (h * w);
    uint img = plane / c, ch = plane - img * c;
    uint iy = at / w, ix = at - iy * w;
    uint bp = b * oh * ow;
    float sum = 0.0f;
    for (uint ky = 0; ky < kh; ky++) {
        int ty = (int)(iy + pad) - (int)ky;
        if (ty < 0 || (uint)ty % s != 0 || (uint)ty / s >= oh)
            continue;
        uint oy = (uint)ty / s;
        for (uint kx = 0; kx < kw; kx++) {
            int tx = (int)(ix + pad) - (int)kx;
            if (tx < 0 || (uint)tx % s != 0 || (uint)tx / s >= ow)
                continue;
            uint ox = (uint)tx / s;
            uint row = (ch * kh + ky) * kw + kx;
            sum += col[co + row * bp + img * (oh * ow) + oy * ow + ox];
        }
    }
    dx[dxo + i] = sum;
}

/* y[b, k, p] = t[k, (b, p)] + bias[k] (K x (B*P) to B x K x P; the bias
 * only when has_bias, the conv layer's, fused here to save a pass). */
__kernel void mpt_conv_to_images(__global const float *t, uint to, __global float *y, uint yo,
                                 __global const float *bias, uint bo, uint has_bias, uint k,
                                 uint b, uint p)
{
    uint i = get_global_id(0);
    if (i >= b * k * p)
        return;
    uint img = i / (k * p), r = i - img * (k * p);
    uint kk = r / p, pp = r - kk * p;
    float v = t[to + kk * (b * p) + img * p + pp];
    y[yo + i] = has_bias ? v + bias[bo + kk] : v;
}

/* t[k, (b, p)] = dy[b, k, p] (B x K x P to K x (B*P)). */
__kernel void mpt_conv_from_images(__global const float *dy, uint dyo, __global float *t,
                                   uint to, uint k, uint b, uint p)
{
    uint i = get_global_id(0);
    if (i >= k * b * p)
        return;
    uint kk = i / (b * p), j = i - kk * (b * p);
    uint img = j / p, pp = j - img * p;
    t[to + i] = dy[dyo + (img * k + kk) * p + pp];
}
