/*
 * tests/check_tokens.c: token files (lib/train/tokens.c): text as bytes,
 * llm.c shards and raw uint16 files written here with known tokens; the
 * split (sizes, contents, rounding); seeded random windows (the same for
 * the same seed and index whatever the batch size, others for another
 * index or seed, real consecutive slices with the labels one ahead) and
 * sequential ones covering the set; every bad input failing with its code
 * and a message naming the file and the numbers; ids from memory, copied,
 * with the same windows as a file of the same tokens.  Files live in a
 * mkdtemp directory removed at the end.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char dir[] = "/tmp/check_tokens_XXXXXX";

/* Token i of every shard and raw file written here: distinct for i < 7143,
 * so a window's first value names its start. */
static uint16_t tok(size_t i) { return (uint16_t)((7 * i) % 50000); }

static const char *file(const char *name, const void *data, size_t size)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

/* An llm.c shard of n tokens tok(i), with a header saying `claimed` tokens,
 * magic and version as given. */
static const char *shard(const char *name, size_t n, uint32_t claimed, uint32_t magic,
                         uint32_t version)
{
    size_t size = 1024 + 2 * n;
    unsigned char *b = calloc(1, size);
    ck_assert_ptr_nonnull(b);
    uint32_t head[3] = {magic, version, claimed};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++)
            b[4 * k + j] = (unsigned char)(head[k] >> (8 * j));
    for (size_t i = 0; i < n; i++)
        b[1024 + 2 * i] = (unsigned char)tok(i), b[1024 + 2 * i + 1] = (unsigned char)(tok(i) >> 8);
    const char *p = file(name, b, size);
    free(b);
    return p;
}

/* Asserts the message of the last failure names path and holds a and b. */
static void expect_message(const char *path, const char *a, const char *b)
{
    const char *m = mpt_last_error();
    ck_assert_msg(strstr(m, path) && strstr(m, a) && (!b || strstr(m, b)),
                  "message lacks '%s', '%s' or '%s': %s", path, a, b ? b : "", m);
}

static void expect_error(const char *path, int want, const char *a, const char *b)
{
    mpt_tokens_t *t = (mpt_tokens_t *)&t; /* must come back NULL */
    int status = mpt_tokens_load(path, &t);
    ck_assert_msg(status == want, "%s: %s, expected %s: %s", path, mpt_status_name(status),
                  mpt_status_name(want), mpt_last_error());
    ck_assert_ptr_null(t);
    expect_message(path, a, b);
}

/* Asserts that one window over the whole set, context count - 1, holds
 * every token: x = want[0 .. n-2], y = want[1 .. n-1]. */
static void expect_tokens(const mpt_tokens_t *t, const uint16_t *want, size_t n)
{
    ck_assert_uint_eq(mpt_tokens_count(t), n);
    float *x = malloc((n - 1) * sizeof *x);
    int32_t *y = malloc((n - 1) * sizeof *y);
    ck_assert(x && y);
    ck_assert_uint_eq(mpt_tokens_windows(t, n - 1), 1);
    ck_assert_mpt_ok(mpt_tokens_sequential(t, n - 1, 0, 1, x, y));
    for (size_t i = 0; i + 1 < n; i++) {
        ck_assert_msg(x[i] == (float)want[i], "x[%zu] = %g, want %u", i, (double)x[i], want[i]);
        ck_assert_msg(y[i] == want[i + 1], "y[%zu] = %d, want %u", i, y[i], want[i + 1]);
    }
    free(x);
    free(y);
}

