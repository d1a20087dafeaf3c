/*
 * tests/check_data.c: IDX datasets (plain and gzip, good and broken files,
 * the directory layout), datasets from the caller's memory, the seeded
 * epoch order, and the background batch loader; Fashion-MNIST itself when
 * it is installed.
 *
 * No OpenCL here, so the suite runs in Check's fork mode: a hang (a loader
 * that never joins) or a crash fails one test, not the run.  Small IDX
 * files are written into a mkdtemp directory per test.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "core/rng.h"
#include "testutil.h"
#include "train/data.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* The small dataset of these tests: 5 images of 2 x 3 pixels. */
#define N_IMAGES 5
#define ROWS 2
#define COLS 3
#define PIXELS (N_IMAGES * ROWS * COLS)
static const uint8_t labels5[N_IMAGES] = {3, 0, 7, 3, 1};

/* ---- files ---- */

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mpt-check-data-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* tmpdir/name into buf. */
static const char *in_tmp(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
    return buf;
}

/* Writes n bytes to path, through gzip when gz. */
static void write_bytes(const char *path, int gz, const uint8_t *bytes, size_t n)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, bytes, (unsigned)n), (int)n);
        ck_assert_int_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
        ck_assert_int_eq(fclose(f), 0);
    }
}

static size_t put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return 4;
}

/* Writes an IDX file: magic, ndims dims, then n data bytes. */
static void write_idx(const char *path, int gz, uint32_t magic, int ndims, const uint32_t *dims,
                      const uint8_t *data, size_t n)
{
    uint8_t buf[1024];
    size_t len = put_be32(buf, magic);
    ck_assert_uint_le(4 + 4 * (size_t)ndims + n, sizeof buf);
    for (int d = 0; d < ndims; d++)
        len += put_be32(buf + len, dims[d]);
    memcpy(buf + len, data, n);
    write_bytes(path, gz, buf, len + n);
}

/* The pixels of the small dataset, with 0 and 255 among them; `extra`
 * bytes beyond PIXELS are filled too (for files with trailing bytes). */
static void pixels(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 37 + 11);
    p[0] = 0;
    p[1] = 255;
}

/* Writes "<prefix>-images-idx3-ubyte[.gz]" and the labels beside it. */
static void write_small_set(const char *prefix, int gz)
{
    char path[256];
    uint8_t pix[PIXELS];
    const uint32_t idims[3] = {N_IMAGES, ROWS, COLS}, ldims[1] = {N_IMAGES};
    pixels(pix, PIXELS);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", tmpdir, prefix, gz ? ".gz" : "");
    write_idx(path, gz, 0x803, 3, idims, pix, PIXELS);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", tmpdir, prefix, gz ? ".gz" : "");
    write_idx(path, gz, 0x801, 1, ldims, labels5, N_IMAGES);
}

static void small_set_paths(const char *prefix, int gz, char *images, char *labels, size_t size)
{
    snprintf(images, size, "%s/%s-images-idx3-ubyte%s", tmpdir, prefix, gz ? ".gz" : "");
    snprintf(labels, size, "%s/%s-labels-idx1-ubyte%s", tmpdir, prefix, gz ? ".gz" : "");
}

/* Asserts the failure detail names `name` and says `reason`, on one line. */
static void assert_detail(const char *name, const char *reason)
{
    const char *e = mpt_last_error();
    ck_assert_msg(strstr(e, name) != NULL, "detail \"%s\" does not name %s", e, name);
    ck_assert_msg(strstr(e, reason) != NULL, "detail \"%s\" does not say \"%s\"", e, reason);
    ck_assert_msg(strchr(e, '\n') == NULL, "detail \"%s\" is not one line", e);
}

/* ---- loading ---- */

