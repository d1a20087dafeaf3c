/*
 * engine/executor.h: runs a whole model on one device: device memory for
 * parameters, gradients, optimizer state, activations and workspaces;
 * forward, backward, gradient clipping and the optimizer update.  The
 * multi-device engine will run one of these per shard.  Never installed.
 */
#ifndef MPT_ENGINE_EXECUTOR_H
#define MPT_ENGINE_EXECUTOR_H

#include "nn/layer.h"

typedef struct {
    mpt_optimizer_t kind;
    float momentum, weight_decay, beta1, beta2, eps;
    float clip_norm; /* 0: no clipping */
} mpt__optim_cfg_t;

typedef struct mpt__executor mpt__executor_t;

/* Allocates everything for batches of up to max_batch samples and
 * initialises the parameters from seed (mpt__model_init_params). */
int mpt__executor_create(const mpt__model_t *model, mpt_device_t *dev, size_t max_batch,
                         uint64_t seed, mpt__executor_t **out);
void mpt__executor_free(mpt__executor_t *ex);

/* One training step on `batch` samples: forward, loss, backward, optional
 * clipping, update with learning rate lr.  *loss is the mean loss of the
 * batch, *grad_norm the global gradient norm before clipping (computed only
 * when clipping; else 0).  The step counter (Adam's t, dropout streams)
 * advances by one. */
int mpt__executor_train_step(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                             const mpt__optim_cfg_t *opt, float lr, double *loss,
                             double *grad_norm);
/* Forward only, in evaluation mode (dropout off), over `count` samples in
 * chunks of at most max_batch: the sum of losses and of correct argmaxes. */
int mpt__executor_evaluate(mpt__executor_t *ex, const float *x, const int32_t *y, size_t count,
                           double *loss_sum, double *correct);
/* Forward and backward without an update, for tests: logits (batch x
 * classes) and the flat gradients, copied to the host (either may be NULL). */
int mpt__executor_gradients(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                            double *loss, float *logits, float *grads);

/* Host copies of the state, for checkpoints: parameters, optimizer slots
 * (slot 0: SGD momentum or Adam m; slot 1: Adam v), the step counter. */
int mpt__executor_read_params(mpt__executor_t *ex, float *out);
int mpt__executor_write_params(mpt__executor_t *ex, const float *in);
int mpt__executor_read_slot(mpt__executor_t *ex, int slot, float *out);
int mpt__executor_write_slot(mpt__executor_t *ex, int slot, const float *in);
uint64_t mpt__executor_step(const mpt__executor_t *ex);
void mpt__executor_set_step(mpt__executor_t *ex, uint64_t step);

#endif
