/*
 * train/dataset.c: the public dataset and loader API (mpt.h "Datasets")
 * over the internal ones of train/data.h: IDX directories, arrays in the
 * caller's memory (copied), and the seeded batch loader, the same for
 * both.  Token sets are in tokens.c.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/data.h"

/* ---- datasets and loaders --------------------------------------------------- */

struct mpt_dataset {
    mpt__dataset_t d;
};

int mpt_dataset_load_idx(const char *dir, const char *split, mpt_dataset_t **out)
{
    mpt_dataset_t *ds = calloc(1, sizeof *ds);
    *out = NULL;
    if (!ds)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int status = mpt__idx_load_dir(dir, split, &ds->d);
    if (status < 0) {
        free(ds);
        return status;
    }
    *out = ds;
    return MPT_OK;
}

void mpt_dataset_free(mpt_dataset_t *data)
{
    if (!data)
        return;
    mpt__dataset_free(&data->d);
    free(data);
}

size_t mpt_dataset_count(const mpt_dataset_t *data) { return data->d.count; }
size_t mpt_dataset_sample_floats(const mpt_dataset_t *data) { return data->d.sample_floats; }
int mpt_dataset_classes(const mpt_dataset_t *data) { return data->d.classes; }
const float *mpt_dataset_images(const mpt_dataset_t *data) { return data->d.x; }
const int32_t *mpt_dataset_labels(const mpt_dataset_t *data) { return data->d.y; }

struct mpt_loader {
    mpt__loader_t *l;
};

int mpt_loader_create(const mpt_dataset_t *data, size_t batch, uint64_t seed, mpt_loader_t **out)
{
    mpt_loader_t *lo = calloc(1, sizeof *lo);
    *out = NULL;
    if (!lo)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int status = mpt__loader_create(&data->d, batch, seed, &lo->l);
    if (status < 0) {
        free(lo);
        return status;
    }
    *out = lo;
    return MPT_OK;
}

void mpt_loader_free(mpt_loader_t *loader)
{
    if (!loader)
        return;
    mpt__loader_free(loader->l);
    free(loader);
}

size_t mpt_loader_batches(const mpt_loader_t *loader)
{
    return mpt__loader_batches(loader->l);
}

int mpt_loader_seek(mpt_loader_t *loader, uint64_t epoch, size_t batch_index)
{
    return mpt__loader_seek(loader->l, epoch, batch_index);
}

int mpt_loader_next(mpt_loader_t *loader, const float **images, const int32_t **labels,
                    uint64_t *epoch, size_t *batch_index)
{
    return mpt__loader_next(loader->l, images, labels, epoch, batch_index);
}

/* ---- datasets from memory ------------------------------------------------------ */

int mpt_dataset_from_memory(size_t count, size_t sample_floats, int classes,
                            const float *images, const int32_t *labels, mpt_dataset_t **out)
{
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_dataset_from_memory: NULL argument");
    *out = NULL;
    if (!images || !labels)
        return mpt__fail(MPT_ERR_INVALID, "dataset in memory: no images or no labels");
    if (count == 0 || sample_floats == 0 || classes < 2)
        return mpt__fail(MPT_ERR_INVALID, "dataset in memory: %zu samples of %zu floats in %d "
                         "classes (needs at least 1 sample, 1 float, 2 classes)", count,
                         sample_floats, classes);
    if (sample_floats > SIZE_MAX / sizeof(float) / count)
        return mpt__fail(MPT_ERR_RANGE, "dataset in memory: %zu x %zu floats overflow", count,
                         sample_floats);
    /* Checked here, where the index can be named, rather than as a NaN
     * loss or an out-of-range label on a device later. */
    for (size_t i = 0; i < count; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return mpt__fail(MPT_ERR_INVALID, "dataset in memory: label %zu is %d, outside "
                             "[0, %d)", i, (int)labels[i], classes);
    for (size_t i = 0; i < count * sample_floats; i++)
        if (!isfinite(images[i]))
            return mpt__fail(MPT_ERR_INVALID, "dataset in memory: sample %zu, float %zu is %g",
                             i / sample_floats, i % sample_floats, (double)images[i]);
    mpt_dataset_t *ds = calloc(1, sizeof *ds);
    float *x = malloc(count * sample_floats * sizeof *x);
    int32_t *y = malloc(count * sizeof *y);
    if (!ds || !x || !y) {
        free(ds), free(x), free(y);
        return mpt__fail(MPT_ERR_NOMEM, "dataset in memory: out of memory for %zu samples",
                         count);
    }
    memcpy(x, images, count * sample_floats * sizeof *x);
    memcpy(y, labels, count * sizeof *y);
    ds->d = (mpt__dataset_t){.count = count, .sample_floats = sample_floats,
                             .dims = {sample_floats}, .ndims = 1, .classes = classes,
                             .x = x, .y = y};
    *out = ds;
    return MPT_OK;
}
