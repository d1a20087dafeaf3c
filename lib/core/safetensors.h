/*
 * core/safetensors.h: the safetensors format, for checkpoints and test
 * fixtures.  Little-endian u64 header length N, then N bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}), padded with spaces to a multiple of
 * 8, then the data; offsets are relative to the data start, with no holes
 * and no overlaps.  Only dtypes F32, I32 and I64 are read or written.
 * Never installed.
 */
#ifndef MPT_CORE_SAFETENSORS_H
#define MPT_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

typedef enum { MPT_ST_F32, MPT_ST_I32, MPT_ST_I64 } mpt__st_dtype_t;

typedef struct {
    char *name;
    mpt__st_dtype_t dtype;
    int ndim;
    size_t shape[8];
    size_t bytes;
    void *data; /* owned by the file object */
} mpt__st_tensor_t;

typedef struct mpt__st_file mpt__st_file_t;

/* Writer: collect tensors (the data is copied) and metadata, then write
 * atomically (temporary file, fflush + fsync, rename). */
int mpt__st_create(mpt__st_file_t **out);
int mpt__st_add(mpt__st_file_t *f, const char *name, mpt__st_dtype_t dtype, int ndim,
                const size_t *shape, const void *data);
int mpt__st_set_meta(mpt__st_file_t *f, const char *key, const char *value);
int mpt__st_write(const mpt__st_file_t *f, const char *path);

/* Reader: validates the header length against the file size, the JSON,
 * every dtype/shape/offset (bytes = product(shape) * size, in bounds, no
 * overlaps or holes) and fails with MPT_ERR_PARSE naming the file and the
 * tensor on any inconsistency, MPT_ERR_NOT_FOUND/IO when unreadable. */
int mpt__st_read(const char *path, mpt__st_file_t **out);
void mpt__st_free(mpt__st_file_t *f);

size_t mpt__st_count(const mpt__st_file_t *f);
const mpt__st_tensor_t *mpt__st_at(const mpt__st_file_t *f, size_t i);
/* The tensor called name, NULL if absent. */
const mpt__st_tensor_t *mpt__st_get(const mpt__st_file_t *f, const char *name);
/* The metadata value for key, NULL if absent. */
const char *mpt__st_meta(const mpt__st_file_t *f, const char *key);

#endif
