/*
 * tests/fuzz/fuzz_safetensors.c: libFuzzer harness for the safetensors
 * reader (mpt__st_read, lib/core/safetensors.c), the format of checkpoints
 * and fixtures.  The input is the whole file, written to a scratch file
 * because the reader takes a path.  Properties: an accepted file's tensors
 * have the bytes their dtype and shape say and can be found by name; and
 * what the writer makes of them (mpt__st_write, as a checkpoint is
 * written) reads back with the same names, shapes and bytes: the writer
 * never produces a file its own reader refuses.  (Metadata is not copied:
 * the file object has no way to list its keys.)
 */
#include <stdint.h>
#include <string.h>

#include "core/safetensors.h"
#include "fuzz_util.h"

static size_t dtype_size(mpt__st_dtype_t t)
{
    return t == MPT_ST_I64 ? 8 : 4;
}

/* Writes f's tensors to a second scratch file and checks what comes back. */
static void check_rewrite(const mpt__st_file_t *f)
{
    char path[4096];
    mpt__st_file_t *w = NULL, *back = NULL;
    /* An empty file first, for its path; the writer replaces it. */
    fuzz_file("out.safetensors", (const uint8_t *)"", 0, path, sizeof path);
    FUZZ_CHECK(mpt__st_create(&w) == MPT_OK);
    for (size_t i = 0; i < mpt__st_count(f); i++) {
        const mpt__st_tensor_t *t = mpt__st_at(f, i);
        FUZZ_CHECK(mpt__st_add(w, t->name, t->dtype, t->ndim, t->shape, t->data) == MPT_OK);
    }
    FUZZ_CHECK(mpt__st_write(w, path) == MPT_OK);
    FUZZ_CHECK(mpt__st_read(path, &back) == MPT_OK);
    FUZZ_CHECK(mpt__st_count(back) == mpt__st_count(f));
    for (size_t i = 0; i < mpt__st_count(f); i++) {
        const mpt__st_tensor_t *a = mpt__st_at(f, i), *b = mpt__st_get(back, a->name);
        FUZZ_CHECK(b && b->dtype == a->dtype && b->ndim == a->ndim && b->bytes == a->bytes);
        FUZZ_CHECK(memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) == 0);
        FUZZ_CHECK(a->bytes == 0 || memcmp(a->data, b->data, a->bytes) == 0);
    }
    mpt__st_free(back);
    mpt__st_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4096];
    mpt__st_file_t *f = NULL;
    fuzz_file("in.safetensors", data, size, path, sizeof path);
    if (mpt__st_read(path, &f) != MPT_OK) {
        FUZZ_CHECK(f == NULL);
        return 0;
    }
    size_t total = 0;
    for (size_t i = 0; i < mpt__st_count(f); i++) {
        const mpt__st_tensor_t *t = mpt__st_at(f, i);
        size_t n = dtype_size(t->dtype);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= 8);
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        FUZZ_CHECK(n == t->bytes);
        FUZZ_CHECK(mpt__st_get(f, t->name) == t);
        /* Touch every byte: ASan checks the buffer is as long as it says. */
        unsigned char sum = 0;
        for (size_t b = 0; b < t->bytes; b++)
            sum ^= ((const unsigned char *)t->data)[b];
        (void)sum;
        total += t->bytes;
    }
    /* The tensors tile the data section, which the file holds. */
    FUZZ_CHECK(total <= size);
    (void)mpt__st_meta(f, "format");
    (void)mpt__st_meta(f, "step");
    check_rewrite(f);
    mpt__st_free(f);
    return 0;
}
