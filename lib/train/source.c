/*
 * train/source.c: a training run's data (mpt_data_t): where each step's
 * batch and the evaluation set come from, for mpt_trainer_fit and for any
 * program's own loop.
 *
 * A classifier's: a training set batched by the seeded shuffling loader
 * (mpt_loader_t), and a test set to evaluate on.  A language model's: one
 * token set split 90 / 10 (docs/data.md); random windows of the context
 * from the first part, window b of step s chosen by (seed, s, b) alone, so
 * that a resumed run reads the batches the interrupted one would have; the
 * first EVAL_WINDOWS consecutive windows of the last part to evaluate on.
 * Files (an IDX directory, a token file) and memory take the same path:
 * the file openers only load, then hand over to the memory constructors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/internal.h"

/* Windows of the validation tokens the validation loss is taken over: 64
 * windows of 256 tokens is 16 k tokens, a standard error of the mean loss
 * well under 1%, for about a third of a training step's time. */
#define EVAL_WINDOWS 64
/* The share of the tokens held out for validation. */
#define VAL_FRACTION 0.1

struct mpt_data {
    uint64_t seed, per_epoch; /* batches per epoch, >= 1 */
    size_t batch, context;    /* context: labels per sample, 1 for a classifier */
    /* a classifier's */
    mpt_dataset_t *train, *test;
    mpt_loader_t *loader;
    /* a language model's */
    mpt_tokens_t *tokens, *train_tokens, *val_tokens;
    float *x, *vx;
    int32_t *y, *vy;
    /* what evaluation runs on */
    const float *eval_x;
    const int32_t *eval_y;
    size_t eval_count;
    const char *eval_name;
    char identity[160]; /* mpt_data_identity */
};

void mpt_data_free(mpt_data_t *d)
{
    if (!d)
        return;
    mpt_loader_free(d->loader);
    mpt_dataset_free(d->train);
    mpt_dataset_free(d->test);
    mpt_tokens_free(d->train_tokens); /* views of tokens: first */
    mpt_tokens_free(d->val_tokens);
    mpt_tokens_free(d->tokens);
    free(d->x);
    free(d->y);
    free(d->vx);
    free(d->vy);
    free(d);
}

static mpt_data_t *data_new(const mpt_model_t *model, size_t batch, uint64_t seed)
{
    mpt_data_t *d = calloc(1, sizeof *d);
    if (d) {
        d->seed = seed, d->batch = batch;
        d->context = mpt_model_labels_per_sample(model);
    }
    return d;
}

/* Whether a set's samples are the model's inputs and its labels its
 * classes. */
static int check_images(const mpt_dataset_t *set, const char *which, const mpt_model_t *model)
{
    if (mpt_dataset_sample_floats(set) != mpt_model_input_floats(model))
        return mpt__fail(MPT_ERR_INVALID,
                         "model %s takes %zu inputs per sample, the %s set has %zu",
                         mpt_model_name(model), mpt_model_input_floats(model), which,
                         mpt_dataset_sample_floats(set));
    if (mpt_dataset_classes(set) > mpt_model_classes(model))
        return mpt__fail(MPT_ERR_INVALID, "model %s has %d classes, the %s set has labels up to %d",
                         mpt_model_name(model), mpt_model_classes(model), which,
                         mpt_dataset_classes(set) - 1);
    return MPT_OK;
}

/* The bytes of the data its identity hashes: the first MB, enough to tell
 * two datasets apart without reading gigabytes at every start. */
#define IDENTITY_BYTES (1u << 20)

static void identify_images(mpt_data_t *d)
{
    const mpt_dataset_t *t = d->train;
    size_t n = mpt_dataset_count(t), floats = mpt_dataset_sample_floats(t);
    size_t bytes = n * floats * sizeof(float);
    uLong crc = crc32(0L, (const Bytef *)mpt_dataset_images(t),
                      (uInt)(bytes < IDENTITY_BYTES ? bytes : IDENTITY_BYTES));
    crc = crc32(crc, (const Bytef *)mpt_dataset_labels(t), (uInt)(n * sizeof(int32_t)));
    snprintf(d->identity, sizeof d->identity, "images %zu x %zu, %d classes, crc32 %08lx", n,
             floats, mpt_dataset_classes(t), (unsigned long)crc);
}