START_TEST(idx_loads_exact_values)
{
    char images[256], labels[256];
    uint8_t pix[PIXELS];
    const float mean = 0.5f, std = 0.25f;
    mpt__dataset_t d;
    make_tmpdir();
    write_small_set("train", 0);
    small_set_paths("train", 0, images, labels, sizeof images);
    pixels(pix, PIXELS);

    ck_assert_mpt_ok(mpt__idx_load(images, labels, mean, std, &d));
    ck_assert_uint_eq(d.count, N_IMAGES);
    ck_assert_uint_eq(d.sample_floats, ROWS * COLS);
    ck_assert_int_eq(d.ndims, 3);
    ck_assert_uint_eq(d.dims[0], 1);
    ck_assert_uint_eq(d.dims[1], ROWS);
    ck_assert_uint_eq(d.dims[2], COLS);
    ck_assert_int_eq(d.classes, 8); /* 1 + the largest label, 7 */
    for (int i = 0; i < N_IMAGES; i++)
        ck_assert_int_eq(d.y[i], labels5[i]);
    for (int i = 0; i < PIXELS; i++) {
        /* The documented float expression, bit for bit: the library must
         * not reorder it (e.g. into b * (1/(255 std)) - mean/std), so
         * that every consumer of a dataset sees the same inputs. */
        float want = ((float)pix[i] / 255.0f - mean) / std;
        ck_assert_msg(memcmp(&d.x[i], &want, sizeof want) == 0, "x[%d] = %.9g, expected %.9g", i,
                      (double)d.x[i], (double)want);
        /* And against the exact value in double: three float roundings of
         * at most 2^-24 relative each on values of magnitude <= 2 bound the
         * error by about 3 * 2 * 6e-8 = 3.6e-7; 1e-6 leaves a margin. */
        double exact = ((double)pix[i] / 255.0 - 0.5) / 0.25;
        ck_assert_double_eq_tol(d.x[i], exact, 1e-6);
    }
    ck_assert_float_eq(d.x[0], -2.0f); /* pixel 0: (0 - 0.5) / 0.25 */
    ck_assert_float_eq(d.x[1], 2.0f);  /* pixel 255: (1 - 0.5) / 0.25 */
    mpt__dataset_free(&d);
    ck_assert_ptr_null(d.x);
    ck_assert_uint_eq(d.count, 0);
    mpt__dataset_free(&d); /* twice is harmless */
    remove_tmpdir();
}
END_TEST

static void assert_same_dataset(const mpt__dataset_t *a, const mpt__dataset_t *b)
{
    ck_assert_uint_eq(a->count, b->count);
    ck_assert_uint_eq(a->sample_floats, b->sample_floats);
    ck_assert_int_eq(a->ndims, b->ndims);
    ck_assert_int_eq(a->classes, b->classes);
    ck_assert_mem_eq(a->dims, b->dims, sizeof a->dims);
    ck_assert_mem_eq(a->x, b->x, a->count * a->sample_floats * sizeof(float));
    ck_assert_mem_eq(a->y, b->y, a->count * sizeof(int32_t));
}

START_TEST(gzip_and_plain_give_the_same_dataset)
{
    char images[256], labels[256], gz_images[256], gz_labels[256];
    mpt__dataset_t plain, gz, mixed, dir_plain, dir_gz;
    make_tmpdir();
    write_small_set("train", 0);
    write_small_set("train", 1);
    small_set_paths("train", 0, images, labels, sizeof images);
    small_set_paths("train", 1, gz_images, gz_labels, sizeof gz_images);

    ck_assert_mpt_ok(mpt__idx_load(images, labels, 0.2860f, 0.3530f, &plain));
    ck_assert_mpt_ok(mpt__idx_load(gz_images, gz_labels, 0.2860f, 0.3530f, &gz));
    ck_assert_mpt_ok(mpt__idx_load(gz_images, labels, 0.2860f, 0.3530f, &mixed));
    assert_same_dataset(&plain, &gz);
    assert_same_dataset(&plain, &mixed);
    /* The directory layout with Fashion-MNIST's documented statistics. */
    ck_assert_mpt_ok(mpt__idx_load_dir(tmpdir, "train", &dir_gz));
    assert_same_dataset(&plain, &dir_gz);
    /* Without the .gz files, the plain ones are found. */
    ck_assert_int_eq(unlink(gz_images), 0);
    ck_assert_int_eq(unlink(gz_labels), 0);
    ck_assert_mpt_ok(mpt__idx_load_dir(tmpdir, "train", &dir_plain));
    assert_same_dataset(&plain, &dir_plain);
    mpt__dataset_free(&plain);
    mpt__dataset_free(&gz);
    mpt__dataset_free(&mixed);
    mpt__dataset_free(&dir_plain);
    mpt__dataset_free(&dir_gz);
    remove_tmpdir();
}
END_TEST

