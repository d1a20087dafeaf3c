/*
 * tests/check_safetensors.c: the safetensors reader and writer
 * (lib/core/safetensors.c): round trips, the exact bytes written, a file
 * made by Python's safetensors, every malformed input the reader must
 * refuse (each one MPT_ERR_PARSE naming the file), and atomic writes.
 * No OpenCL here, so the suite runs forked; every test gets its own
 * temporary directory from a checked fixture.  The values compared are
 * stored and loaded bit for bit, so every comparison is exact.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------- */

static char dir[256];

static void make_dir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mpt-st-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Removes the directory and what the tests put in it (one level of
 * subdirectories at most). */
static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char p[1024];
    if (!d)
        return;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (unlink(p) != 0)
            remove_tree(p);
    }
    closedir(d);
    rmdir(path);
}

static void remove_dir(void) { remove_tree(dir); }

/* dir/name, in one of four rotating buffers. */
static const char *in_dir(const char *name)
{
    static char bufs[4][1024];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void put_le(unsigned char *p, uint64_t v, int size)
{
    for (int i = 0; i < size; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_f32(unsigned char *p, float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    put_le(p, u, 4);
}

/* A safetensors file from a header text (padded with spaces to 8 bytes
 * like a real writer) and data_len data bytes (0, 1, 2, ...). */
static void write_st(const char *path, const char *header, size_t data_len)
{
    size_t len = strlen(header), padded = (len + 7) / 8 * 8;
    unsigned char *b = malloc(8 + padded + data_len + 1);
    put_le(b, padded, 8);
    memcpy(b + 8, header, len);
    memset(b + 8 + len, ' ', padded - len);
    for (size_t i = 0; i < data_len; i++)
        b[8 + padded + i] = (unsigned char)i;
    write_bytes(path, b, 8 + padded + data_len);
    free(b);
}

/* Reading path fails with MPT_ERR_PARSE, a detail naming the file and
 * containing `fragment`, and no file object. */
static void assert_parse_error(const char *path, const char *fragment)
{
    mpt__st_file_t *f = (mpt__st_file_t *)&f; /* must be reset to NULL */
    ck_assert_mpt_fails(mpt__st_read(path, &f), MPT_ERR_PARSE);
    ck_assert_ptr_null(f);
    const char *msg = mpt_last_error();
    ck_assert_msg(strstr(msg, path) != NULL, "detail \"%s\" does not name %s", msg, path);
    ck_assert_msg(strstr(msg, fragment) != NULL, "detail \"%s\" lacks \"%s\"", msg, fragment);
    ck_assert_msg(strchr(msg, '\n') == NULL, "detail \"%s\" is not one line", msg);
}

/* Names in dir other than `except` (NULL: any). */
static int other_entries(const char *except)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (!except || strcmp(e->d_name, except)))
            n++;
    closedir(d);
    return n;
}

/* ---- the tensors of the round trip -------------------------------------- */

static const float scalar = 3.5f;
/* I64 right after a 4-byte tensor: its bytes sit at offset 4 of the data,
 * so the reader must copy rather than hand out a misaligned pointer. */
static const int64_t steps[2] = {INT64_C(1) << 40, -5};
static const float vec[3] = {1.0f, -2.0f, 0.25f};
static const int32_t ids[4] = {0, -1, INT32_MAX, INT32_MIN};
static float cube[2 * 3 * 4];
static const size_t cube_shape[3] = {2, 3, 4};

static const char round_trip_header[] =
    "{\"__metadata__\":{\"format\":\"mpt\",\"step\":\"42\"},"
    "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
    "\"steps\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[4,20]},"
    "\"vec\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[20,32]},"
    "\"cube\":{\"dtype\":\"F32\",\"shape\":[2,3,4],\"data_offsets\":[32,128]},"
    "\"ids\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[128,144]}}";
#define ROUND_TRIP_DATA 144

static mpt__st_file_t *round_trip_file(void)
{
    mpt__st_file_t *f;
    size_t n3 = 3, n2 = 2, n4 = 4;
    for (int i = 0; i < 24; i++)
        cube[i] = 0.5f * (float)i - 6.0f;
    ck_assert_mpt_ok(mpt__st_create(&f));
    ck_assert_mpt_ok(mpt__st_add(f, "scalar", MPT_ST_F32, 0, NULL, &scalar));
    ck_assert_mpt_ok(mpt__st_add(f, "steps", MPT_ST_I64, 1, &n2, steps));
    ck_assert_mpt_ok(mpt__st_add(f, "vec", MPT_ST_F32, 1, &n3, vec));
    ck_assert_mpt_ok(mpt__st_add(f, "cube", MPT_ST_F32, 3, cube_shape, cube));
    ck_assert_mpt_ok(mpt__st_add(f, "ids", MPT_ST_I32, 1, &n4, ids));
    /* Overwriting a key keeps its place: "format" stays first. */
    ck_assert_mpt_ok(mpt__st_set_meta(f, "format", "pt"));
    ck_assert_mpt_ok(mpt__st_set_meta(f, "step", "42"));
    ck_assert_mpt_ok(mpt__st_set_meta(f, "format", "mpt"));
    return f;
}

static void assert_tensor(const mpt__st_tensor_t *t, const char *name, mpt__st_dtype_t dtype,
                          int ndim, const size_t *shape, const void *data, size_t bytes)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t->name, name);
    ck_assert_int_eq(t->dtype, dtype);
    ck_assert_int_eq(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_uint_eq(t->shape[d], shape[d]);
    ck_assert_uint_eq(t->bytes, bytes);
    ck_assert_ptr_nonnull(t->data);
    ck_assert_msg(bytes == 0 || memcmp(t->data, data, bytes) == 0, "%s: data differ", name);
}

