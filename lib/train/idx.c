/*
 * train/idx.c: IDX files (MNIST, Fashion-MNIST) into a host dataset, the
 * directory layout of those sets, and the seeded order of an epoch.
 *
 * zlib's gzread reads gzip and plain files alike, so one code path serves
 * both.  Only what classification on those sets needs is read: uint8 images
 * with 3 dims (count, rows, cols) and uint8 labels with 1 dim; other IDX
 * element types (int16, float, double) and shapes are rejected, not
 * converted.  The batch loader that consumes the dataset is in loader.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "core/rng.h"
#include "train/data.h"

#define IDX_MAGIC_LABELS 0x00000801u /* uint8, 1 dim */
#define IDX_MAGIC_IMAGES 0x00000803u /* uint8, 3 dims */
#define IDX_TYPE_UINT8 0x08u

/* Fashion-MNIST training set statistics (documented in data.h). */
#define FASHION_MEAN 0.2860f
#define FASHION_STD 0.3530f

/* gzread takes an unsigned and returns an int: read in chunks that fit. */
#define GZ_CHUNK ((size_t)1 << 30)

/* One IDX file read into memory: the dims of its header and its data. */
typedef struct {
    uint32_t dims[3];
    uint8_t *data;
    size_t bytes;
} idx_file_t;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads up to n bytes; *got says how many came before the end of the file.
 * A short count is not an error here: the caller knows what it expected. */
static int read_some(gzFile f, const char *path, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got < GZ_CHUNK ? n - *got : GZ_CHUNK;
        int r = gzread(f, (uint8_t *)buf + *got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            /* Z_ERRNO is the file system; anything else is a broken gzip
             * stream, i.e. malformed input. */
            if (zerr == Z_ERRNO)
                return mpt__fail(MPT_ERR_IO, "%s: read error: %s", path, strerror(errno));
            return mpt__fail(MPT_ERR_PARSE, "%s: corrupt gzip data: %s", path, msg);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return MPT_OK;
}

/* Reads the data section of `expected` bytes.  The buffer grows as bytes
 * arrive rather than being sized from the header up front, so a header that
 * claims terabytes costs nothing before the file is found to be short. */
static int read_data(gzFile f, const char *path, size_t expected, uint8_t **out)
{
    size_t cap = expected < ((size_t)1 << 20) ? expected : ((size_t)1 << 20);
    size_t have = 0;
    uint8_t *buf = malloc(cap ? cap : 1), *grown;
    int status = MPT_OK;
    if (!buf)
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    for (;;) {
        size_t got;
        MPT_TRY(read_some(f, path, buf + have, cap - have, &got));
        have += got;
        if (have < cap || cap == expected)
            break;
        cap = cap > expected / 2 ? expected : 2 * cap;
        grown = realloc(buf, cap);
        if (!grown) {
            status = mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
            goto out;
        }
        buf = grown;
    }
    if (have < expected) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: truncated: expected %zu bytes of data, found %zu",
                           path, expected, have);
        goto out;
    }
    /* Whatever follows the data means the header does not describe the file
     * (a wrong count, or two files concatenated): refuse rather than guess. */
    uint8_t tail[4096];
    size_t extra = 0, got;
    do {
        MPT_TRY(read_some(f, path, tail, sizeof tail, &got));
        extra += got;
    } while (got == sizeof tail);
    if (extra) {
        status = mpt__fail(MPT_ERR_PARSE,
                           "%s: %zu trailing bytes after the %zu bytes of data the header "
                           "describes",
                           path, extra, expected);
        goto out;
    }
out:
    if (status < 0)
        free(buf);
    else
        *out = buf;
    return status;
}

/* Reads an IDX file of uint8 elements with `ndims` dims (the low byte of
 * the magic), checking the header against the bytes that follow it. */