START_TEST(load_dir_prefers_gzip)
{
    /* Both forms present and different: the .gz one is read. */
    char path[256];
    uint8_t pix[PIXELS];
    const uint32_t idims[3] = {N_IMAGES, ROWS, COLS}, ldims[1] = {N_IMAGES};
    const uint8_t other_labels[N_IMAGES] = {1, 1, 1, 1, 1};
    mpt__dataset_t d;
    make_tmpdir();
    write_small_set("t10k", 1);
    pixels(pix, PIXELS);
    write_idx(in_tmp(path, sizeof path, "t10k-images-idx3-ubyte"), 0, 0x803, 3, idims, pix,
              PIXELS);
    write_idx(in_tmp(path, sizeof path, "t10k-labels-idx1-ubyte"), 0, 0x801, 1, ldims,
              other_labels, N_IMAGES);
    ck_assert_mpt_ok(mpt__idx_load_dir(tmpdir, "t10k", &d));
    ck_assert_int_eq(d.classes, 8);
    ck_assert_int_eq(d.y[2], 7);
    mpt__dataset_free(&d);
    remove_tmpdir();
}
END_TEST

/* An image file that is wrong in one way, with good labels beside it. */
static const struct bad_images {
    const char *what;
    uint32_t magic;
    int ndims;
    uint32_t dims[3];
    size_t data_bytes;
    const char *reason; /* expected in the detail */
} bad_images[] = {
    {"not IDX", 0x12345678, 3, {N_IMAGES, ROWS, COLS}, PIXELS, "wrong magic 0x12345678"},
    {"float elements", 0x0d03, 3, {N_IMAGES, ROWS, COLS}, PIXELS * 4, "wrong magic 0x00000d03"},
    {"labels as images", 0x801, 1, {N_IMAGES, 0, 0}, N_IMAGES, "with 1 dims"},
    {"two dims", 0x802, 2, {N_IMAGES, ROWS * COLS, 0}, PIXELS, "with 2 dims"},
    {"truncated data", 0x803, 3, {N_IMAGES, ROWS, COLS}, PIXELS - 1,
     "truncated: expected 30 bytes of data, found 29"},
    {"no data", 0x803, 3, {N_IMAGES, ROWS, COLS}, 0,
     "truncated: expected 30 bytes of data, found 0"},
    {"truncated header", 0x803, 1, {N_IMAGES, 0, 0}, 0, "truncated header"},
    {"trailing bytes", 0x803, 3, {N_IMAGES, ROWS, COLS}, PIXELS + 3, "3 trailing bytes"},
    {"a dim of 0", 0x803, 3, {N_IMAGES, 0, COLS}, 0, "dimension 1 of the header is 0"},
};

START_TEST(bad_image_files_fail_clearly)
{
    char images[256], labels[256];
    uint8_t pix[4 * PIXELS];
    mpt__dataset_t d;
    make_tmpdir();
    pixels(pix, sizeof pix);
    for (int gz = 0; gz <= 1; gz++) {
        write_small_set("train", gz);
        small_set_paths("train", gz, images, labels, sizeof images);
        for (size_t c = 0; c < sizeof bad_images / sizeof bad_images[0]; c++) {
            const struct bad_images *b = &bad_images[c];
            write_idx(images, gz, b->magic, b->ndims, b->dims, pix, b->data_bytes);
            int status = mpt__idx_load(images, labels, 0.0f, 1.0f, &d);
            ck_assert_msg(status == MPT_ERR_PARSE, "%s (%s): %s: %s", b->what,
                          gz ? "gzip" : "plain", mpt_status_name(status), mpt_last_error());
            assert_detail(images, b->reason);
            ck_assert_ptr_null(d.x); /* nothing half-made is handed back */
            ck_assert_ptr_null(d.y);
        }
    }
    remove_tmpdir();
}
END_TEST

START_TEST(bad_label_files_and_mismatches_fail_clearly)
{
    char images[256], labels[256], path[256];
    uint8_t pix[PIXELS];
    const uint32_t ldims4[1] = {N_IMAGES - 1}, idims[3] = {N_IMAGES, ROWS, COLS};
    mpt__dataset_t d;
    make_tmpdir();
    pixels(pix, PIXELS);
    write_small_set("train", 0);
    small_set_paths("train", 0, images, labels, sizeof images);

    /* Images given for labels: 3 dims where 1 is expected. */
    ck_assert_mpt_fails(mpt__idx_load(images, images, 0.0f, 1.0f, &d), MPT_ERR_PARSE);
    assert_detail(images, "with 3 dims");
    assert_detail(images, "expected labels with 1 dims");
    /* 4 labels for 5 images: both files named. */
    write_idx(labels, 0, 0x801, 1, ldims4, labels5, N_IMAGES - 1);
    ck_assert_mpt_fails(mpt__idx_load(images, labels, 0.0f, 1.0f, &d), MPT_ERR_PARSE);
    assert_detail(images, "5 images");
    assert_detail(labels, "4 labels");
    /* Truncated labels. */
    write_idx(labels, 0, 0x801, 1, idims, labels5, N_IMAGES - 2);
    ck_assert_mpt_fails(mpt__idx_load(images, labels, 0.0f, 1.0f, &d), MPT_ERR_PARSE);
    assert_detail(labels, "truncated: expected 5 bytes of data, found 3");
    /* A file that does not exist. */
    in_tmp(path, sizeof path, "no-such-labels");
    ck_assert_mpt_fails(mpt__idx_load(images, path, 0.0f, 1.0f, &d), MPT_ERR_NOT_FOUND);
    assert_detail(path, "No such file");
    ck_assert_mpt_fails(mpt__idx_load(path, labels, 0.0f, 1.0f, &d), MPT_ERR_NOT_FOUND);
    assert_detail(path, "No such file");
    /* A directory where a file should be. */
    ck_assert_mpt_fails(mpt__idx_load(tmpdir, labels, 0.0f, 1.0f, &d), MPT_ERR_IO);
    assert_detail(tmpdir, "is a directory");
    /* A normalisation that would divide by zero. */
    ck_assert_mpt_fails(mpt__idx_load(images, labels, 0.0f, 0.0f, &d), MPT_ERR_INVALID);
    remove_tmpdir();
}
END_TEST