static void assert_round_trip_contents(const mpt__st_file_t *f)
{
    size_t n2 = 2, n3 = 3, n4 = 4;
    ck_assert_uint_eq(mpt__st_count(f), 5);
    assert_tensor(mpt__st_at(f, 0), "scalar", MPT_ST_F32, 0, NULL, &scalar, 4);
    assert_tensor(mpt__st_at(f, 1), "steps", MPT_ST_I64, 1, &n2, steps, 16);
    assert_tensor(mpt__st_at(f, 2), "vec", MPT_ST_F32, 1, &n3, vec, 12);
    assert_tensor(mpt__st_at(f, 3), "cube", MPT_ST_F32, 3, cube_shape, cube, 96);
    assert_tensor(mpt__st_at(f, 4), "ids", MPT_ST_I32, 1, &n4, ids, 16);
    ck_assert_ptr_null(mpt__st_at(f, 5));
    ck_assert_ptr_eq(mpt__st_get(f, "cube"), mpt__st_at(f, 3));
    ck_assert_ptr_null(mpt__st_get(f, "absent"));
    ck_assert_ptr_null(mpt__st_get(f, "__metadata__"));
    ck_assert_str_eq(mpt__st_meta(f, "format"), "mpt");
    ck_assert_str_eq(mpt__st_meta(f, "step"), "42");
    ck_assert_ptr_null(mpt__st_meta(f, "absent"));
    /* Typed access through the data pointer works: it is aligned. */
    ck_assert(((const int64_t *)mpt__st_get(f, "steps")->data)[0] == INT64_C(1) << 40);
    ck_assert_int_eq(((const int32_t *)mpt__st_get(f, "ids")->data)[3], INT32_MIN);
}

/* ---- round trips and exact bytes ---------------------------------------- */

START_TEST(round_trip_keeps_everything)
{
    mpt__st_file_t *w = round_trip_file(), *r = NULL;
    const char *path = in_dir("model.safetensors");
    assert_round_trip_contents(w);
    ck_assert_mpt_ok(mpt__st_write(w, path));
    ck_assert_mpt_ok(mpt__st_read(path, &r));
    assert_round_trip_contents(r);
    /* Only the file is left: the temporary was renamed, not copied. */
    ck_assert_int_eq(other_entries("model.safetensors"), 0);
    mpt__st_free(w);
    mpt__st_free(r);
}
END_TEST

