/*
 * train/dataset.c: the public dataset and loader API (mpt.h "Datasets")
 * over the internal ones of train/data.h: IDX directories, and the seeded
 * batch loader.  Token sets are in tokens.c.
 */
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