/* The first windows of the training part, as floats, up to a MB. */
static int identify_tokens(mpt_data_t *d)
{
    size_t ctx = d->context, windows = mpt_tokens_windows(d->train_tokens, ctx);
    size_t want = IDENTITY_BYTES / sizeof(float) / ctx;
    size_t k = windows < want ? windows : want;
    float *x = malloc(k * ctx * sizeof *x);
    int32_t *y = malloc(k * ctx * sizeof *y);
    if (!x || !y) {
        free(x), free(y);
        return mpt__fail(MPT_ERR_NOMEM, "data: out of memory");
    }
    int status = mpt_tokens_sequential(d->train_tokens, ctx, 0, k, x, y);
    uLong crc = crc32(0L, (const Bytef *)x, (uInt)(k * ctx * sizeof *x));
    snprintf(d->identity, sizeof d->identity, "tokens %zu, vocab %zu, crc32 %08lx",
             mpt_tokens_count(d->tokens), mpt_tokens_vocab(d->tokens), (unsigned long)crc);
    free(x), free(y);
    return status;
}

const char *mpt_data_identity(const mpt_data_t *d)
{
    return d ? d->identity : "";
}

int mpt_data_from_datasets(mpt_dataset_t *train, mpt_dataset_t *eval, const mpt_model_t *model,
                           size_t batch, uint64_t seed, mpt_data_t **out)
{
    mpt_data_t *d = NULL;
    int status = MPT_OK;
    if (!out || !model || !train || !eval) {
        status = mpt__fail(MPT_ERR_INVALID, "mpt_data_from_datasets: NULL argument");
    } else if (mpt_model_labels_per_sample(model) != 1) {
        status = mpt__fail(MPT_ERR_INVALID,
                           "model %s is a language model: its data is tokens "
                           "(mpt_data_from_tokens), not labelled images",
                           mpt_model_name(model));
    } else if ((status = check_images(train, "training", model)) >= 0 &&
               (status = check_images(eval, "evaluation", model)) >= 0) {
        if (!(d = data_new(model, batch, seed)))
            status = mpt__fail(MPT_ERR_NOMEM, "data: out of memory");
    }
    if (status < 0) { /* ownership passed: nothing may leak */
        mpt_dataset_free(train);
        mpt_dataset_free(eval);
        return status;
    }
    d->train = train, d->test = eval;
    if ((status = mpt_loader_create(train, batch, seed, &d->loader)) < 0) {
        mpt_data_free(d);
        return status;
    }
    d->per_epoch = mpt_loader_batches(d->loader); /* >= 1: the loader checked */
    d->eval_x = mpt_dataset_images(eval);
    d->eval_y = mpt_dataset_labels(eval);
    d->eval_count = mpt_dataset_count(eval);
    d->eval_name = "test";
    identify_images(d);
    *out = d;
    return MPT_OK;
}

/* Splits d->tokens and prepares the batch and validation buffers. */
static int open_tokens(mpt_data_t *d, const mpt_model_t *model)
{
    size_t vocab = (size_t)mpt_model_classes(model), ctx = d->context;
    if (mpt_tokens_vocab(d->tokens) > vocab)
        MPT_TRY_RETURN(mpt_tokens_check_vocab(d->tokens, vocab));
    MPT_TRY_RETURN(mpt_tokens_split(d->tokens, VAL_FRACTION, &d->train_tokens, &d->val_tokens));
    /* Both parts must hold a whole window plus its last label. */
    size_t need = ctx + 1, have = mpt_tokens_count(d->train_tokens);
    if (have < need || !d->val_tokens || mpt_tokens_count(d->val_tokens) < need)
        return mpt__fail(MPT_ERR_INVALID,
                         "%zu tokens: too few for model %s, whose context of %zu tokens needs "
                         "at least %zu in the training part (90%%) and %zu in the validation "
                         "part (10%%)",
                         mpt_tokens_count(d->tokens), mpt_model_name(model), ctx, need, need);
    /* An epoch: as many windows as the training part has tokens. */
    d->per_epoch = have / (d->batch * ctx) ? have / (d->batch * ctx) : 1;
    size_t windows = mpt_tokens_windows(d->val_tokens, ctx);
    d->eval_count = windows < EVAL_WINDOWS ? windows : EVAL_WINDOWS;
    d->x = malloc(d->batch * ctx * sizeof *d->x);
    d->y = malloc(d->batch * ctx * sizeof *d->y);
    d->vx = malloc(d->eval_count * ctx * sizeof *d->vx);
    d->vy = malloc(d->eval_count * ctx * sizeof *d->vy);
    if (!d->x || !d->y || !d->vx || !d->vy)
        return mpt__fail(MPT_ERR_NOMEM, "data: out of memory for batches of %zu tokens",
                         d->batch * ctx);
    MPT_TRY_RETURN(mpt_tokens_sequential(d->val_tokens, ctx, 0, d->eval_count, d->vx, d->vy));
    d->eval_x = d->vx, d->eval_y = d->vy, d->eval_name = "val";
    return identify_tokens(d);
}