START_TEST(written_bytes_are_exact)
{
    mpt__st_file_t *w = round_trip_file();
    const char *path = in_dir("exact.safetensors");
    size_t len, hlen = strlen(round_trip_header), padded = (hlen + 7) / 8 * 8;
    unsigned char expect[ROUND_TRIP_DATA], *p = expect;
    ck_assert_mpt_ok(mpt__st_write(w, path));
    unsigned char *b = read_bytes(path, &len);
    ck_assert_uint_eq(len, 8 + padded + ROUND_TRIP_DATA);
    ck_assert_uint_eq(padded % 8, 0);
    /* The length field, little-endian, whatever the host. */
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(b[i], (padded >> (8 * i)) & 0xff);
    ck_assert_msg(memcmp(b + 8, round_trip_header, hlen) == 0, "header differs: %.*s",
                  (int)hlen, (const char *)b + 8);
    for (size_t i = hlen; i < padded; i++)
        ck_assert_uint_eq(b[8 + i], ' ');
    /* The data, little-endian, in insertion order, no gaps. */
    put_f32(p, scalar), p += 4;
    for (int i = 0; i < 2; i++)
        put_le(p, (uint64_t)steps[i], 8), p += 8;
    for (int i = 0; i < 3; i++)
        put_f32(p, vec[i]), p += 4;
    for (int i = 0; i < 24; i++)
        put_f32(p, cube[i]), p += 4;
    for (int i = 0; i < 4; i++)
        put_le(p, (uint32_t)ids[i], 4), p += 4;
    ck_assert_uint_eq((size_t)(p - expect), ROUND_TRIP_DATA);
    ck_assert(memcmp(b + 8 + padded, expect, ROUND_TRIP_DATA) == 0);
    free(b);
    mpt__st_free(w);
}
END_TEST