static int read_idx(const char *path, int ndims, const char *what, idx_file_t *out)
{
    uint32_t expected_magic = IDX_TYPE_UINT8 << 8 | (uint32_t)ndims;
    uint8_t header[4 + 4 * 3];
    size_t header_bytes = 4 + 4 * (size_t)ndims, got, bytes = 1;
    struct stat st;
    gzFile f = NULL;
    int status = MPT_OK;

    memset(out, 0, sizeof *out);
    if (stat(path, &st) != 0)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: %s", path,
                         strerror(errno));
    if (S_ISDIR(st.st_mode))
        return mpt__fail(MPT_ERR_IO, "%s: is a directory, not an IDX file", path);
    errno = 0;
    f = gzopen(path, "rb");
    if (!f)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: cannot open: %s",
                         path, errno ? strerror(errno) : "out of memory");

    MPT_TRY(read_some(f, path, header, header_bytes, &got));
    if (got < 4) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: truncated: %zu bytes, too short for an IDX header",
                           path, got);
        goto out;
    }
    uint32_t magic = be32(header);
    if (magic != expected_magic) {
        /* Name the likely mistake: the right kind of file with other dims
         * (labels given for images), or not an IDX file at all. */
        if ((magic >> 8) == IDX_TYPE_UINT8)
            status = mpt__fail(MPT_ERR_PARSE,
                               "%s: IDX file with %u dims (magic 0x%08x), expected %s with %d "
                               "dims (magic 0x%08x)",
                               path, magic & 0xffu, magic, what, ndims, expected_magic);
        else
            status = mpt__fail(MPT_ERR_PARSE,
                               "%s: wrong magic 0x%08x, expected 0x%08x (IDX uint8 %s, %d dims)",
                               path, magic, expected_magic, what, ndims);
        goto out;
    }
    if (got < header_bytes) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: truncated header: expected %zu bytes, found %zu",
                           path, header_bytes, got);
        goto out;
    }
    for (int d = 0; d < ndims; d++) {
        out->dims[d] = be32(header + 4 + 4 * d);
        if (out->dims[d] == 0) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: dimension %d of the header is 0", path, d);
            goto out;
        }
        if (bytes > SIZE_MAX / out->dims[d]) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: header dims describe more bytes than fit in "
                                              "memory", path);
            goto out;
        }
        bytes *= out->dims[d];
    }
    MPT_TRY(read_data(f, path, bytes, &out->data));
    out->bytes = bytes;
out:
    if (f)
        gzclose(f);
    return status;
}

int mpt__idx_load(const char *images_path, const char *labels_path, float mean, float std,
                  mpt__dataset_t *out)
{
    idx_file_t img = {{0}, NULL, 0}, lab = {{0}, NULL, 0};
    float lut[256];
    int status = MPT_OK;

    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt__idx_load: no output dataset");
    memset(out, 0, sizeof *out);
    if (!images_path || !labels_path)
        return mpt__fail(MPT_ERR_INVALID, "mpt__idx_load: missing file name");
    if (!isfinite(mean) || !isfinite(std) || !(std > 0.0f))
        return mpt__fail(MPT_ERR_INVALID, "mpt__idx_load: normalisation mean %g, std %g: std "
                                          "must be finite and positive",
                         (double)mean, (double)std);

    MPT_TRY(read_idx(images_path, 3, "images", &img));
    MPT_TRY(read_idx(labels_path, 1, "labels", &lab));
    if (img.dims[0] != lab.dims[0]) {
        status = mpt__fail(MPT_ERR_PARSE, "%s holds %u images but %s holds %u labels",
                           images_path, img.dims[0], labels_path, lab.dims[0]);
        goto out;
    }

    size_t count = img.dims[0], sample = (size_t)img.dims[1] * img.dims[2];
    if (img.bytes > SIZE_MAX / sizeof(float) || count > SIZE_MAX / sizeof(int32_t)) {
        status = mpt__fail(MPT_ERR_NOMEM, "%s: too large for this machine", images_path);
        goto out;
    }
    out->x = malloc(img.bytes * sizeof(float));
    out->y = malloc(count * sizeof(int32_t));
    if (!out->x || !out->y) {
        status = mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu samples of %zu floats",
                           images_path, count, sample);
        goto out;
    }
    /* One expression per byte value, so every pixel of value b gets exactly
     * (b / 255 - mean) / std computed in float. */
    for (int b = 0; b < 256; b++)
        lut[b] = ((float)b / 255.0f - mean) / std;
    for (size_t i = 0; i < img.bytes; i++)
        out->x[i] = lut[img.data[i]];
    /* Labels are uint8, so always below 256 and classes is at most 256. */
    int max_label = 0;
    for (size_t i = 0; i < count; i++) {
        out->y[i] = lab.data[i];
        if (lab.data[i] > max_label)
            max_label = lab.data[i];
    }
    out->count = count;
    out->sample_floats = sample;
    out->ndims = 3;
    out->dims[0] = 1; /* one channel: IDX images are greyscale */
    out->dims[1] = img.dims[1];
    out->dims[2] = img.dims[2];
    out->classes = max_label + 1;