START_TEST(corrupt_gzip_fails_clearly)
{
    /* A gzip stream cut in the middle (a partial download), and one with
     * damaged compressed bytes. */
    char images[256], labels[256];
    uint8_t pix[4 * PIXELS], buf[4096];
    const uint32_t idims[3] = {4 * N_IMAGES, ROWS, COLS};
    mpt__dataset_t d;
    make_tmpdir();
    pixels(pix, sizeof pix);
    write_small_set("train", 1);
    small_set_paths("train", 1, images, labels, sizeof images);
    write_idx(images, 1, 0x803, 3, idims, pix, sizeof pix);
    FILE *f = fopen(images, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ck_assert_uint_gt(n, 40);

    ck_assert_int_eq(truncate(images, (off_t)(n / 2)), 0);
    int status = mpt__idx_load(images, labels, 0.0f, 1.0f, &d);
    ck_assert_msg(status == MPT_ERR_PARSE, "%s: %s", mpt_status_name(status), mpt_last_error());
    assert_detail(images, "truncated");

    buf[n - 6] ^= 0xff; /* the stored CRC-32 no longer matches */
    write_bytes(images, 0, buf, n);
    status = mpt__idx_load(images, labels, 0.0f, 1.0f, &d);
    ck_assert_msg(status == MPT_ERR_PARSE, "%s: %s", mpt_status_name(status), mpt_last_error());
    assert_detail(images, "gzip");
    remove_tmpdir();
}
END_TEST

START_TEST(load_dir_names_what_is_missing)
{
    char path[256];
    mpt__dataset_t d;
    make_tmpdir();
    ck_assert_mpt_fails(mpt__idx_load_dir(tmpdir, "train", &d), MPT_ERR_NOT_FOUND);
    assert_detail(tmpdir, "neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte");
    /* Images present, labels missing. */
    write_small_set("train", 1);
    ck_assert_int_eq(unlink(in_tmp(path, sizeof path, "train-labels-idx1-ubyte.gz")), 0);
    ck_assert_mpt_fails(mpt__idx_load_dir(tmpdir, "train", &d), MPT_ERR_NOT_FOUND);
    assert_detail(tmpdir, "neither train-labels-idx1-ubyte.gz nor train-labels-idx1-ubyte");
    /* The other split is not there at all. */
    ck_assert_mpt_fails(mpt__idx_load_dir(tmpdir, "t10k", &d), MPT_ERR_NOT_FOUND);
    assert_detail(tmpdir, "t10k-images-idx3-ubyte.gz");
    /* No such directory. */
    in_tmp(path, sizeof path, "absent");
    ck_assert_mpt_fails(mpt__idx_load_dir(path, "train", &d), MPT_ERR_NOT_FOUND);
    assert_detail(path, "No such file");
    ck_assert_mpt_fails(mpt__idx_load_dir(tmpdir, "", &d), MPT_ERR_INVALID);
    remove_tmpdir();
}
END_TEST

/* ---- epoch order ---- */

/* The documented shuffle, written again from data.h's words. */
static void reference_order(uint64_t seed, uint64_t epoch, size_t count, uint32_t *o)
{
    for (size_t i = 0; i < count; i++)
        o[i] = (uint32_t)i;
    for (size_t k = 0; k + 1 < count; k++) {
        size_t i = count - 1 - k;
        size_t j = mpt__rng_u32(seed, MPT_RNG_STREAM(MPT_RNG_SHUFFLE, epoch), k) % (i + 1);
        uint32_t t = o[i];
        o[i] = o[j];
        o[j] = t;
    }
}

START_TEST(epoch_order_is_a_seeded_permutation)
{
    enum { N = 1000 };
    uint32_t *a, *b, *c, *s, ref[N];
    char seen[N];
    ck_assert_mpt_ok(mpt__epoch_order(42, 3, N, &a));
    ck_assert_mpt_ok(mpt__epoch_order(42, 3, N, &b));
    ck_assert_mpt_ok(mpt__epoch_order(42, 4, N, &c));
    ck_assert_mpt_ok(mpt__epoch_order(43, 3, N, &s));
    memset(seen, 0, sizeof seen);
    size_t fixed = 0;
    for (size_t i = 0; i < N; i++) {
        ck_assert_uint_lt(a[i], N);
        ck_assert_int_eq(seen[a[i]], 0);
        seen[a[i]] = 1;
        fixed += a[i] == i;
    }
    /* A random permutation fixes one point on average; 10 is already
     * p < 1e-7 (Poisson(1) tail), so more means no shuffle happened. */
    ck_assert_uint_lt(fixed, 10);
    ck_assert_mem_eq(a, b, N * sizeof *a);                  /* same (seed, epoch) */
    ck_assert(memcmp(a, c, N * sizeof *a) != 0);            /* other epoch */
    ck_assert(memcmp(a, s, N * sizeof *a) != 0);            /* other seed */
    reference_order(42, 3, N, ref);
    ck_assert_mem_eq(a, ref, N * sizeof *a);                /* the documented algorithm */
    free(a), free(b), free(c), free(s);

    /* Edge sizes. */
    ck_assert_mpt_ok(mpt__epoch_order(1, 0, 0, &a));
    free(a);
    ck_assert_mpt_ok(mpt__epoch_order(1, 0, 1, &a));
    ck_assert_uint_eq(a[0], 0);
    free(a);
    ck_assert_mpt_ok(mpt__epoch_order(1, 0, 2, &a));
    ck_assert(a[0] + a[1] == 1 && a[0] != a[1]);
    free(a);
}
END_TEST

/* ---- the loader ---- */

/* A dataset in memory: sample i holds floats i*100 + k, label i % 7. */
static void make_dataset(mpt__dataset_t *d, size_t count, size_t floats)
{
    memset(d, 0, sizeof *d);
    d->count = count;
    d->sample_floats = floats;
    d->ndims = 3;
    d->dims[0] = 1, d->dims[1] = 1, d->dims[2] = floats;
    d->classes = 7;
    d->x = malloc(count * floats * sizeof(float));
    d->y = malloc(count * sizeof(int32_t));
    ck_assert_ptr_nonnull(d->x);
    ck_assert_ptr_nonnull(d->y);
    for (size_t i = 0; i < count; i++) {
        for (size_t k = 0; k < floats; k++)
            d->x[i * floats + k] = (float)(i * 100 + k);
        d->y[i] = (int32_t)(i % 7);
    }
}

/* Asserts a batch is rows order[b*B ..] of d. */
static void assert_batch(const mpt__dataset_t *d, const uint32_t *order, size_t batch, size_t b,
                         const float *x, const int32_t *y)
{
    for (size_t k = 0; k < batch; k++) {
        uint32_t row = order[b * batch + k];
        ck_assert_mem_eq(x + k * d->sample_floats, d->x + row * d->sample_floats,
                         d->sample_floats * sizeof(float));
        ck_assert_int_eq(y[k], d->y[row]);
    }
}

START_TEST(loader_yields_epochs_in_order)
{
    enum { COUNT = 103, FLOATS = 5, BATCH = 10, SEED = 7 };
    mpt__dataset_t d;
    mpt__loader_t *l;
    uint32_t *order[3];
    const float *x;
    const int32_t *y;
    uint64_t epoch;
    size_t b;
    float keep_x[BATCH * FLOATS];
    int32_t keep_y[BATCH];
    make_dataset(&d, COUNT, FLOATS);
    for (int e = 0; e < 3; e++)
        ck_assert_mpt_ok(mpt__epoch_order(SEED, (uint64_t)e, COUNT, &order[e]));

    ck_assert_mpt_ok(mpt__loader_create(&d, BATCH, SEED, &l));
    ck_assert_uint_eq(mpt__loader_batches(l), COUNT / BATCH); /* 10: the last 3 dropped */
    /* Epochs 0 and 1 whole, then 5 batches of epoch 2. */
    for (size_t step = 0; step < 25; step++) {
        ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
        ck_assert_uint_eq(epoch, step / 10);
        ck_assert_uint_eq(b, step % 10);
        /* Give the worker time to prepare the next batch, which must not
         * touch the one just returned. */
        if (step % 3 == 0)
            nanosleep(&(struct timespec){0, 2000000}, NULL);
        assert_batch(&d, order[epoch], BATCH, b, x, y);
        if (epoch == 2 && b == 3) {
            memcpy(keep_x, x, sizeof keep_x);
            memcpy(keep_y, y, sizeof keep_y);
        }
    }
    /* Seeking back (a resume) gives the batch reached sequentially, and
     * goes on from there. */
    ck_assert_mpt_ok(mpt__loader_seek(l, 2, 3));
    ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
    ck_assert_uint_eq(epoch, 2);
    ck_assert_uint_eq(b, 3);
    ck_assert_mem_eq(x, keep_x, sizeof keep_x);
    ck_assert_mem_eq(y, keep_y, sizeof keep_y);
    ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
    ck_assert_uint_eq(epoch, 2);
    ck_assert_uint_eq(b, 4);
    assert_batch(&d, order[2], BATCH, 4, x, y);
    /* Seeks in a row: only the last counts. */
    ck_assert_mpt_ok(mpt__loader_seek(l, 1, 9));
    ck_assert_mpt_ok(mpt__loader_seek(l, 0, 0));
    ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
    ck_assert_uint_eq(epoch, 0);
    ck_assert_uint_eq(b, 0);
    assert_batch(&d, order[0], BATCH, 0, x, y);
    /* The last batch of an epoch wraps into the next. */
    ck_assert_mpt_ok(mpt__loader_seek(l, 1, 9));
    ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
    assert_batch(&d, order[1], BATCH, 9, x, y);
    ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
    ck_assert_uint_eq(epoch, 2);
    ck_assert_uint_eq(b, 0);
    assert_batch(&d, order[2], BATCH, 0, x, y);
    /* Out of range. */
    ck_assert_mpt_fails(mpt__loader_seek(l, 0, 10), MPT_ERR_RANGE);
    mpt__loader_free(l);

    /* Each epoch visits count / batch * batch distinct samples. */
    ck_assert_mpt_ok(mpt__loader_create(&d, BATCH, SEED, &l));
    char seen[COUNT] = {0};
    for (int s = 0; s < 10; s++) {
        ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
        for (int k = 0; k < BATCH; k++) {
            size_t row = (size_t)x[k * FLOATS] / 100;
            ck_assert_int_eq(seen[row], 0);
            seen[row] = 1;
        }
    }
    mpt__loader_free(l);

    for (int e = 0; e < 3; e++)
        free(order[e]);
    mpt__dataset_free(&d);
}
END_TEST

/* A dataset from the caller's arrays (mpt_dataset_from_memory): copied,
 * so the caller may change or free them; the public loader over it yields
 * the seeded order of a file's; bad labels and floats are named. */
START_TEST(dataset_from_memory)
{
    enum { COUNT = 53, FLOATS = 4, BATCH = 8, SEED = 11 };
    mpt__dataset_t ref;
    make_dataset(&ref, COUNT, FLOATS); /* labels i % 7 */
    float *x = malloc(sizeof(float) * COUNT * FLOATS);
    int32_t *y = malloc(sizeof(int32_t) * COUNT);
    ck_assert(x && y);
    memcpy(x, ref.x, sizeof(float) * COUNT * FLOATS);
    memcpy(y, ref.y, sizeof(int32_t) * COUNT);
    mpt_dataset_t *ds = NULL;
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, FLOATS, 7, x, y, &ds));
    x[0] = -1, y[0] = 6; /* the caller's arrays change: the dataset's must not */
    ck_assert_uint_eq(mpt_dataset_count(ds), COUNT);
    ck_assert_uint_eq(mpt_dataset_sample_floats(ds), FLOATS);
    ck_assert_int_eq(mpt_dataset_classes(ds), 7);
    ck_assert_mem_eq(mpt_dataset_images(ds), ref.x, sizeof(float) * COUNT * FLOATS);
    ck_assert_mem_eq(mpt_dataset_labels(ds), ref.y, sizeof(int32_t) * COUNT);

    uint32_t *order[2];
    for (int e = 0; e < 2; e++)
        ck_assert_mpt_ok(mpt__epoch_order(SEED, (uint64_t)e, COUNT, &order[e]));
    mpt_loader_t *l = NULL;
    const float *bx;
    const int32_t *by;
    uint64_t epoch;
    size_t b;
    ck_assert_mpt_ok(mpt_loader_create(ds, BATCH, SEED, &l));
    ck_assert_uint_eq(mpt_loader_batches(l), COUNT / BATCH);
    for (size_t step = 0; step < 2 * (COUNT / BATCH); step++) {
        ck_assert_mpt_ok(mpt_loader_next(l, &bx, &by, &epoch, &b));
        ck_assert_uint_eq(epoch, step / (COUNT / BATCH));
        assert_batch(&ref, order[epoch], BATCH, b, bx, by);
    }
    mpt_loader_free(l);
    mpt_dataset_free(ds);
    for (int e = 0; e < 2; e++)
        free(order[e]);

    /* Bad input: NULL stays in *out, the message names the sample. */
    y[0] = 0, x[0] = 0;
    ds = (mpt_dataset_t *)&ds;
    y[9] = 7;
    ck_assert_mpt_fails(mpt_dataset_from_memory(COUNT, FLOATS, 7, x, y, &ds), MPT_ERR_INVALID);
    ck_assert_ptr_null(ds);
    ck_assert_msg(strstr(mpt_last_error(), "label 9 is 7, outside [0, 7)"), "%s",
                  mpt_last_error());
    y[9] = -2;
    ck_assert_mpt_fails(mpt_dataset_from_memory(COUNT, FLOATS, 7, x, y, &ds), MPT_ERR_INVALID);
    y[9] = 2;
    x[2 * FLOATS + 3] = NAN;
    ck_assert_mpt_fails(mpt_dataset_from_memory(COUNT, FLOATS, 7, x, y, &ds), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "sample 2, float 3 is nan"), "%s", mpt_last_error());
    x[2 * FLOATS + 3] = 0;
    ck_assert_mpt_fails(mpt_dataset_from_memory(0, FLOATS, 7, x, y, &ds), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_dataset_from_memory(COUNT, FLOATS, 1, x, y, &ds), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_dataset_from_memory(COUNT, FLOATS, 7, NULL, y, &ds), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_dataset_from_memory(SIZE_MAX / 2, 3, 7, x, y, &ds), MPT_ERR_RANGE);
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, FLOATS, 7, x, y, &ds));
    mpt_dataset_free(ds);
    free(x);
    free(y);
    mpt__dataset_free(&ref);
}
END_TEST