START_TEST(empty_and_zero_size_tensors)
{
    mpt__st_file_t *w, *r;
    size_t len, zero[2] = {3, 0}, one = 1;
    const float x = 9.0f;
    /* No tensors, no metadata: "{}" padded to 8 bytes, 16 bytes in all. */
    ck_assert_mpt_ok(mpt__st_create(&w));
    ck_assert_mpt_ok(mpt__st_write(w, in_dir("empty.safetensors")));
    unsigned char *b = read_bytes(in_dir("empty.safetensors"), &len);
    ck_assert_uint_eq(len, 16);
    ck_assert(memcmp(b, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    free(b);
    ck_assert_mpt_ok(mpt__st_read(in_dir("empty.safetensors"), &r));
    ck_assert_uint_eq(mpt__st_count(r), 0);
    ck_assert_ptr_null(mpt__st_at(r, 0));
    ck_assert_ptr_null(mpt__st_meta(r, "format"));
    mpt__st_free(r);
    /* Zero-size tensors share an offset with their neighbour: still no
     * hole and no overlap. */
    ck_assert_mpt_ok(mpt__st_add(w, "none", MPT_ST_F32, 2, zero, NULL));
    ck_assert_mpt_ok(mpt__st_add(w, "x", MPT_ST_F32, 1, &one, &x));
    ck_assert_mpt_ok(mpt__st_add(w, "none64", MPT_ST_I64, 1, &zero[1], NULL));
    ck_assert_mpt_ok(mpt__st_write(w, in_dir("zero.safetensors")));
    ck_assert_mpt_ok(mpt__st_read(in_dir("zero.safetensors"), &r));
    assert_tensor(mpt__st_at(r, 0), "none", MPT_ST_F32, 2, zero, NULL, 0);
    assert_tensor(mpt__st_at(r, 1), "x", MPT_ST_F32, 1, &one, &x, 4);
    assert_tensor(mpt__st_at(r, 2), "none64", MPT_ST_I64, 1, &zero[1], NULL, 0);
    mpt__st_free(r);
    mpt__st_free(w);
}
END_TEST

START_TEST(large_tensor_round_trip)
{
    /* 4 MB, a small checkpoint: checks nothing assumes tiny files. */
    enum { N = 1 << 20 };
    size_t shape[2] = {1024, 1024};
    float *x = malloc(N * sizeof *x);
    mpt__st_file_t *w, *r;
    for (int i = 0; i < N; i++)
        x[i] = (float)i * 1e-3f - 7.0f;
    ck_assert_mpt_ok(mpt__st_create(&w));
    ck_assert_mpt_ok(mpt__st_add(w, "w", MPT_ST_F32, 2, shape, x));
    ck_assert_mpt_ok(mpt__st_write(w, in_dir("big.safetensors")));
    ck_assert_mpt_ok(mpt__st_read(in_dir("big.safetensors"), &r));
    assert_tensor(mpt__st_get(r, "w"), "w", MPT_ST_F32, 2, shape, x, N * sizeof *x);
    mpt__st_free(r);
    mpt__st_free(w);
    free(x);
}
END_TEST

START_TEST(writer_rejects_bad_tensors)
{
    mpt__st_file_t *w;
    size_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, two = 2;
    float x[2] = {1.0f, 2.0f};
    ck_assert_mpt_ok(mpt__st_create(&w));
    ck_assert_mpt_ok(mpt__st_add(w, "x", MPT_ST_F32, 1, &two, x));
    /* The data was copied: changing the caller's array changes nothing. */
    x[0] = 5.0f;
    ck_assert(((const float *)mpt__st_get(w, "x")->data)[0] == 1.0f);
    ck_assert_mpt_fails(mpt__st_add(w, "x", MPT_ST_F32, 1, &two, x), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_add(w, "__metadata__", MPT_ST_F32, 1, &two, x), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_add(w, NULL, MPT_ST_F32, 1, &two, x), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_add(w, "y", MPT_ST_F32, 9, nine, x), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_add(w, "y", MPT_ST_F32, -1, nine, x), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_add(w, "y", (mpt__st_dtype_t)7, 1, &two, x), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_add(w, "y", MPT_ST_F32, 1, &two, NULL), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_set_meta(w, "k", NULL), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__st_set_meta(w, NULL, "v"), MPT_ERR_INVALID);
    ck_assert_uint_eq(mpt__st_count(w), 1);
    ck_assert_ptr_null(mpt__st_meta(w, "k"));
    mpt__st_free(w);
    mpt__st_free(NULL);
}
END_TEST

/* ---- a file written by Python ------------------------------------------- */

/* The bytes of a file written by Python's safetensors 0.8.0 (pip) with
 * torch 1.13 (Debian python3-torch), dumped by:
 *
 *   import torch
 *   from safetensors.torch import save_file
 *   t = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) - 2.5,
 *        "bias": torch.tensor([0.5, -1.0]),
 *        "step": torch.tensor(7, dtype=torch.int64),
 *        "ids": torch.tensor([3, -1, 2], dtype=torch.int32)}
 *   save_file(t, "tiny.safetensors", metadata={"format": "pt"})
 *   b = open("tiny.safetensors", "rb").read()
 *   n = int.from_bytes(b[:8], "little")
 *   print(n, repr(b[8:8 + n]), b[8 + n:].hex())
 *
 * It orders tensors by alignment, then name, writes compact JSON with
 * "__metadata__" first and pads with spaces to 8 bytes (264 here). */
static const char py_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"step\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
    "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
    "\"weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]},"
    "\"ids\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[40,52]}} ";
static const unsigned char py_data[52] = {
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x00,
    0x00, 0x80, 0xbf, 0x00, 0x00, 0x20, 0xc0, 0x00, 0x00, 0xc0, 0xbf, 0x00, 0x00,
    0x00, 0xbf, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x20,
    0x40, 0x03, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00};

/* The Python file's bytes in a malloc'ed buffer of *len bytes. */
static unsigned char *python_bytes(size_t *len)
{
    size_t hlen = sizeof py_header - 1;
    unsigned char *b = malloc(8 + hlen + sizeof py_data);
    ck_assert_uint_eq(hlen, 264);
    put_le(b, hlen, 8);
    memcpy(b + 8, py_header, hlen);
    memcpy(b + 8 + hlen, py_data, sizeof py_data);
    *len = 8 + hlen + sizeof py_data;
    return b;
}

START_TEST(reads_python_file)
{
    size_t len, s0[1] = {0}, s2[1] = {2}, s23[2] = {2, 3}, s3[1] = {3};
    const int64_t step = 7;
    const float bias[2] = {0.5f, -1.0f}, weight[6] = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f};
    const int32_t pids[3] = {3, -1, 2};
    unsigned char *b = python_bytes(&len);
    const char *path = in_dir("tiny.safetensors");
    mpt__st_file_t *r;
    write_bytes(path, b, len);
    ck_assert_mpt_ok(mpt__st_read(path, &r));
    ck_assert_uint_eq(mpt__st_count(r), 4);
    /* Tensors come in the header's order. */
    assert_tensor(mpt__st_at(r, 0), "step", MPT_ST_I64, 0, s0, &step, 8);
    assert_tensor(mpt__st_at(r, 1), "bias", MPT_ST_F32, 1, s2, bias, 8);
    assert_tensor(mpt__st_at(r, 2), "weight", MPT_ST_F32, 2, s23, weight, 24);
    assert_tensor(mpt__st_at(r, 3), "ids", MPT_ST_I32, 1, s3, pids, 12);
    ck_assert_str_eq(mpt__st_meta(r, "format"), "pt");

    /* Written back, the file is byte for byte what Python wrote. */
    ck_assert_mpt_ok(mpt__st_write(r, in_dir("again.safetensors")));
    size_t len2;
    unsigned char *b2 = read_bytes(in_dir("again.safetensors"), &len2);
    ck_assert_uint_eq(len2, len);
    ck_assert(memcmp(b, b2, len) == 0);
    free(b2);
    free(b);
    mpt__st_free(r);
}
END_TEST

/* ---- malformed files ------------------------------------------------------ */

static const struct {
    const char *header;
    size_t data_len;
    const char *fragment; /* expected in the detail, with the file name */
} bad[] = {
    {"{\"a\":", 0, "not a JSON object"},
    {"[1,2]", 0, "not a JSON object"},
    {"", 0, "not a JSON object"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "duplicate"},
    {"{\"a\":5}", 0, "\"a\": entry is not an object"},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"a\": needs dtype"},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "\"a\": needs dtype"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "\"a\": needs dtype"},
    {"{\"a\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"a\": needs dtype"},
    {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "\"a\": unsupported dtype \"F16\""},
    {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype \"f32\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "\"a\": shape[0]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2.0],\"data_offsets\":[0,8]}}", 8, "\"a\": shape[1]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "\"a\": shape[0]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     "\"a\": 9 dimensions"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "\"a\": data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"a\": data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "\"a\": data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "\"a\": data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, "\"a\": data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, "\"a\": needs dtype"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "\"a\": data_offsets [0, 4] hold 4 bytes, shape and dtype need 8"},
    {"{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "need 8"},
    /* A product that overflows size_t must not wrap around to a match. */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0,
     "\"a\": data_offsets [0, 0]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "\"a\": data_offsets [0, 8] beyond the 4-byte data section"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "\"b\" overlaps tensor \"a\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     4, "overlaps"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, "\"b\": hole of 4 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "\"a\": hole of 4 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "4 trailing bytes after the last tensor \"a\""},
    {"{}", 4, "4 trailing bytes"},
    {"{\"__metadata__\":{\"format\":\"pt\",\"k\":1}}", 0, "__metadata__ key \"k\""},
    {"{\"__metadata__\":{\"k\":null}}", 0, "__metadata__ key \"k\""},
    {"{\"__metadata__\":\"pt\"}", 0, "__metadata__ is not an object"},
};
#define N_BAD (int)(sizeof bad / sizeof bad[0])