START_TEST(text_bytes)
{
    /* Every byte value, NUL and 0xff included, in a scrambled order. */
    unsigned char bytes[300];
    uint16_t want[300];
    for (size_t i = 0; i < sizeof bytes; i++)
        want[i] = bytes[i] = (unsigned char)((i * 37 + 11) % 256);
    mpt_tokens_t *t = NULL;
    ck_assert_mpt_ok(mpt_tokens_load(file("a.txt", bytes, sizeof bytes), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "text");
    ck_assert_uint_eq(mpt_tokens_vocab(t), 256);
    expect_tokens(t, want, sizeof bytes);
    ck_assert_mpt_ok(mpt_tokens_check_vocab(t, 256));
    mpt_tokens_free(t);
}
END_TEST

START_TEST(llmc_shard)
{
    enum { N = 1000 };
    uint16_t want[N];
    for (size_t i = 0; i < N; i++)
        want[i] = tok(i);
    mpt_tokens_t *t = NULL;
    ck_assert_mpt_ok(mpt_tokens_load(shard("s.bin", N, N, 20240520, 1), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "llm.c shard");
    ck_assert_uint_eq(mpt_tokens_vocab(t), 7 * (N - 1) + 1); /* the largest id + 1 */
    expect_tokens(t, want, N);
    mpt_tokens_free(t);
    /* The magic decides before the name: a shard named .txt is a shard. */
    ck_assert_mpt_ok(mpt_tokens_load(shard("s.txt", N, N, 20240520, 1), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "llm.c shard");
    expect_tokens(t, want, N);
    mpt_tokens_free(t);
}
END_TEST

START_TEST(raw_uint16)
{
    /* Little-endian on disk whatever the host: bytes written one by one. */
    const uint16_t want[6] = {5, 300, 65535, 0, 9, 1};
    unsigned char b[12];
    for (int i = 0; i < 6; i++)
        b[2 * i] = (unsigned char)want[i], b[2 * i + 1] = (unsigned char)(want[i] >> 8);
    mpt_tokens_t *t = NULL;
    const char *path = file("r.bin", b, sizeof b);
    ck_assert_mpt_ok(mpt_tokens_load(path, &t));
    ck_assert_str_eq(mpt_tokens_format(t), "uint16");
    ck_assert_uint_eq(mpt_tokens_vocab(t), 65536);
    expect_tokens(t, want, 6);
    /* Ids beyond a model's vocabulary: the first position and id named. */
    ck_assert_mpt_fails(mpt_tokens_check_vocab(t, 301), MPT_ERR_PARSE);
    expect_message(path, "token 2 is id 65535", "vocabulary of 301");
    ck_assert_mpt_fails(mpt_tokens_check_vocab(t, 10), MPT_ERR_PARSE);
    expect_message(path, "token 1 is id 300", "vocabulary of 10");
    ck_assert_mpt_fails(mpt_tokens_check_vocab(t, 65535), MPT_ERR_PARSE); /* id == vocab */
    expect_message(path, "token 2 is id 65535", "vocabulary of 65535");
    ck_assert_mpt_ok(mpt_tokens_check_vocab(t, 65536));
    mpt_tokens_free(t);
    /* A .bin whose first int32 is not the magic is raw, not an error. */
    uint16_t zeros[512] = {0};
    ck_assert_mpt_ok(mpt_tokens_load(file("z.bin", zeros, sizeof zeros), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "uint16");
    ck_assert_uint_eq(mpt_tokens_count(t), 512);
    ck_assert_uint_eq(mpt_tokens_vocab(t), 1);
    mpt_tokens_free(t);
}
END_TEST

/* Ids from memory: copied (the caller's array may change after), the
 * vocabulary given or the largest id + 1, and the same seeded windows as
 * a file holding the same tokens. */
START_TEST(from_memory)
{
    enum { N = 3000, CONTEXT = 16, BATCH = 4 };
    int32_t *ids = malloc(N * sizeof *ids);
    uint16_t *raw = malloc(N * sizeof *raw);
    ck_assert(ids && raw);
    for (size_t i = 0; i < N; i++)
        ids[i] = tok(i), raw[i] = tok(i); /* little-endian hosts: the file's bytes */
    mpt_tokens_t *mem = NULL, *disk = NULL, *sized = NULL;
    ck_assert_mpt_ok(mpt_tokens_from_memory(ids, N, 0, &mem));
    ck_assert_mpt_ok(mpt_tokens_load(file("same.bin", raw, N * sizeof *raw), &disk));
    ids[0] = 12345; /* after the copy: must not show */
    ck_assert_str_eq(mpt_tokens_format(mem), "memory");
    ck_assert_uint_eq(mpt_tokens_count(mem), N);
    ck_assert_uint_eq(mpt_tokens_vocab(mem), mpt_tokens_vocab(disk));
    float xm[BATCH * CONTEXT], xd[BATCH * CONTEXT];
    int32_t ym[BATCH * CONTEXT], yd[BATCH * CONTEXT];
    for (uint64_t index = 0; index < 3; index++) {
        ck_assert_mpt_ok(mpt_tokens_batch(mem, CONTEXT, BATCH, 7, index, xm, ym));
        ck_assert_mpt_ok(mpt_tokens_batch(disk, CONTEXT, BATCH, 7, index, xd, yd));
        ck_assert_mem_eq(xm, xd, sizeof xm);
        ck_assert_mem_eq(ym, yd, sizeof ym);
    }
    ck_assert_mpt_ok(mpt_tokens_sequential(mem, CONTEXT, 0, 1, xm, ym));
    ck_assert_msg(xm[0] == (float)tok(0), "the copy changed with the caller's array: %g",
                  (double)xm[0]);
    ck_assert_mpt_ok(mpt_tokens_from_memory(ids + 1, 10, 60000, &sized));
    ck_assert_uint_eq(mpt_tokens_vocab(sized), 60000);

    /* Bad ids and sizes: the position and the bound named. */
    mpt_tokens_t *bad = (mpt_tokens_t *)&bad;
    ids[5] = -1;
    ck_assert_mpt_fails(mpt_tokens_from_memory(ids, N, 0, &bad), MPT_ERR_INVALID);
    ck_assert_ptr_null(bad);
    expect_message("tokens in memory", "token 5 is id -1", "outside [0, 65536)");
    ids[5] = 70000;
    ck_assert_mpt_fails(mpt_tokens_from_memory(ids, N, 0, &bad), MPT_ERR_INVALID);
    expect_message("tokens in memory", "token 5 is id 70000", NULL);
    ck_assert_mpt_fails(mpt_tokens_from_memory(ids + 6, 10, 20, &bad), MPT_ERR_INVALID);
    expect_message("tokens in memory", "outside [0, 20)", NULL);
    ck_assert_mpt_fails(mpt_tokens_from_memory(ids, 0, 0, &bad), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_tokens_from_memory(ids, 10, 70000, &bad), MPT_ERR_RANGE);
    mpt_tokens_free(mem);
    mpt_tokens_free(disk);
    mpt_tokens_free(sized);
    free(ids);
    free(raw);
}
END_TEST

START_TEST(split)
{
    mpt_tokens_t *all = NULL, *train = NULL, *val = NULL;
    const char *path = shard("w.bin", 1000, 1000, 20240520, 1);
    ck_assert_mpt_ok(mpt_tokens_load(path, &all));
    ck_assert_mpt_ok(mpt_tokens_split(all, 0.1, &train, &val));
    ck_assert_uint_eq(mpt_tokens_count(train), 900);
    ck_assert_ptr_nonnull(val);
    ck_assert_uint_eq(mpt_tokens_count(val), 100);
    ck_assert_str_eq(mpt_tokens_format(val), "llm.c shard");
    ck_assert_uint_eq(mpt_tokens_vocab(val), mpt_tokens_vocab(all));
    /* Contents: training is tokens 0..899, validation 900..999. */
    uint16_t want[1000];
    for (size_t i = 0; i < 1000; i++)
        want[i] = tok(i);
    expect_tokens(train, want, 900);
    expect_tokens(val, want + 900, 100);
    mpt_tokens_free(train);
    mpt_tokens_free(val);

    /* Rounded down: 1000 * 0.0015 = 1.5 gives 1 token, 0.0005 none. */
    ck_assert_mpt_ok(mpt_tokens_split(all, 0.0015, &train, &val));
    ck_assert_uint_eq(mpt_tokens_count(train), 999);
    ck_assert_ptr_nonnull(val);
    ck_assert_uint_eq(mpt_tokens_count(val), 1);
    mpt_tokens_free(train);
    mpt_tokens_free(val);
    ck_assert_mpt_ok(mpt_tokens_split(all, 0.0005, &train, &val));
    ck_assert_ptr_null(val);
    ck_assert_uint_eq(mpt_tokens_count(train), 1000);
    mpt_tokens_free(train);
    ck_assert_mpt_ok(mpt_tokens_split(all, 0, &train, &val));
    ck_assert_ptr_null(val);
    ck_assert_uint_eq(mpt_tokens_count(train), 1000);
    mpt_tokens_free(train);
    /* Just below 1: training keeps at least one token. */
    ck_assert_mpt_ok(mpt_tokens_split(all, 0.99999999, &train, &val));
    ck_assert_uint_eq(mpt_tokens_count(train), 1);
    ck_assert_uint_eq(mpt_tokens_count(val), 999);
    mpt_tokens_free(train);
    mpt_tokens_free(val);

    const double bad[] = {1.0, -0.25, 2.5};
    const char *text[] = {"fraction of 1 ", "fraction of -0.25", "fraction of 2.5"};
    for (int k = 0; k < 3; k++) {
        train = val = all; /* must come back NULL */
        ck_assert_mpt_fails(mpt_tokens_split(all, bad[k], &train, &val), MPT_ERR_INVALID);
        ck_assert_ptr_null(train);
        ck_assert_ptr_null(val);
        expect_message(path, text[k], NULL);
    }
    mpt_tokens_free(all);
}
END_TEST

/* The start of window b of a batch over a shard view whose first token is
 * tok(base): found from its first value; SIZE_MAX if no token has it. */
static size_t start_of(const float *x, size_t base, size_t n)
{
    for (size_t s = 0; s < n; s++)
        if ((float)tok(base + s) == x[0])
            return s;
    return SIZE_MAX;
}

START_TEST(random_windows)
{
    enum { C = 16, B = 5, N = 900 };
    mpt_tokens_t *all = NULL, *train = NULL, *val = NULL;
    ck_assert_mpt_ok(mpt_tokens_load(shard("b.bin", 1000, 1000, 20240520, 1), &all));
    ck_assert_mpt_ok(mpt_tokens_split(all, 0.1, &train, &val));
    float x[B * C], x2[B * C];
    int32_t y[B * C], y2[B * C];

    /* Real consecutive slices of the training part, labels one ahead. */
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 42, 3, x, y));
    for (int b = 0; b < B; b++) {
        size_t s = start_of(x + b * C, 0, N);
        ck_assert_uint_le(s + C + 1, N);
        for (int i = 0; i < C; i++) {
            ck_assert(x[b * C + i] == (float)tok(s + i));
            ck_assert_int_eq(y[b * C + i], tok(s + i + 1));
        }
    }
    /* On the validation view, the slices come from tokens 900..999. */
    ck_assert_mpt_ok(mpt_tokens_batch(val, C, B, 42, 3, x2, y2));
    for (int b = 0; b < B; b++) {
        size_t s = start_of(x2 + b * C, 900, 100);
        ck_assert_uint_le(s + C + 1, 100);
        ck_assert_int_eq(y2[b * C + C - 1], tok(900 + s + C));
    }

    /* Same (seed, index): the same batch; window b does not depend on the
     * batch size either. */
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 42, 3, x2, y2));
    ck_assert(!memcmp(x, x2, sizeof x) && !memcmp(y, y2, sizeof y));
    for (int i = 0; i < B * C; i++)
        x2[i] = -1.0f; /* no token */
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, 3, 42, 3, x2, y2));
    ck_assert(!memcmp(x, x2, 3 * C * sizeof *x) && !memcmp(y, y2, 3 * C * sizeof *y));
    ck_assert(x2[3 * C] == -1.0f); /* and writes no more than 3 windows */
    /* Another index or another seed: other windows. */
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 42, 4, x2, y2));
    ck_assert(memcmp(x, x2, sizeof x) != 0);
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 43, 3, x2, y2));
    ck_assert(memcmp(x, x2, sizeof x) != 0);

    /* Every start is reachable, the last one included: 18 tokens and a
     * context of 16 leave starts 0 and 1; 64 draws see both (a miss has
     * probability 2^-63 for a fair draw). */
    mpt_tokens_t *tiny = NULL;
    ck_assert_mpt_ok(mpt_tokens_load(shard("tiny.bin", 18, 18, 20240520, 1), &tiny));
    int seen[2] = {0, 0};
    for (uint64_t index = 0; index < 64; index++) {
        ck_assert_mpt_ok(mpt_tokens_batch(tiny, C, 1, 7, index, x, y));
        size_t s = start_of(x, 0, 2);
        ck_assert_uint_lt(s, 2);
        seen[s]++;
    }
    ck_assert_msg(seen[0] > 0 && seen[1] > 0, "starts seen: %d x 0, %d x 1", seen[0], seen[1]);
    ck_assert_mpt_fails(mpt_tokens_batch(tiny, C, 1, 7, (uint64_t)1 << 56, x, y), MPT_ERR_RANGE);
    expect_message("tiny.bin", "batch index 72057594037927936", NULL);
    mpt_tokens_free(tiny);
    mpt_tokens_free(train);
    mpt_tokens_free(val);
    mpt_tokens_free(all);
}
END_TEST

