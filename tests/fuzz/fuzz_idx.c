/*
 * tests/fuzz/fuzz_idx.c: libFuzzer harness for the IDX reader
 * (mpt__idx_load, lib/train/idx.c: plain or gzip images and labels).  The
 * input holds both files: a 4-byte little-endian length L, then L bytes of
 * the image file, then the label file (L is cut to what is there).  They
 * are written to two scratch files because the reader takes paths.
 * Properties: an accepted set has count images of rows x cols normalised
 * pixels, all finite, and labels in [0, classes).
 */
#include <math.h>
#include <stdint.h>

#include "train/data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char images[4096], labels[4096];
    mpt__dataset_t d;
    if (size < 4)
        return 0;
    size_t len = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
                 (size_t)data[3] << 24;
    data += 4, size -= 4;
    if (len > size)
        len = size;
    fuzz_file("images-idx3-ubyte", data, len, images, sizeof images);
    fuzz_file("labels-idx1-ubyte", data + len, size - len, labels, sizeof labels);
    if (mpt__idx_load(images, labels, 0.2860f, 0.3530f, &d) != MPT_OK) {
        FUZZ_CHECK(d.x == NULL && d.y == NULL && d.count == 0);
        return 0;
    }
    FUZZ_CHECK(d.count > 0 && d.ndims == 3 && d.dims[0] == 1);
    FUZZ_CHECK(d.sample_floats == d.dims[1] * d.dims[2]);
    FUZZ_CHECK(d.classes >= 1 && d.classes <= 256);
    for (size_t i = 0; i < d.count * d.sample_floats; i++)
        FUZZ_CHECK(isfinite(d.x[i]));
    for (size_t i = 0; i < d.count; i++)
        FUZZ_CHECK(d.y[i] >= 0 && d.y[i] < d.classes);
    mpt__dataset_free(&d);
    return 0;
}
