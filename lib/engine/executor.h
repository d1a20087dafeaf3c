/*
 * engine/executor.h: runs a contiguous range of a model's layers on one
 * device: device memory for that range's parameters, gradients, optimizer
 * state, activations and workspaces; forward, backward, gradient
 * accumulation over micro-batches and the optimizer update.  The engine
 * drives one per worker (a pipeline stage, or the whole model on one
 * device: the range of every layer, mpt__executor_create); tests drive
 * whole-model ones directly (tests/whole_model.c).  Never installed.
 */
#ifndef MPT_ENGINE_EXECUTOR_H
#define MPT_ENGINE_EXECUTOR_H

#include "nn/layer.h"

typedef struct {
    mpt_optimizer_t kind;
    float momentum, weight_decay, beta1, beta2, eps;
    float clip_norm; /* 0: no clipping */
    int skip_nonfinite; /* a step whose global gradient norm or loss is not finite
                         * applies no update (engine/schedule.c) */
} mpt__optim_cfg_t;

typedef struct mpt__executor mpt__executor_t;

/* ---- a whole model on one device ------------------------------------------ */

/* Allocates everything for batches of up to max_batch samples and
 * initialises the parameters from seed (mpt__model_init_params). */
int mpt__executor_create(const mpt__model_t *model, mpt_device_t *dev, size_t max_batch,
                         uint64_t seed, mpt__executor_t **out);
void mpt__executor_free(mpt__executor_t *ex);

/* Host copies of the state of the executor's range (the whole model for
 * mpt__executor_create), for checkpoints: parameters, optimizer slots
 * (slot 0: SGD momentum or Adam m; slot 1: Adam v), gradients, the step
 * counter. */
int mpt__executor_read_params(mpt__executor_t *ex, float *out);
int mpt__executor_write_params(mpt__executor_t *ex, const float *in);
int mpt__executor_read_slot(mpt__executor_t *ex, int slot, float *out);
int mpt__executor_write_slot(mpt__executor_t *ex, int slot, const float *in);
int mpt__executor_read_grads(mpt__executor_t *ex, float *out);
int mpt__executor_write_grads(mpt__executor_t *ex, const float *in);
uint64_t mpt__executor_step(const mpt__executor_t *ex);
void mpt__executor_set_step(mpt__executor_t *ex, uint64_t step);
/* The optimizer updates applied so far, when steps were skipped (a
 * non-finite step, mpt_train_config_t.on_nonfinite): set after
 * mpt__executor_set_step, which sets them to the step. */
void mpt__executor_set_updates(mpt__executor_t *ex, uint64_t updates);

/* ---- a pipeline stage ------------------------------------------------------ */

/* Layers [first, last] on dev, micro-batches of up to max_batch samples,
 * `slots` micro-batches in flight (each keeps its activations from forward
 * to backward); `accumulates`: backward may add into the gradients (2+
 * micro-batches a step), which takes a second gradient buffer.  Parameters are the model's elements
 * [mpt__stage_param_first, + mpt__stage_param_count), initialised from
 * `init` (the whole model's initial parameters, host memory). */
int mpt__stage_create(const mpt__model_t *model, mpt_device_t *dev, size_t first, size_t last,
                      size_t max_batch, size_t slots, int accumulates, uint64_t seed,
                      const float *init, mpt__executor_t **out);
/* The same with options: MPT__STAGE_ZERO (ZeRO-1, engine/data_parallel.c)
 * makes no optimizer state: mpt__stage_shard_slots then makes it for
 * `floats` elements (the replica's shards, packed), mpt__stage_update_range
 * updates parameter elements [at, at + count) of the range with slot
 * elements [slot_at, + count), and mpt__stage_slot_io reads (out) or
 * writes (in) packed slot elements.  MPT__STAGE_RECOMPUTE keeps of each
 * micro-batch slot only its stage input and runs the forward again at the
 * start of its backward, in one activation region shared by the slots: an
 * output, logits or correct count of a slot can then be read only before
 * another slot's forward or backward.
 * MPT__STAGE_ZERO2 (with MPT__STAGE_ZERO; a stage that does not accumulate)
 * makes no whole gradient buffer either: mpt__stage_shard_slots makes one
 * that holds, during a backward, each layer's gradients at
 * mpt__stage_grads_at (valid until the next layer's backward: read them
 * in queue order), and after it the packed shard of the gradients, which
 * mpt__stage_update_range reads from slot_at like the slots.
 */
enum { MPT__STAGE_ZERO = 1, MPT__STAGE_RECOMPUTE = 2, MPT__STAGE_ZERO2 = 4 };
int mpt__stage_create_with(const mpt__model_t *model, mpt_device_t *dev, size_t first,
                           size_t last, size_t max_batch, size_t slots, int accumulates,
                           uint64_t seed, const float *init, unsigned flags,
                           mpt__executor_t **out);
int mpt__stage_shard_slots(mpt__executor_t *ex, size_t floats);
int mpt__stage_update_range(mpt__executor_t *ex, const mpt__optim_cfg_t *opt, float lr,
                            size_t at, size_t count, size_t slot_at);
int mpt__stage_slot_io(mpt__executor_t *ex, int slot, size_t slot_at, size_t count, float *out,
                       const float *in);
/* The device buffer of the range's parameters (elements from
 * mpt__stage_param_first). */
