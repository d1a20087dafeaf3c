/*
 * tests/whole_model.h: a whole model on one device driven directly through
 * the executor's stage calls (engine/executor.h), without the engine's
 * threads: what the layer, parity and engine tests compare against.  The
 * library trains only through the engine (a one-device trainer is the
 * 1x1x1 plan); these helpers are test support, compiled into the tests.
 */
#ifndef MPT_TESTS_WHOLE_MODEL_H
#define MPT_TESTS_WHOLE_MODEL_H

#include "engine/executor.h"

/* One training step on `batch` samples: forward, loss, backward, optional
 * clipping (as torch.nn.utils.clip_grad_norm_), update with learning rate
 * lr.  *loss is the mean loss of the batch, *grad_norm the global gradient
 * norm before clipping (only when clipping; else 0).  The step counter
 * advances by one. */
int whole_train_step(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                     const mpt__optim_cfg_t *opt, float lr, double *loss, double *grad_norm);
/* Forward and backward without an update: the logits (batch x
 * labels_per_sample x classes) and the flat gradients, copied to the host
 * (either may be NULL). */
int whole_gradients(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                    double *loss, float *logits, float *grads);
/* Forward only, dropout off, over count samples in chunks of the
 * executor's max_batch: the sum of losses and of correct argmaxes (per
 * sample, the mean over its labels). */
int whole_evaluate(mpt__executor_t *ex, const float *x, const int32_t *y, size_t count,
                   double *loss_sum, double *correct);

#endif