out:
    free(img.data);
    free(lab.data);
    if (status < 0)
        mpt__dataset_free(out);
    return status;
}

/* Finds "<dir>/<split>-<kind>-ubyte.gz", else the same without ".gz". */
static int find_split_file(const char *dir, const char *split, const char *kind, char *path,
                           size_t size)
{
    struct stat st;
    int status;
    for (int gz = 1; gz >= 0; gz--) {
        status = mpt__snprintf(path, size, "%s/%s-%s-ubyte%s", dir, split, kind, gz ? ".gz" : "");
        if (status < 0)
            return mpt__fail_context(status, "%s: directory name too long", dir);
        if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
            return MPT_OK;
    }
    return mpt__fail(MPT_ERR_NOT_FOUND, "%s: neither %s-%s-ubyte.gz nor %s-%s-ubyte found", dir,
                     split, kind, split, kind);
}

int mpt__idx_load_dir(const char *dir, const char *split, mpt__dataset_t *out)
{
    char images[4096], labels[4096];
    struct stat st;
    int status;

    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt__idx_load_dir: no output dataset");
    memset(out, 0, sizeof *out);
    if (!dir || !split || !*split || strchr(split, '/'))
        return mpt__fail(MPT_ERR_INVALID, "mpt__idx_load_dir: split must be a name such as "
                                          "\"train\" or \"t10k\"");
    if (stat(dir, &st) != 0)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO,
                         "dataset directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return mpt__fail(MPT_ERR_INVALID, "dataset directory %s: not a directory", dir);
    status = find_split_file(dir, split, "images-idx3", images, sizeof images);
    if (status < 0)
        return status;
    status = find_split_file(dir, split, "labels-idx1", labels, sizeof labels);
    if (status < 0)
        return status;
    return mpt__idx_load(images, labels, FASHION_MEAN, FASHION_STD, out);
}

void mpt__dataset_free(mpt__dataset_t *d)
{
    if (!d)
        return;
    free(d->x);
    free(d->y);
    memset(d, 0, sizeof *d);
}

int mpt__epoch_order(uint64_t seed, uint64_t epoch, size_t count, uint32_t **out)
{
    uint32_t *order;
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt__epoch_order: no output");
    *out = NULL;
    if ((uint64_t)count > (uint64_t)UINT32_MAX + 1)
        return mpt__fail(MPT_ERR_RANGE, "epoch order: %zu samples do not fit 32-bit indices",
                         count);
    order = malloc((count ? count : 1) * sizeof *order);
    if (!order)
        return mpt__fail(MPT_ERR_NOMEM, "epoch order: out of memory for %zu indices", count);
    for (size_t i = 0; i < count; i++)
        order[i] = (uint32_t)i;
    /* Fisher-Yates from the end, exactly:
     *   for i = count-1 down to 1:
     *       j = mpt__rng_u32(seed, MPT_RNG_STREAM(MPT_RNG_SHUFFLE, epoch), count-1-i) % (i+1);  swap order[i], order[j]
     * so step k = count-1-i of the shuffle uses number k of stream (seed,
     * epoch), and any other implementation (a reference script, a resumed
     * run) reproduces the order from those two numbers alone.  The modulo
     * favours small j by at most (i+1) / 2^32 in relative terms, which is
     * negligible for datasets of count << 2^32 samples. */
    for (size_t i = count ? count - 1 : 0; i >= 1; i--) {
        size_t j = (size_t)((uint64_t)mpt__rng_u32(seed, MPT_RNG_STREAM(MPT_RNG_SHUFFLE, epoch), (uint64_t)(count - 1 - i)) %
                            ((uint64_t)i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    *out = order;
    return MPT_OK;
}