mpt_buffer_t *mpt__executor_params_buffer(mpt__executor_t *ex);
size_t mpt__stage_param_first(const mpt__executor_t *ex);
size_t mpt__stage_max_batch(const mpt__executor_t *ex);
const mpt__model_t *mpt__stage_model(const mpt__executor_t *ex);
size_t mpt__stage_param_count(const mpt__executor_t *ex);
/* Floats per sample entering the stage (its first layer's input) and
 * leaving it (its last layer's output; 0 when the stage ends with the loss). */
size_t mpt__stage_in_floats(const mpt__executor_t *ex);
size_t mpt__stage_out_floats(const mpt__executor_t *ex);
int mpt__stage_is_last(const mpt__executor_t *ex);

/* The input of micro-batch `slot` (images for the first stage, the
 * previous stage's output otherwise), and its labels (last stage). */
int mpt__stage_put_input(mpt__executor_t *ex, size_t slot, const float *x, size_t batch);
int mpt__stage_put_labels(mpt__executor_t *ex, size_t slot, const int32_t *y, size_t batch);
/* The index in the step's whole batch of slot `slot`'s first sample (0
 * until set): a replica's share and a micro-batch start past 0, and
 * dropout keys its masks by the whole batch's sample (nn/layer.h).  Set
 * before the slot's forward; its backward reads the same. */
int mpt__stage_set_first_sample(mpt__executor_t *ex, size_t slot, size_t sample);
/* Forward of the stage's layers on slot `slot`; `training` turns dropout
 * on.  The loss stage writes per-sample losses (mpt__stage_loss_sum). */
int mpt__stage_forward(mpt__executor_t *ex, size_t slot, size_t batch, int training);
int mpt__stage_get_output(mpt__executor_t *ex, size_t slot, float *y, size_t batch);
int mpt__stage_loss_sum(mpt__executor_t *ex, size_t slot, size_t batch, double *sum);
/* Starts reading slot `slot`'s loss rows without waiting, so that what the
 * host queues next (the update) need not finish before mpt__stage_loss_sum
 * of that slot, which then waits for the read alone. */
int mpt__stage_loss_start(mpt__executor_t *ex, size_t slot, size_t batch);
/* The logits of slot `slot` (the input of the loss layer, last stage):
 * batch x labels_per_sample x classes floats. */
int mpt__stage_get_logits(mpt__executor_t *ex, size_t slot, float *logits, size_t batch);
/* Correct argmaxes of the logits of slot `slot` (last stage). */
int mpt__stage_correct(mpt__executor_t *ex, size_t slot, size_t batch, double *correct);
/* The gradient of the stage's output for the next backward (not for the
 * last stage, whose loss layer makes its own). */
int mpt__stage_put_dy(mpt__executor_t *ex, const float *dy, size_t batch);
/* Backward of slot `slot`: parameter gradients scaled by loss_scale at the
 * loss (1 / the whole step's batch), written when `accumulate` is 0 and
 * added otherwise (micro-batches after the first).  `want_dx`: keep the
 * gradient of the stage's input for mpt__stage_get_dx. */
int mpt__stage_backward(mpt__executor_t *ex, size_t slot, size_t batch, float loss_scale,
                        int accumulate, int want_dx);
int mpt__stage_get_dx(mpt__executor_t *ex, float *dx, size_t batch);
/* A function called after each layer's backward (its index), once that
 * layer's gradients are final for this backward; NULL for none. */
typedef void (*mpt__layer_hook_fn)(void *arg, size_t layer);
void mpt__stage_set_layer_hook(mpt__executor_t *ex, mpt__layer_hook_fn fn, void *arg);
/* The device buffer of the range's gradients (elements from
 * mpt__stage_param_first), and the device bytes the executor allocated. */
mpt_buffer_t *mpt__executor_grads_buffer(mpt__executor_t *ex);
/* Where in that buffer (floats) layer `layer`'s first gradient element
 * lies after its backward: its place in the range, or under ZeRO-2 in the
 * window. */
size_t mpt__stage_grads_at(const mpt__executor_t *ex, size_t layer);
size_t mpt__executor_device_bytes(const mpt__executor_t *ex);
/* Sum of squares of the stage's gradients, their scaling (clipping), the
 * optimizer update with learning rate lr at the current step. */
int mpt__stage_grad_sumsq(mpt__executor_t *ex, double *sumsq);
int mpt__stage_scale_grads(mpt__executor_t *ex, float coef);
int mpt__stage_update(mpt__executor_t *ex, const mpt__optim_cfg_t *opt, float lr);

/* A stage running a tied layer (lm_head) without the earlier stage that
 * owns its weight holds a copy of it (see executor.c): the model elements
 * it copies (*model_first, the count returned; 0: no copy).  The copy's
 * state is written from the owner's values (`what` < 0: parameters, else an
 * optimizer slot; `in` points at the copied elements); its gradient read
 * after backward and overwritten with the summed one before the update. */
size_t mpt__stage_tied_copy(const mpt__executor_t *ex, size_t *model_first);
int mpt__stage_write_tied(mpt__executor_t *ex, int what, const float *in);
int mpt__stage_read_tied_grads(mpt__executor_t *ex, float *out);
int mpt__stage_write_tied_grads(mpt__executor_t *ex, const float *in);
/* The owner's side: read, or add host values to, the stage's gradients of
 * model elements [model_first, + count).  The device buffer the values
 * travel through is reserved before the first step, so that the stage's
 * memory counts it; adding more than was reserved is refused. */
int mpt__stage_reserve_addend(mpt__executor_t *ex, size_t count);
int mpt__stage_read_grads_at(mpt__executor_t *ex, size_t model_first, size_t count, float *out);
int mpt__stage_add_grads_at(mpt__executor_t *ex, size_t model_first, size_t count,
                            const float *in);

#endif