START_TEST(malformed_header_is_refused)
{
    const char *path = in_dir("bad.safetensors");
    write_st(path, bad[_i].header, bad[_i].data_len);
    assert_parse_error(path, bad[_i].fragment);
}
END_TEST

START_TEST(too_short_file_is_refused)
{
    const char *path = in_dir("short.safetensors");
    write_bytes(path, "", 0);
    assert_parse_error(path, "0 bytes, shorter than the 8-byte header length");
    write_bytes(path, "\x02\0\0\0\0", 5);
    assert_parse_error(path, "5 bytes, shorter");
}
END_TEST

START_TEST(bad_header_length_is_refused)
{
    size_t len;
    unsigned char *b = python_bytes(&len);
    const char *path = in_dir("len.safetensors");
    /* One byte more than the file holds. */
    put_le(b, len - 8 + 1, 8);
    write_bytes(path, b, len);
    assert_parse_error(path, "header length 317 exceeds the file (324 bytes)");
    /* A huge length (top bit set) must not overflow into "fits". */
    put_le(b, UINT64_C(1) << 63 | 16, 8);
    write_bytes(path, b, len);
    assert_parse_error(path, "exceeds the file");
    /* Shorter by 8: the JSON is cut. */
    put_le(b, 256, 8);
    write_bytes(path, b, len);
    assert_parse_error(path, "not a JSON object");
    /* Shorter by the one padding space: the JSON still parses, but the
     * data section gains a byte that no tensor covers. */
    put_le(b, 263, 8);
    write_bytes(path, b, len);
    assert_parse_error(path, "1 trailing bytes after the last tensor \"ids\"");
    free(b);
}
END_TEST