START_TEST(loader_seek_while_preparing)
{
    /* Large batches (4 MB each), so that a seek usually lands while the
     * worker is still copying the batch asked for before: that stale batch
     * must be dropped and the sought one returned. */
    enum { COUNT = 1024, FLOATS = 4096, BATCH = 256, SEED = 11 };
    mpt__dataset_t d;
    mpt__loader_t *l;
    uint32_t *order[4];
    const float *x;
    const int32_t *y;
    uint64_t epoch;
    size_t b;
    make_dataset(&d, COUNT, FLOATS);
    for (int e = 0; e < 4; e++)
        ck_assert_mpt_ok(mpt__epoch_order(SEED, (uint64_t)e, COUNT, &order[e]));
    ck_assert_mpt_ok(mpt__loader_create(&d, BATCH, SEED, &l));
    for (int i = 0; i < 40; i++) {
        uint64_t want_e = (uint64_t)(i * 7 % 4);
        size_t want_b = (size_t)(i * 3 % 4);
        /* Right after create or next, the worker is busy with another batch. */
        ck_assert_mpt_ok(mpt__loader_seek(l, want_e, want_b));
        ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
        ck_assert_uint_eq(epoch, want_e);
        ck_assert_uint_eq(b, want_b);
        assert_batch(&d, order[want_e], BATCH, want_b, x, y);
    }
    mpt__loader_free(l);
    for (int e = 0; e < 4; e++)
        free(order[e]);
    mpt__dataset_free(&d);
}
END_TEST