START_TEST(sequential_windows)
{
    enum { C = 16, N = 1000 };
    mpt_tokens_t *t = NULL;
    const char *path = shard("q.bin", N, N, 20240520, 1);
    ck_assert_mpt_ok(mpt_tokens_load(path, &t));
    size_t w = mpt_tokens_windows(t, C);
    ck_assert_uint_eq(w, (N - 1) / C); /* 62: 62 * 16 + 1 = 993 <= 1000 < 63 * 16 + 1 */
    float *x = malloc(w * C * sizeof *x);
    int32_t *y = malloc(w * C * sizeof *y);
    ck_assert(x && y);
    ck_assert_mpt_ok(mpt_tokens_sequential(t, C, 0, w, x, y));
    /* Together they are tokens 0 .. w*C - 1, each with its successor. */
    for (size_t i = 0; i < w * C; i++) {
        ck_assert_msg(x[i] == (float)tok(i), "x[%zu] = %g", i, (double)x[i]);
        ck_assert_int_eq(y[i], tok(i + 1));
    }
    /* A later range lands where it should. */
    ck_assert_mpt_ok(mpt_tokens_sequential(t, C, 10, 2, x, y));
    ck_assert(x[0] == (float)tok(160) && y[2 * C - 1] == tok(192));
    ck_assert_mpt_ok(mpt_tokens_sequential(t, C, w, 0, x, y)); /* empty, at the end */
    ck_assert_mpt_fails(mpt_tokens_sequential(t, C, w, 1, x, y), MPT_ERR_RANGE);
    expect_message(path, "windows 62 to 62", "hold 62 windows");
    ck_assert_mpt_fails(mpt_tokens_sequential(t, C, 60, 5, x, y), MPT_ERR_RANGE);
    expect_message(path, "windows 60 to 64", "1000 tokens");
    /* Exactly context + 1 tokens: one window. */
    ck_assert_uint_eq(mpt_tokens_windows(t, N - 1), 1);
    ck_assert_uint_eq(mpt_tokens_windows(t, N), 0);
    /* 1000 = 100 * 10: the 100th window would need token 1000. */
    ck_assert_uint_eq(mpt_tokens_windows(t, 10), 99);
    ck_assert_uint_eq(mpt_tokens_windows(t, 0), 0);
    free(x);
    free(y);
    mpt_tokens_free(t);
}
END_TEST

