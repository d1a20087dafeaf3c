/*
 * train/data.h: datasets in host memory and the batch loader.
 * Never installed.
 *
 * IDX (MNIST / Fashion-MNIST): big-endian magic 0x00000801 (uint8 labels,
 * 1 dim) or 0x00000803 (uint8 images, 3 dims), then the dims as uint32,
 * then the bytes; plain or gzip (zlib's gzread reads both).
 */
#ifndef MPT_TRAIN_DATA_H
#define MPT_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* A classification dataset: count samples of sample_floats floats each
 * (images normalised), with int32 labels in [0, classes). */
typedef struct {
    size_t count;
    size_t sample_floats; /* e.g. 784 */
    size_t dims[3];       /* per-sample shape, e.g. {1, 28, 28} */
    int ndims;
    int classes;          /* 1 + the largest label */
    float *x;             /* count * sample_floats */
    int32_t *y;           /* count */
} mpt__dataset_t;

/* Reads an IDX image file and its label file (".gz" or plain) into a
 * dataset; pixel bytes become (b / 255 - mean) / std.  Errors name the file
 * and the reason: MPT_ERR_NOT_FOUND/IO for unreadable files, MPT_ERR_PARSE
 * for a wrong magic, a dims/size mismatch, a truncated file, or image and
 * label counts that differ. */
int mpt__idx_load(const char *images_path, const char *labels_path, float mean, float std,
                  mpt__dataset_t *out);
/* Reads the Fashion-MNIST / MNIST layout of a directory:
 * {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; split is "train" or
 * "t10k".  Uses mean 0.2860 and std 0.3530 (Fashion-MNIST's training set). */
int mpt__idx_load_dir(const char *dir, const char *split, mpt__dataset_t *out);
void mpt__dataset_free(mpt__dataset_t *d);

/* Seeded order of an epoch: a permutation of [0, count) that depends only on
 * (seed, epoch): a Fisher-Yates shuffle drawing from mpt__rng_u32(seed,
 * stream = MPT_RNG_STREAM(MPT_RNG_SHUFFLE, epoch), index = step of
 * the shuffle).  Caller owns *out (free). */
int mpt__epoch_order(uint64_t seed, uint64_t epoch, size_t count, uint32_t **out);

/* The batch loader: assembles batch b of an epoch (samples order[b*B ..])
 * into host buffers on a background thread while the device works on the
 * previous batch.  The last partial batch of an epoch is dropped, so every
 * step sees exactly `batch` samples. */
typedef struct mpt__loader mpt__loader_t;

int mpt__loader_create(const mpt__dataset_t *data, size_t batch, uint64_t seed,
                       mpt__loader_t **out);
void mpt__loader_free(mpt__loader_t *l);
/* Batches per epoch (count / batch). */
size_t mpt__loader_batches(const mpt__loader_t *l);
/* Positions the loader at (epoch, batch index) (used on resume), and starts
 * preparing that batch. */
int mpt__loader_seek(mpt__loader_t *l, uint64_t epoch, size_t batch_index);
/* Waits for the prepared batch and returns pointers valid until the next
 * call: x (batch * sample_floats floats), y (batch labels), and which
 * (epoch, batch index) it is; then starts preparing the following one
 * (wrapping to the next epoch).  */
int mpt__loader_next(mpt__loader_t *l, const float **x, const int32_t **y, uint64_t *epoch,
                     size_t *batch_index);

#endif