START_TEST(loader_edge_cases_and_quick_free)
{
    mpt__dataset_t d;
    mpt__loader_t *l;
    const float *x;
    const int32_t *y;
    uint64_t epoch;
    size_t b;
    make_dataset(&d, 50, 3);
    ck_assert_mpt_fails(mpt__loader_create(&d, 0, 1, &l), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__loader_create(&d, 51, 1, &l), MPT_ERR_INVALID);
    ck_assert_ptr_null(l);
    /* A batch of the whole dataset: one batch an epoch, a new order each. */
    ck_assert_mpt_ok(mpt__loader_create(&d, 50, 1, &l));
    ck_assert_uint_eq(mpt__loader_batches(l), 1);
    for (uint64_t e = 0; e < 3; e++) {
        ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
        ck_assert_uint_eq(epoch, e);
        ck_assert_uint_eq(b, 0);
    }
    mpt__loader_free(l);
    /* Freed right after creation, after a seek, or mid-preparation: the
     * worker is joined and nothing hangs (Check's timeout would fail it). */
    for (int i = 0; i < 200; i++) {
        ck_assert_mpt_ok(mpt__loader_create(&d, 1 + (size_t)i % 7, (uint64_t)i, &l));
        if (i % 3 == 1)
            ck_assert_mpt_ok(mpt__loader_seek(l, (uint64_t)i, 0));
        if (i % 3 == 2)
            ck_assert_mpt_ok(mpt__loader_next(l, &x, &y, &epoch, &b));
        mpt__loader_free(l);
    }
    mpt__loader_free(NULL);
    mpt__dataset_free(&d);
}
END_TEST

