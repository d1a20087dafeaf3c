/*
 * bin/train_data.c: where mpt-train's batches and evaluation set come
 * from: an IDX image dataset for a classifier (a shuffling loader over
 * the training set, the test set to evaluate), or a token file for a
 * language model (docs/data.md: random windows of the context from the
 * first 90% of the tokens, chosen by the seed and the step, and
 * consecutive windows of the last 10% to evaluate on).
 */
#include <stdlib.h>

#include "train_data.h"

/* Windows of the validation tokens the validation loss is taken over: 64
 * windows of 256 tokens is 16 k tokens, a standard error of the mean loss
 * well under 1%, for about a third of a training step's time. */
#define EVAL_WINDOWS 64
/* The share of the tokens held out for validation. */
#define VAL_FRACTION 0.1

static void open_images(train_data_t *d, const char *dir, const mpt_model_t *model,
                        const char *model_path, size_t batch, uint64_t seed)
{
    tool_check(mpt_dataset_load_idx(dir, "train", &d->train), "loading the training set");
    tool_check(mpt_dataset_load_idx(dir, "t10k", &d->test), "loading the test set");
    const mpt_dataset_t *sets[2] = {d->train, d->test};
    for (int i = 0; i < 2; i++) {
        if (mpt_dataset_sample_floats(sets[i]) != mpt_model_input_floats(model))
            tool_die("model %s takes %zu inputs per sample, the %s set in %s has %zu", model_path,
                     mpt_model_input_floats(model), i ? "test" : "training", dir,
                     mpt_dataset_sample_floats(sets[i]));
        if (mpt_dataset_classes(sets[i]) > mpt_model_classes(model))
            tool_die("model %s has %d classes, the %s set in %s has labels up to %d", model_path,
                     mpt_model_classes(model), i ? "test" : "training", dir,
                     mpt_dataset_classes(sets[i]) - 1);
    }
    tool_check(mpt_loader_create(d->train, batch, seed, &d->loader), "creating the loader");
    d->per_epoch = mpt_loader_batches(d->loader); /* >= 1: the loader checked */
    d->eval_x = mpt_dataset_images(d->test);
    d->eval_y = mpt_dataset_labels(d->test);
    d->eval_count = mpt_dataset_count(d->test);
    d->eval_name = "test";
}

static void open_tokens(train_data_t *d, const char *path, const mpt_model_t *model,
                        const char *model_path, size_t batch)
{
    d->context = mpt_model_labels_per_sample(model);
    size_t vocab = (size_t)mpt_model_classes(model);
    tool_check(mpt_tokens_load(path, &d->tokens), "loading the tokens");
    if (mpt_tokens_vocab(d->tokens) > vocab)
        tool_check(mpt_tokens_check_vocab(d->tokens, vocab), "checking the tokens");
    tool_check(mpt_tokens_split(d->tokens, VAL_FRACTION, &d->train_tokens, &d->val_tokens),
               "splitting the tokens");
    /* Both parts must hold a whole window plus its last label. */
    size_t need = d->context + 1, have = mpt_tokens_count(d->train_tokens);
    if (have < need || !d->val_tokens || mpt_tokens_count(d->val_tokens) < need)
        tool_die("%s: %zu tokens: too few for model %s, whose context of %zu tokens needs at "
                 "least %zu in the training part (90%%) and %zu in the validation part (10%%)",
                 path, mpt_tokens_count(d->tokens), model_path, d->context, need, need);
    /* An epoch: as many windows as the training part has tokens. */
    d->per_epoch = have / (batch * d->context) ? have / (batch * d->context) : 1;
    d->batch = batch;
    size_t windows = mpt_tokens_windows(d->val_tokens, d->context);
    d->eval_count = windows < EVAL_WINDOWS ? windows : EVAL_WINDOWS;
    d->x = malloc(batch * d->context * sizeof *d->x);
    d->y = malloc(batch * d->context * sizeof *d->y);
    d->vx = malloc(d->eval_count * d->context * sizeof *d->vx);
    d->vy = malloc(d->eval_count * d->context * sizeof *d->vy);
    if (!d->x || !d->y || !d->vx || !d->vy)
        tool_die("out of memory for batches of %zu tokens", batch * d->context);
    tool_check(mpt_tokens_sequential(d->val_tokens, d->context, 0, d->eval_count, d->vx, d->vy),
               "reading the validation windows");
    d->eval_x = d->vx, d->eval_y = d->vy, d->eval_name = "val";
}

void train_data_open(train_data_t *d, const char *path, const mpt_model_t *model,
                     const char *model_path, size_t batch, uint64_t seed)
{
    *d = (train_data_t){.seed = seed};
    if (mpt_model_labels_per_sample(model) > 1)
        open_tokens(d, path, model, model_path, batch);
    else
        open_images(d, path, model, model_path, batch, seed);
}

void train_data_next(train_data_t *d, uint64_t step, const float **x, const int32_t **y,
                     uint64_t *epoch, size_t *batch_index)
{
    if (d->loader) {
        tool_check(mpt_loader_next(d->loader, x, y, epoch, batch_index), "reading a batch");
        return;
    }
    /* Window b of step s depends on (seed, s, b) alone: a resumed run
     * reads the batches the interrupted one would have. */
    tool_check(mpt_tokens_batch(d->train_tokens, d->context, d->batch, d->seed, step, d->x, d->y),
               "reading a batch");
    *x = d->x, *y = d->y;
    *epoch = step / d->per_epoch, *batch_index = (size_t)(step % d->per_epoch);
}

void train_data_seek(train_data_t *d, uint64_t epoch, uint64_t batch_index)
{
    if (d->loader)
        tool_check(mpt_loader_seek(d->loader, epoch, batch_index), "positioning the data");
    /* Token batches are drawn by step: nothing to move. */
}

void train_data_free(train_data_t *d)
{
    mpt_loader_free(d->loader);
    mpt_dataset_free(d->train);
    mpt_dataset_free(d->test);
    mpt_tokens_free(d->train_tokens);
    mpt_tokens_free(d->val_tokens);
    mpt_tokens_free(d->tokens);
    free(d->x);
    free(d->y);
    free(d->vx);
    free(d->vy);
}
