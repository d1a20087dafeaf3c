/*
 * tensor/norm.c: layer norm forward and backward (kernels/norm.cl), as
 * torch.nn.LayerNorm over the last dim.  Leaves out RMSNorm and batch norm,
 * and the work-group-per-row reductions a wide GPU would want (see the
 * kernel file).
 */
#include "tensor/tensor.h"

/* Checks the shape and turns the counts into kernel arguments. */
static int shape_args(size_t rows, size_t cols, cl_uint *r, cl_uint *c)
{
    int status;
    if (cols == 0)
        return mpt__fail(MPT_ERR_INVALID, "layer norm over 0 columns");
    if ((status = mpt__u32(rows, r)) < 0 || (status = mpt__u32(cols, c)) < 0)
        return status;
    if (rows > 0xffffffffu / cols) /* the elementwise kernel indexes rows * cols */
        return mpt__fail(MPT_ERR_RANGE, "layer norm of %zu x %zu elements exceeds 2^32", rows,
                         cols);
    return MPT_OK;
}

int mpt__op_layernorm_forward(const mpt__tensor_t *x, const mpt__tensor_t *gamma,
                              const mpt__tensor_t *beta, size_t rows, size_t cols, float eps,
                              mpt__tensor_t *y, mpt__tensor_t *mean, mpt__tensor_t *rstd)
{
    mpt_device_t *dev = mpt__tensor_device(y);
    cl_uint r, c, xo, go, bo, yo, mo, ro;
    int status;
    MPT_TRY(shape_args(rows, cols, &r, &c));
    MPT_TRY(mpt__check_view(x, rows * cols, dev, "layernorm", "x", &xo));
    MPT_TRY(mpt__check_view(gamma, cols, dev, "layernorm", "gamma", &go));
    MPT_TRY(mpt__check_view(beta, cols, dev, "layernorm", "beta", &bo));
    MPT_TRY(mpt__check_view(y, rows * cols, dev, "layernorm", "y", &yo));
    MPT_TRY(mpt__check_view(mean, rows, dev, "layernorm", "mean", &mo));
    MPT_TRY(mpt__check_view(rstd, rows, dev, "layernorm", "rstd", &ro));
    {
        mpt__arg_t args[] = {
            MPT_ARG(x->buf->mem), MPT_ARG(xo),
            MPT_ARG(mean->buf->mem), MPT_ARG(mo),
            MPT_ARG(rstd->buf->mem), MPT_ARG(ro),
            MPT_ARG(r), MPT_ARG(c), MPT_ARG(eps)};
        MPT_TRY(mpt__launch(dev, "norm", "mpt_layernorm_stats", rows, 0,
                            (int)(sizeof args / sizeof args[0]), args));
    }
    {
        mpt__arg_t args[] = {
            MPT_ARG(x->buf->mem), MPT_ARG(xo),
            MPT_ARG(gamma->buf->mem), MPT_ARG(go),
            MPT_ARG(beta->buf->mem), MPT_ARG(bo),
            MPT_ARG(mean->buf->mem), MPT_ARG(mo),
            MPT_ARG(rstd->buf->mem), MPT_ARG(ro),
            MPT_ARG(y->buf->mem), MPT_ARG(yo),
            MPT_ARG(r), MPT_ARG(c)};
        MPT_TRY(mpt__launch(dev, "norm", "mpt_layernorm_apply", rows * cols, 0,
                            (int)(sizeof args / sizeof args[0]), args));
    }
out:
    return status;
}

int mpt__op_layernorm_backward(const mpt__tensor_t *dy, const mpt__tensor_t *x,
                               const mpt__tensor_t *gamma, const mpt__tensor_t *mean,
                               const mpt__tensor_t *rstd, size_t rows, size_t cols,
                               float beta_acc, mpt__tensor_t *dx, mpt__tensor_t *dgamma,
                               mpt__tensor_t *dbeta)
{
    mpt_device_t *dev = mpt__tensor_device(dx);
    cl_uint r, c, dyo, xo, go, mo, ro, dxo, dgo, dbo;
    int status;
    MPT_TRY(shape_args(rows, cols, &r, &c));
    MPT_TRY(mpt__check_view(dy, rows * cols, dev, "layernorm backward", "dy", &dyo));
    MPT_TRY(mpt__check_view(x, rows * cols, dev, "layernorm backward", "x", &xo));
    MPT_TRY(mpt__check_view(gamma, cols, dev, "layernorm backward", "gamma", &go));
    MPT_TRY(mpt__check_view(mean, rows, dev, "layernorm backward", "mean", &mo));
    MPT_TRY(mpt__check_view(rstd, rows, dev, "layernorm backward", "rstd", &ro));
    MPT_TRY(mpt__check_view(dx, rows * cols, dev, "layernorm backward", "dx", &dxo));
    MPT_TRY(mpt__check_view(dgamma, cols, dev, "layernorm backward", "dgamma", &dgo));
    MPT_TRY(mpt__check_view(dbeta, cols, dev, "layernorm backward", "dbeta", &dbo));
    {
        mpt__arg_t args[] = {
            MPT_ARG(dy->buf->mem), MPT_ARG(dyo),
            MPT_ARG(x->buf->mem), MPT_ARG(xo),
            MPT_ARG(gamma->buf->mem), MPT_ARG(go),
            MPT_ARG(mean->buf->mem), MPT_ARG(mo),
            MPT_ARG(rstd->buf->mem), MPT_ARG(ro),
            MPT_ARG(dx->buf->mem), MPT_ARG(dxo),
            MPT_ARG(r), MPT_ARG(c)};
        MPT_TRY(mpt__launch(dev, "norm", "mpt_layernorm_backward_dx", rows, 0,
                            (int)(sizeof args / sizeof args[0]), args));
    }
    {
        mpt__arg_t args[] = {
            MPT_ARG(dy->buf->mem), MPT_ARG(dyo),
            MPT_ARG(x->buf->mem), MPT_ARG(xo),
            MPT_ARG(mean->buf->mem), MPT_ARG(mo),
            MPT_ARG(rstd->buf->mem), MPT_ARG(ro),
            MPT_ARG(dgamma->buf->mem), MPT_ARG(dgo),
            MPT_ARG(dbeta->buf->mem), MPT_ARG(dbo),
            MPT_ARG(r), MPT_ARG(c), MPT_ARG(beta_acc)};
        MPT_TRY(mpt__launch(dev, "norm", "mpt_layernorm_backward_params", cols, 0,
                            (int)(sizeof args / sizeof args[0]), args));
    }
out:
    return status;
}