/* ---- Fashion-MNIST, when installed ---- */

START_TEST(fashion_mnist_loads)
{
    struct stat st;
    if (stat(FASHION_DIR, &st) != 0) {
        fprintf(stderr, "check_data: %s not installed, Fashion-MNIST test skipped\n", FASHION_DIR);
        return;
    }
    static const struct {
        const char *split;
        size_t count, per_class;
    } splits[] = {{"train", 60000, 6000}, {"t10k", 10000, 1000}};
    for (int s = 0; s < 2; s++) {
        mpt__dataset_t d;
        size_t per_class[10] = {0};
        ck_assert_mpt_ok(mpt__idx_load_dir(FASHION_DIR, splits[s].split, &d));
        ck_assert_uint_eq(d.count, splits[s].count);
        ck_assert_uint_eq(d.sample_floats, 784);
        ck_assert_int_eq(d.ndims, 3);
        ck_assert_uint_eq(d.dims[0], 1);
        ck_assert_uint_eq(d.dims[1], 28);
        ck_assert_uint_eq(d.dims[2], 28);
        ck_assert_int_eq(d.classes, 10);
        for (size_t i = 0; i < d.count; i++) {
            ck_assert(d.y[i] >= 0 && d.y[i] < 10);
            per_class[d.y[i]]++;
        }
        for (int c = 0; c < 10; c++) /* Fashion-MNIST is balanced */
            ck_assert_uint_eq(per_class[c], splits[s].per_class);
        if (s == 0) {
            /* 0.2860 and 0.3530 are the training set's pixel mean and std
             * rounded to 4 decimals, so the normalised training pixels have
             * mean 0 and std 1 up to that rounding: |mean| <= 0.00005 / 0.353
             * = 1.4e-4 and |std - 1| of the same order; 1e-3 allows it
             * with a margin, and sums in double add nothing visible. */
            double sum = 0.0, sq = 0.0;
            size_t n = d.count * d.sample_floats;
            for (size_t i = 0; i < n; i++)
                sum += d.x[i], sq += (double)d.x[i] * d.x[i];
            double mean = sum / (double)n, std = sqrt(sq / (double)n - mean * mean);
            ck_assert_double_eq_tol(mean, 0.0, 1e-3);
            ck_assert_double_eq_tol(std, 1.0, 1e-3);
        }
        mpt__dataset_free(&d);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("data");
    TCase *idx = tcase_create("idx");
    tcase_set_timeout(idx, 600);
    tcase_add_test(idx, idx_loads_exact_values);
    tcase_add_test(idx, gzip_and_plain_give_the_same_dataset);
    tcase_add_test(idx, load_dir_prefers_gzip);
    tcase_add_test(idx, bad_image_files_fail_clearly);
    tcase_add_test(idx, bad_label_files_and_mismatches_fail_clearly);
    tcase_add_test(idx, corrupt_gzip_fails_clearly);
    tcase_add_test(idx, load_dir_names_what_is_missing);
    tcase_add_test(idx, fashion_mnist_loads);
    suite_add_tcase(s, idx);
    TCase *order = tcase_create("order");
    tcase_set_timeout(order, 600);
    tcase_add_test(order, epoch_order_is_a_seeded_permutation);
    tcase_add_test(order, loader_yields_epochs_in_order);
    tcase_add_test(order, loader_seek_while_preparing);
    tcase_add_test(order, loader_edge_cases_and_quick_free);
    tcase_add_test(order, dataset_from_memory);
    suite_add_tcase(s, order);
    return test_run(s, 1);
}