int mpt_data_from_tokens(mpt_tokens_t *tokens, const mpt_model_t *model, size_t batch,
                         uint64_t seed, mpt_data_t **out)
{
    mpt_data_t *d = NULL;
    int status = MPT_OK;
    if (!out || !model || !tokens)
        status = mpt__fail(MPT_ERR_INVALID, "mpt_data_from_tokens: NULL argument");
    else if (mpt_model_labels_per_sample(model) < 2)
        status = mpt__fail(MPT_ERR_INVALID,
                           "model %s is a classifier: its data is labelled images "
                           "(mpt_data_from_datasets), not tokens",
                           mpt_model_name(model));
    else if (batch == 0)
        status = mpt__fail(MPT_ERR_INVALID, "data: batch of 0 windows");
    else if (!(d = data_new(model, batch, seed)))
        status = mpt__fail(MPT_ERR_NOMEM, "data: out of memory");
    if (status < 0) {
        mpt_tokens_free(tokens);
        return status;
    }
    d->tokens = tokens;
    if ((status = open_tokens(d, model)) < 0) {
        mpt_data_free(d);
        return status;
    }
    *out = d;
    return MPT_OK;
}

int mpt_data_open(const char *path, const mpt_model_t *model, size_t batch, uint64_t seed,
                  mpt_data_t **out)
{
    if (!path || !model || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_data_open: NULL argument");
    if (mpt_model_labels_per_sample(model) > 1) {
        mpt_tokens_t *tokens = NULL;
        MPT_TRY_RETURN(mpt_tokens_load(path, &tokens));
        int status = mpt_data_from_tokens(tokens, model, batch, seed, out);
        return status < 0 ? mpt__fail_context(status, "token file %s", path) : status;
    }
    mpt_dataset_t *train = NULL, *test = NULL;
    int status = mpt_dataset_load_idx(path, "train", &train);
    if (status >= 0 && (status = mpt_dataset_load_idx(path, "t10k", &test)) < 0)
        mpt_dataset_free(train);
    if (status >= 0 && (status = mpt_data_from_datasets(train, test, model, batch, seed, out)) < 0)
        return mpt__fail_context(status, "dataset %s", path);
    return status;
}

uint64_t mpt_data_batches_per_epoch(const mpt_data_t *d)
{
    return d ? d->per_epoch : 0;
}

size_t mpt_data_batch(const mpt_data_t *d)
{
    return d ? d->batch : 0;
}

int mpt_data_next(mpt_data_t *d, uint64_t step, const float **x, const int32_t **y,
                  mpt_data_position_t *pos)
{
    uint64_t epoch;
    size_t bi;
    if (!d || !x || !y)
        return mpt__fail(MPT_ERR_INVALID, "mpt_data_next: NULL argument");
    if (d->loader) {
        MPT_TRY_RETURN(mpt_loader_next(d->loader, x, y, &epoch, &bi));
    } else {
        MPT_TRY_RETURN(mpt_tokens_batch(d->train_tokens, d->context, d->batch, d->seed, step, d->x,
                                 d->y));
        *x = d->x, *y = d->y;
        epoch = step / d->per_epoch, bi = (size_t)(step % d->per_epoch);
    }
    if (pos)
        pos->epoch = epoch, pos->batch_index = bi;
    return MPT_OK;
}

int mpt_data_seek(mpt_data_t *d, const mpt_data_position_t *pos)
{
    if (!d || !pos)
        return mpt__fail(MPT_ERR_INVALID, "mpt_data_seek: NULL argument");
    if (pos->batch_index >= d->per_epoch)
        return mpt__fail(MPT_ERR_RANGE, "data: batch %llu of an epoch of %llu batches",
                         (unsigned long long)pos->batch_index,
                         (unsigned long long)d->per_epoch);
    if (d->loader)
        return mpt_loader_seek(d->loader, pos->epoch, (size_t)pos->batch_index);
    return MPT_OK; /* token batches are drawn by step: nothing to move */
}

void mpt_data_eval_set(const mpt_data_t *d, const float **x, const int32_t **y, size_t *count,
                       const char **name)
{
    if (x)
        *x = d ? d->eval_x : NULL;
    if (y)
        *y = d ? d->eval_y : NULL;
    if (count)
        *count = d ? d->eval_count : 0;
    if (name)
        *name = d ? d->eval_name : NULL;
}