START_TEST(bad_files)
{
    expect_error(shard("version.bin", 10, 10, 20240520, 2), MPT_ERR_PARSE, "version 2",
                 "reads version 1");
    /* 10 tokens written, 12 claimed: 1044 bytes expected... */
    expect_error(shard("count.bin", 10, 12, 20240520, 1), MPT_ERR_PARSE, "says 12 tokens",
                 "the file has 1044 bytes");
    /* ... and 12 written, 10 claimed: trailing bytes are refused too. */
    expect_error(shard("long.bin", 12, 10, 20240520, 1), MPT_ERR_PARSE, "says 10 tokens",
                 "the file has 1048 bytes");
    expect_error(shard("negative.bin", 10, 0xffffffffu, 20240520, 1), MPT_ERR_PARSE,
                 "says -1 tokens",
                 "a negative count");
    expect_error(shard("none.bin", 0, 0, 20240520, 1), MPT_ERR_PARSE, "no tokens", "1024 bytes");
    /* The magic and then less than the 1024-byte header. */
    unsigned char head[500] = {20240520 & 0xff, 20240520 >> 8 & 0xff, 20240520 >> 16 & 0xff,
                               20240520 >> 24, 1};
    expect_error(file("cut.bin", head, sizeof head), MPT_ERR_PARSE, "500 bytes",
                 "header of 1024");
    /* No magic, .bin: raw uint16, which must have an even size. */
    expect_error(file("odd.bin", "abc", 3), MPT_ERR_PARSE, "odd size", "3 bytes");
    expect_error(file("empty.txt", "", 0), MPT_ERR_PARSE, "no tokens", "0 bytes");
    expect_error(file("empty.bin", "", 0), MPT_ERR_PARSE, "no tokens", "uint16");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.txt", dir);
    expect_error(missing, MPT_ERR_NOT_FOUND, "No such file", NULL);
    expect_error(dir, MPT_ERR_IO, "is a directory", NULL);
    mpt_tokens_t *t = (mpt_tokens_t *)&t;
    ck_assert_mpt_fails(mpt_tokens_load(NULL, &t), MPT_ERR_INVALID);
    ck_assert_ptr_null(t);
}
END_TEST

