/*
 * tensor/optim.c: launchers of kernels/optim.cl: SGD (momentum, weight
 * decay) and AdamW updates of one parameter shard, as torch.optim does
 * them element by element.
 *
 * The scalars that do not depend on the element are computed here in
 * double and passed as floats, because torch computes them in Python
 * floats (double) too: the bias corrections 1 - beta^t, lr / (1 - beta1^t),
 * sqrt(1 - beta2^t), 1 - beta and 1 - lr * wd.  The hyper-parameters are
 * validated as torch's constructors do (NaN rejected too).  Left out: the
 * optimizer state's allocation and the step counter (the engine owns
 * them), gradient clipping (mpt__op_nrm2 + mpt__op_scale).
 */
#include <math.h>

#include "tensor/tensor.h"

/* Work-group size (see elementwise.c). */
#define LOCAL 64


int mpt__op_sgd_update(mpt__tensor_t *p, const mpt__tensor_t *g, mpt__tensor_t *momentum_buf,
                       size_t n, float lr, float momentum, float weight_decay, int first_step)
{
    const char *op = "mpt__op_sgd_update";
    cl_uint po, go, bo, un, first = first_step ? 1 : 0;
    int status;
    /* As torch.optim.SGD's constructor: "not 0.0 <= lr" also rejects NaN. */
    if (!(lr >= 0.0f) || !(momentum >= 0.0f) || !(weight_decay >= 0.0f))
        return mpt__fail(MPT_ERR_INVALID, "%s: lr %g, momentum %g, weight decay %g: each must be "
                         ">= 0", op, lr, momentum, weight_decay);
    if (!p || !p->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor p is missing", op);
    mpt_device_t *dev = mpt__tensor_device(p);
    MPT_TRY(mpt__check_view(p, n, dev, op, "p", &po));
    MPT_TRY(mpt__check_view(g, n, dev, op, "g", &go));
    MPT_TRY(mpt__u32(n, &un));
    if (momentum == 0.0f) { /* torch keeps no buffer then; momentum_buf may be NULL */
        mpt__arg_t args[] = {MPT_ARG(p->buf->mem), MPT_ARG(po), MPT_ARG(g->buf->mem),
                             MPT_ARG(go),          MPT_ARG(un), MPT_ARG(lr),
                             MPT_ARG(weight_decay)};
        status = mpt__launch(dev, "optim", "mpt_sgd", n, LOCAL, 7, args);
        goto out;
    }
    MPT_TRY(mpt__check_view(momentum_buf, n, dev, op, "momentum_buf", &bo));
    mpt__arg_t args[] = {MPT_ARG(p->buf->mem), MPT_ARG(po),       MPT_ARG(g->buf->mem),
                         MPT_ARG(go),          MPT_ARG(momentum_buf->buf->mem),
                         MPT_ARG(bo),          MPT_ARG(un),       MPT_ARG(lr),
                         MPT_ARG(momentum),    MPT_ARG(weight_decay),
                         MPT_ARG(first)};
    status = mpt__launch(dev, "optim", "mpt_sgd_momentum", n, LOCAL, 11, args);
out:
    return status;
}

int mpt__op_adamw_update(mpt__tensor_t *p, const mpt__tensor_t *g, mpt__tensor_t *m,
                         mpt__tensor_t *v, size_t n, float lr, float beta1, float beta2,
                         float eps, float weight_decay, int step)
{
    const char *op = "mpt__op_adamw_update";
    cl_uint po, go, mo, vo, un;
    int status;
    /* As torch.optim.AdamW's constructor (NaN fails every test). */
    if (!(lr >= 0.0f) || !(eps >= 0.0f) || !(beta1 >= 0.0f && beta1 < 1.0f) ||
        !(beta2 >= 0.0f && beta2 < 1.0f) || !(weight_decay >= 0.0f))
        return mpt__fail(MPT_ERR_INVALID,
                         "%s: lr %g, betas (%g, %g), eps %g, weight decay %g: need lr, eps, "
                         "weight decay >= 0 and betas in [0, 1)",
                         op, lr, beta1, beta2, eps, weight_decay);
    if (step < 1)
        return mpt__fail(MPT_ERR_INVALID, "%s: step %d, steps count from 1", op, step);
    if (!p || !p->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor p is missing", op);
    mpt_device_t *dev = mpt__tensor_device(p);
    MPT_TRY(mpt__check_view(p, n, dev, op, "p", &po));
    MPT_TRY(mpt__check_view(g, n, dev, op, "g", &go));
    MPT_TRY(mpt__check_view(m, n, dev, op, "m", &mo));
    MPT_TRY(mpt__check_view(v, n, dev, op, "v", &vo));
    MPT_TRY(mpt__u32(n, &un));
    /* torch (_single_tensor_adamw): param.mul_(1 - lr * wd); bias_correction1
     * = 1 - beta1 ** step; step_size = lr / bias_correction1;
     * bias_correction2_sqrt = sqrt(1 - beta2 ** step); exp_avg.mul_(beta1)
     * .add_(grad, alpha=1 - beta1): all in Python floats, i.e. double, then
     * rounded to float where they meet the float tensors, as here. */
    double bc1 = 1.0 - pow((double)beta1, step), bc2 = 1.0 - pow((double)beta2, step);
    float decay = (float)(1.0 - (double)lr * weight_decay);
    float one_minus_b1 = (float)(1.0 - beta1), one_minus_b2 = (float)(1.0 - beta2);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    mpt__arg_t args[] = {MPT_ARG(p->buf->mem),  MPT_ARG(po),
                         MPT_ARG(g->buf->mem),  MPT_ARG(go),
                         MPT_ARG(m->buf->mem),  MPT_ARG(mo),
                         MPT_ARG(v->buf->mem),  MPT_ARG(vo),
                         MPT_ARG(un),           MPT_ARG(decay),
                         MPT_ARG(beta1),        MPT_ARG(one_minus_b1),
                         MPT_ARG(beta2),        MPT_ARG(one_minus_b2),
                         MPT_ARG(eps),          MPT_ARG(step_size),
                         MPT_ARG(bc2_sqrt)};
    status = mpt__launch(dev, "optim", "mpt_adamw", n, LOCAL, 17, args);
out:
    return status;
}