START_TEST(absurd_header_length_is_refused)
{
    /* A 101 MB sparse file whose length field claims a 100,000,001-byte
     * header: within the file, but beyond any real header; refused before
     * anything is read or allocated. */
    const char *path = in_dir("absurd.safetensors");
    unsigned char prefix[8];
    put_le(prefix, 100000001, 8);
    write_bytes(path, prefix, 8);
    ck_assert_int_eq(truncate(path, 101000000), 0);
    assert_parse_error(path, "header length 100000001 exceeds the file (101000000 bytes) or the 100000000-byte limit");
}
END_TEST

START_TEST(corrupted_file_is_refused)
{
    size_t len;
    unsigned char *b = python_bytes(&len);
    const char *path = in_dir("cut.safetensors");
    /* Truncated by one byte: the last tensor runs past the end. */
    write_bytes(path, b, len - 1);
    assert_parse_error(path, "\"ids\": data_offsets [40, 52] beyond the 51-byte data section");
    /* Truncated inside the header. */
    write_bytes(path, b, 100);
    assert_parse_error(path, "exceeds the file (100 bytes)");
    write_bytes(path, b, 4);
    assert_parse_error(path, "4 bytes, shorter");
    /* Edited offsets of the same width, sizes still right: "weight"
     * moved back 4 bytes overlaps "bias"; moved on 4 leaves a hole. */
    char *at = strstr((char *)b + 8, "[16,40]");
    ck_assert_ptr_nonnull(at);
    memcpy(at, "[12,36]", 7);
    write_bytes(path, b, len);
    assert_parse_error(path, "\"weight\" overlaps tensor \"bias\"");
    memcpy(at, "[20,44]", 7);
    write_bytes(path, b, len);
    assert_parse_error(path, "\"weight\": hole of 4 bytes");
    free(b);
    b = python_bytes(&len);
    at = strstr((char *)b + 8, "[16,40]");
    memcpy(at, "[16,36]", 7); /* 20 bytes for a 24-byte [2,3] F32 */
    write_bytes(path, b, len);
    assert_parse_error(path, "\"weight\": data_offsets [16, 36] hold 20 bytes, shape and dtype need 24");
    free(b);
    b = python_bytes(&len);
    at = strstr((char *)b + 8, "\"shape\":[2,3]");
    memcpy(at, "\"shape\":[3,2]", 13); /* same size: still a valid file */
    write_bytes(path, b, len);
    mpt__st_file_t *r;
    ck_assert_mpt_ok(mpt__st_read(path, &r));
    ck_assert_uint_eq(mpt__st_get(r, "weight")->shape[0], 3);
    mpt__st_free(r);
    free(b);
}
END_TEST

START_TEST(missing_or_unreadable_file)
{
    mpt__st_file_t *r = (mpt__st_file_t *)&r;
    const char *path = in_dir("nothing.safetensors");
    ck_assert_mpt_fails(mpt__st_read(path, &r), MPT_ERR_NOT_FOUND);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), path));
    /* A directory is no file. */
    ck_assert_mpt_fails(mpt__st_read(dir, &r), MPT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), dir));
}
END_TEST

/* ---- atomic writes -------------------------------------------------------- */

static mpt__st_file_t *one_value(float v)
{
    mpt__st_file_t *f;
    size_t one = 1;
    ck_assert_mpt_ok(mpt__st_create(&f));
    ck_assert_mpt_ok(mpt__st_add(f, "v", MPT_ST_F32, 1, &one, &v));
    return f;
}

