/*
 * kernels/norm.cl: layer normalisation over the last dim of a rows x cols
 * matrix, forward and backward, as torch.nn.LayerNorm (biased variance, eps
 * inside the square root).  Valid OpenCL C 1.2 alone.
 *
 * Row statistics use one work-item per row, in two passes (mean, then the
 * mean of squared deviations): simple and numerically sound, since the
 * one-pass E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std.
 * One work-item per row leaves a wide GPU underused for few long rows; a
 * work-group reduction per row is the next step when layer norm shows up in
 * a profile.  The elementwise parts (y, and the parameter gradients per
 * column) run one work-item per element or column.
 */

/* mean[r] and rstd[r] = 1 / sqrt(var + eps) of row r. */
__kernel void mpt_layernorm_stats(__global const float *x, uint xo, __global float *mean, uint mo,
                                  __global float *rstd, uint ro, uint rows, uint cols, float eps)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *row = x + xo + (size_t)r * cols;
    float sum = 0.0f;
    for (uint c = 0; c < cols; c++)
        sum += row[c];
    float m = sum / (float)cols;
    float sq = 0.0f;
    for (uint c = 0; c < cols; c++) {
        float d = row[c] - m;
        sq += d * d;
    }
    mean[mo + r] = m;
    rstd[ro + r] = 1.0f / sqrt(sq / (float)cols + eps);
}

/* y = (x - mean) * rstd * gamma + beta, one work-item per element. */
__kernel void mpt_layernorm_apply(__global const float *x, uint xo, __global const float *gamma,
                                  uint go, __global const float *beta, uint bo,
                                  __global const float *mean, uint mo, __global const float *rstd,
                                  uint ro, __global float *y, uint yo, uint rows, uint cols)
{
    uint i = get_global_id(0);
    if (i >= rows * cols)
        return;
    uint r = i / cols, c = i - r * cols;
    y[yo + i] = (x[xo + i] - mean[mo + r]) * rstd[ro + r] * gamma[go + c] + beta[bo + c];
}

/* dx of one row: rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma. */
__kernel void mpt_layernorm_backward_dx(__global const float *dy, uint dyo,
                                        __global const float *x, uint xo,
                                        __global const float *gamma, uint go,
                                        __global const float *mean, uint mo,
                                        __global const float *rstd, uint ro, __global float *dx,
                                        uint dxo, uint rows, uint cols)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    size_t base = (size_t)r * cols;
    float m = mean[mo + r], s = rstd[ro + r];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (uint c = 0; c < cols; c++) {
        float g = dy[dyo + base + c] * gamma[go + c];
        sum_g += g;
        sum_gx += g * ((x[xo + base + c] - m) * s);
    }
    float mean_g = sum_g / (float)cols, mean_gx = sum_gx / (float)cols;
    for (uint c = 0; c < cols; c++) {
        float g = dy[dyo + base + c] * gamma[go + c];
        float xhat = (x[xo + base + c] - m) * s;
        dx[dxo + base + c] = s * (g - mean_g - xhat * mean_gx);
    }
}

/* dgamma[c] = beta_acc * dgamma[c] + sum_r dy * xhat; dbeta[c] likewise with
 * sum_r dy.  beta_acc == 0 overwrites without reading (old NaN is ignored). */
__kernel void mpt_layernorm_backward_params(__global const float *dy, uint dyo,
                                            __global const float *x, uint xo,
                                            __global const float *mean, uint mo,
                                            __global const float *rstd, uint ro,
                                            __global float *dgamma, uint dgo,
                                            __global float *dbeta, uint dbo, uint rows,
                                            uint cols, float beta_acc)
{
    uint c = get_global_id(0);
    if (c >= cols)
        return;
    float sg = 0.0f, sb = 0.0f;
    for (uint r = 0; r < rows; r++) {
        size_t i = (size_t)r * cols + c;
        float d = dy[dyo + i];
        sg += d * ((x[xo + i] - mean[mo + r]) * rstd[ro + r]);
        sb += d;
    }
    if (beta_acc != 0.0f) {
        sg += beta_acc * dgamma[dgo + c];
        sb += beta_acc * dbeta[dbo + c];
    }
    dgamma[dgo + c] = sg;
    dbeta[dbo + c] = sb;
}
