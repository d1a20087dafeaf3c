/*
 * tests/whole_model.c: see whole_model.h.
 */
#include <math.h>

#include "whole_model.h"

static int upload(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch)
{
    int status;
    MPT_TRY(mpt__stage_put_input(ex, 0, x, batch));
    MPT_TRY(mpt__stage_put_labels(ex, 0, y, batch));
out:
    return status;
}

/* Forward and backward of one batch; *loss its mean. */
static int forward_backward(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                            double *loss)
{
    size_t lps = mpt__stage_model(ex)->labels_per_sample;
    double sum = 0;
    int status;
    MPT_TRY(upload(ex, x, y, batch));
    MPT_TRY(mpt__stage_forward(ex, 0, batch, 1));
    MPT_TRY(mpt__stage_backward(ex, 0, batch, 1.0f / (float)(batch * lps), 0, 0));
    MPT_TRY(mpt__stage_loss_sum(ex, 0, batch, &sum));
    *loss = sum / (double)(batch * lps);
out:
    return status;
}

int whole_train_step(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                     const mpt__optim_cfg_t *opt, float lr, double *loss, double *grad_norm)
{
    int status;
    *grad_norm = 0;
    MPT_TRY(forward_backward(ex, x, y, batch, loss));
    if (opt->clip_norm > 0) {
        double sumsq = 0;
        MPT_TRY(mpt__stage_grad_sumsq(ex, &sumsq));
        /* The norm rounded to float first, as the engine does. */
        float n = (float)sqrt(sumsq);
        double coef = (double)opt->clip_norm / ((double)n + 1e-6);
        *grad_norm = n;
        if (coef < 1.0)
            MPT_TRY(mpt__stage_scale_grads(ex, (float)coef));
    }
    MPT_TRY(mpt__stage_update(ex, opt, lr));
    mpt__executor_set_step(ex, mpt__executor_step(ex) + 1);
out:
    return status;
}

int whole_gradients(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                    double *loss, float *logits, float *grads)
{
    int status;
    MPT_TRY(forward_backward(ex, x, y, batch, loss));
    if (logits)
        MPT_TRY(mpt__stage_get_logits(ex, 0, logits, batch));
    if (grads)
        MPT_TRY(mpt__executor_read_grads(ex, grads));
out:
    return status;
}

int whole_evaluate(mpt__executor_t *ex, const float *x, const int32_t *y, size_t count,
                   double *loss_sum, double *correct)
{
    const mpt__model_t *m = mpt__stage_model(ex);
    size_t lps = m->labels_per_sample, in = mpt__shape_numel(&m->input);
    size_t max = mpt__stage_max_batch(ex);
    int status = MPT_OK;
    *loss_sum = 0, *correct = 0;
    for (size_t first = 0; first < count; first += max) {
        size_t batch = count - first < max ? count - first : max;
        double sum = 0, hits = 0;
        MPT_TRY(upload(ex, x + first * in, y + first * lps, batch));
        MPT_TRY(mpt__stage_forward(ex, 0, batch, 0));
        MPT_TRY(mpt__stage_loss_sum(ex, 0, batch, &sum));
        MPT_TRY(mpt__stage_correct(ex, 0, batch, &hits));
        *loss_sum += sum / (double)lps;
        *correct += hits / (double)lps;
    }
out:
    return status;
}