static float read_value(const char *path)
{
    mpt__st_file_t *r;
    ck_assert_mpt_ok(mpt__st_read(path, &r));
    float v = *(const float *)mpt__st_get(r, "v")->data;
    mpt__st_free(r);
    return v;
}

START_TEST(write_to_missing_directory_fails_cleanly)
{
    mpt__st_file_t *w = one_value(1.0f);
    const char *path = in_dir("no/such/dir/x.safetensors");
    ck_assert_mpt_fails(mpt__st_write(w, path), MPT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), path));
    ck_assert_int_eq(other_entries(NULL), 0); /* no temporary anywhere */
    /* Renaming onto a directory fails after the temporary was written:
     * the temporary is removed, the directory untouched. */
    ck_assert_int_eq(mkdir(in_dir("target"), 0755), 0);
    ck_assert_mpt_fails(mpt__st_write(w, in_dir("target")), MPT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), in_dir("target")));
    ck_assert_int_eq(other_entries("target"), 0);
    mpt__st_free(w);
}
END_TEST

/* What the writer writes its reader must read: a header past the reader's
 * 100,000,000-byte limit (a 200 MB model comment in a checkpoint's
 * metadata, issue 21) is refused before anything is written. */
START_TEST(writer_refuses_a_header_its_reader_refuses)
{
    mpt__st_file_t *w = one_value(1.0f);
    size_t n = 100000000;
    char *comment = malloc(n + 1);
    ck_assert_ptr_nonnull(comment);
    memset(comment, 'x', n);
    comment[n] = '\0';
    ck_assert_mpt_ok(mpt__st_set_meta(w, "comment", comment));
    free(comment);
    const char *path = in_dir("big.safetensors");
    ck_assert_mpt_fails(mpt__st_write(w, path), MPT_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "above the 100000000 a reader accepts"));
    ck_assert_int_eq(other_entries(NULL), 0); /* no file, no temporary */
    mpt__st_free(w);
}
END_TEST

START_TEST(crash_before_rename_keeps_old_file)
{
    mpt__st_file_t *v1 = one_value(1.0f), *v2 = one_value(2.0f);
    const char *path = in_dir("ckpt.safetensors");
    char tmp[1100];
    struct stat st;
    ck_assert_mpt_ok(mpt__st_write(v1, path));
    /* What a writer killed between writing and renaming leaves behind:
     * the temporary (here half of a valid v2 file) under the name the
     * library uses, next to the intact old file. */
    ck_assert_mpt_ok(mpt__st_write(v2, in_dir("v2.safetensors")));
    size_t len;
    unsigned char *b = read_bytes(in_dir("v2.safetensors"), &len);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    write_bytes(tmp, b, len / 2);
    free(b);
    ck_assert(read_value(path) == 1.0f);
    /* The next write replaces both the stale temporary and the file. */
    ck_assert_mpt_ok(mpt__st_write(v2, path));
    ck_assert(read_value(path) == 2.0f);
    ck_assert_int_eq(stat(tmp, &st), -1);
    ck_assert_int_eq(errno, ENOENT);
    mpt__st_free(v1);
    mpt__st_free(v2);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("format");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_add_test(tc, round_trip_keeps_everything);
    tcase_add_test(tc, written_bytes_are_exact);
    tcase_add_test(tc, empty_and_zero_size_tensors);
    tcase_add_test(tc, large_tensor_round_trip);
    tcase_add_test(tc, writer_rejects_bad_tensors);
    tcase_add_test(tc, reads_python_file);
    tcase_add_loop_test(tc, malformed_header_is_refused, 0, N_BAD);
    tcase_add_test(tc, too_short_file_is_refused);
    tcase_add_test(tc, bad_header_length_is_refused);
    tcase_add_test(tc, absurd_header_length_is_refused);
    tcase_add_test(tc, corrupted_file_is_refused);
    tcase_add_test(tc, missing_or_unreadable_file);
    tcase_add_test(tc, write_to_missing_directory_fails_cleanly);
    tcase_add_test(tc, crash_before_rename_keeps_old_file);
    tcase_add_test(tc, writer_refuses_a_header_its_reader_refuses);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_run(safetensors_suite(), 1); }
