/*
 * bin/train_data.h: mpt-train's data, images or tokens (train_data.c).
 * Every function exits with a message on failure (a tool's convention).
 */
#ifndef MPT_TRAIN_DATA_H
#define MPT_TRAIN_DATA_H

#include "tool.h"

typedef struct {
    uint64_t seed, per_epoch;   /* batches per epoch */
    /* a classifier's IDX dataset */
    mpt_dataset_t *train, *test;
    mpt_loader_t *loader;
    /* a language model's tokens */
    mpt_tokens_t *tokens, *train_tokens, *val_tokens;
    size_t context, batch;
    float *x, *vx;
    int32_t *y, *vy;
    /* what evaluation runs on: the test set, or validation windows */
    const float *eval_x;
    const int32_t *eval_y;
    size_t eval_count;
    const char *eval_name;      /* "test" or "val" */
} train_data_t;

/* path: an IDX directory for a classifier, a token file (text, llm.c
 * shard, raw uint16 .bin) for a language model (labels per sample > 1). */
void train_data_open(train_data_t *d, const char *path, const mpt_model_t *model,
                     const char *model_path, size_t batch, uint64_t seed);
/* The batch of step `step` (0-based) and its place in its epoch. */
void train_data_next(train_data_t *d, uint64_t step, const float **x, const int32_t **y,
                     uint64_t *epoch, size_t *batch_index);
/* Positions the data after a resume (the loader's epoch and batch). */
void train_data_seek(train_data_t *d, uint64_t epoch, uint64_t batch_index);
void train_data_free(train_data_t *d);

#endif