START_TEST(short_sets)
{
    mpt_tokens_t *t = NULL;
    float x[16];
    int32_t y[16];
    const char *path = file("short.txt", "0123456789", 10);
    ck_assert_mpt_ok(mpt_tokens_load(path, &t));
    ck_assert_mpt_fails(mpt_tokens_batch(t, 16, 1, 1, 0, x, y), MPT_ERR_INVALID);
    expect_message(path, ": 10 tokens, shorter than the context of 16 plus one", NULL);
    ck_assert_mpt_fails(mpt_tokens_batch(t, 10, 1, 1, 0, x, y), MPT_ERR_INVALID);
    expect_message(path, "10 tokens", "context of 10 plus one");
    ck_assert_mpt_fails(mpt_tokens_sequential(t, 16, 0, 1, x, y), MPT_ERR_INVALID);
    expect_message(path, "10 tokens", "context of 16 plus one");
    ck_assert_uint_eq(mpt_tokens_windows(t, 16), 0);
    ck_assert_mpt_fails(mpt_tokens_batch(t, 0, 1, 1, 0, x, y), MPT_ERR_INVALID);
    expect_message(path, "context of 0", NULL);
    /* 10 = 9 + 1 fits: the one window is the whole file. */
    ck_assert_mpt_ok(mpt_tokens_batch(t, 9, 1, 1, 0, x, y));
    ck_assert(x[0] == '0' && x[8] == '8' && y[0] == '1' && y[8] == '9');
    mpt_tokens_free(t);
}
END_TEST

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("tokens");
    TCase *tc = tcase_create("files");
    tcase_add_test(tc, text_bytes);
    tcase_add_test(tc, llmc_shard);
    tcase_add_test(tc, raw_uint16);
    tcase_add_test(tc, from_memory);
    tcase_add_test(tc, split);
    tcase_add_test(tc, random_windows);
    tcase_add_test(tc, sequential_windows);
    tcase_add_test(tc, bad_files);
    tcase_add_test(tc, short_sets);
    suite_add_tcase(s, tc);
    int failed = test_run(s, 1);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return failed;
}
