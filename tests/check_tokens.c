/*
 * tests/check_tokens.c: token files (lib/train/tokens.c): text as bytes,
 * llm.c shards and raw uint16 files written here with known tokens; the
 * split; seeded random windows (the same for the same seed and index,
 * real consecutive slices with the labels one ahead) and sequential ones;
 * every bad input named with its file and numbers.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char dir[] = "/tmp/check_tokens_XXXXXX";

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

/* An llm.c shard of n tokens tok[i] = (7 i) % 50000, with a header saying
 * `claimed` tokens, magic and version as given. */
static const char *shard(const char *name, size_t n, uint32_t claimed, uint32_t magic,
                         uint32_t version)
{
    size_t size = 1024 + 2 * n;
    unsigned char *b = calloc(1, size);
    uint32_t head[3] = {magic, version, claimed};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++)
            b[4 * k + j] = (unsigned char)(head[k] >> (8 * j));
    for (size_t i = 0; i < n; i++) {
        uint16_t t = (uint16_t)((7 * i) % 50000);
        b[1024 + 2 * i] = (unsigned char)t, b[1024 + 2 * i + 1] = (unsigned char)(t >> 8);
    }
    const char *p = file(name, b, size);
    free(b);
    return p;
}

static void expect_error(const char *path, int want, const char *a, const char *b)
{
    mpt_tokens_t *t = NULL;
    int status = mpt_tokens_load(path, &t);
    ck_assert_msg(status == want, "%s: %s, expected %s: %s", path, mpt_status_name(status),
                  mpt_status_name(want), mpt_last_error());
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(mpt_last_error(), path) && strstr(mpt_last_error(), a) &&
                      (!b || strstr(mpt_last_error(), b)),
                  "message lacks '%s'/'%s': %s", a, b ? b : "", mpt_last_error());
}

START_TEST(formats)
{
    mpt_tokens_t *t = NULL;
    const char *text = "hello, tokens\n\xff";
    ck_assert_mpt_ok(mpt_tokens_load(file("a.txt", text, strlen(text)), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "text");
    ck_assert_uint_eq(mpt_tokens_count(t), strlen(text));
    ck_assert_uint_eq(mpt_tokens_vocab(t), 256);
    float x[4];
    int32_t y[4];
    ck_assert_mpt_ok(mpt_tokens_sequential(t, 4, 0, 1, x, y));
    ck_assert(x[0] == 'h' && x[3] == 'l' && y[0] == 'e' && y[3] == 'o');
    mpt_tokens_free(t);

    ck_assert_mpt_ok(mpt_tokens_load(shard("s.bin", 1000, 1000, 20240520, 1), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "llm.c shard");
    ck_assert_uint_eq(mpt_tokens_count(t), 1000);
    ck_assert_uint_eq(mpt_tokens_vocab(t), 7 * 999 + 1);
    float xs[10];
    int32_t ys[10];
    ck_assert_mpt_ok(mpt_tokens_sequential(t, 10, 3, 1, xs, ys)); /* tokens 30..40 */
    ck_assert(xs[0] == 210.0f && xs[9] == 273.0f && ys[9] == 280);
    mpt_tokens_free(t);

    uint16_t raw[6] = {5, 300, 65535, 0, 9, 1};
    ck_assert_mpt_ok(mpt_tokens_load(file("r.bin", raw, sizeof raw), &t));
    ck_assert_str_eq(mpt_tokens_format(t), "uint16");
    ck_assert_uint_eq(mpt_tokens_count(t), 6);
    ck_assert_uint_eq(mpt_tokens_vocab(t), 65536);
    ck_assert_mpt_ok(mpt_tokens_sequential(t, 2, 1, 1, x, y));
    ck_assert(x[0] == 65535.0f && x[1] == 0.0f && y[0] == 0 && y[1] == 9);
    ck_assert_mpt_fails(mpt_tokens_check_vocab(t, 301), MPT_ERR_PARSE);
    ck_assert_msg(strstr(mpt_last_error(), "token 2 is id 65535") &&
                      strstr(mpt_last_error(), "301"),
                  "%s", mpt_last_error());
    ck_assert_mpt_ok(mpt_tokens_check_vocab(t, 65536));
    mpt_tokens_free(t);
}
END_TEST

START_TEST(split_and_windows)
{
    mpt_tokens_t *all = NULL, *train = NULL, *val = NULL;
    ck_assert_mpt_ok(mpt_tokens_load(shard("w.bin", 1000, 1000, 20240520, 1), &all));
    ck_assert_mpt_ok(mpt_tokens_split(all, 0.1, &train, &val));
    ck_assert_uint_eq(mpt_tokens_count(train), 900);
    ck_assert_uint_eq(mpt_tokens_count(val), 100);
    enum { C = 16, B = 5 };
    float x[B * C], x2[B * C];
    int32_t y[B * C], y2[B * C];
    /* The validation part starts where training ends. */
    ck_assert_mpt_ok(mpt_tokens_sequential(val, C, 0, 1, x, y));
    ck_assert(x[0] == (float)((7 * 900) % 50000));
    ck_assert_uint_eq(mpt_tokens_windows(val, C), 99 / C);
    ck_assert_mpt_fails(mpt_tokens_sequential(val, C, 6, 1, x, y), MPT_ERR_RANGE);
    /* Random windows: consecutive tokens of the training part, labels one
     * ahead, the same for the same (seed, index), others for another. */
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 42, 3, x, y));
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 42, 3, x2, y2));
    ck_assert(!memcmp(x, x2, sizeof x) && !memcmp(y, y2, sizeof y));
    for (int b = 0; b < B; b++) {
        size_t start = 0;
        while (start < 900 && (float)((7 * start) % 50000) != x[b * C])
            start++;
        ck_assert_uint_le(start + C + 1, 900);
        for (int i = 0; i < C; i++) {
            ck_assert(x[b * C + i] == (float)((7 * (start + i)) % 50000));
            ck_assert_int_eq(y[b * C + i], (int32_t)((7 * (start + i + 1)) % 50000));
        }
    }
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 42, 4, x2, y2));
    ck_assert(memcmp(x, x2, sizeof x) != 0);
    ck_assert_mpt_ok(mpt_tokens_batch(train, C, B, 43, 3, x2, y2));
    ck_assert(memcmp(x, x2, sizeof x) != 0);
    ck_assert_mpt_fails(mpt_tokens_split(all, 1.0, &train, &val), MPT_ERR_INVALID);
    mpt_tokens_free(train);
    mpt_tokens_free(val);
    ck_assert_mpt_ok(mpt_tokens_split(all, 0, &train, &val));
    ck_assert_ptr_null(val);
    ck_assert_uint_eq(mpt_tokens_count(train), 1000);
    mpt_tokens_free(train);
    mpt_tokens_free(all);
}
END_TEST

START_TEST(bad_inputs)
{
    expect_error(shard("magic.bin", 10, 10, 20240520, 2), MPT_ERR_PARSE, "version 2", NULL);
    expect_error(shard("count.bin", 10, 12, 20240520, 1), MPT_ERR_PARSE, "12 tokens",
                 "1044 bytes");
    /* no magic, .bin: raw uint16, which must have an even size */
    expect_error(file("odd.bin", "abc", 3), MPT_ERR_PARSE, "odd size", "3 bytes");
    expect_error(file("empty.txt", "", 0), MPT_ERR_PARSE, "no tokens", NULL);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.txt", dir);
    expect_error(missing, MPT_ERR_NOT_FOUND, "No such file", NULL);
    /* shorter than the context */
    mpt_tokens_t *t = NULL;
    float x[16];
    int32_t y[16];
    ck_assert_mpt_ok(mpt_tokens_load(file("short.txt", "0123456789", 10), &t));
    ck_assert_mpt_fails(mpt_tokens_batch(t, 16, 1, 1, 0, x, y), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "short.txt: 10 tokens, shorter than the context of "
                                           "16 plus one"),
                  "%s", mpt_last_error());
    ck_assert_mpt_ok(mpt_tokens_batch(t, 9, 1, 1, 0, x, y)); /* 10 = 9 + 1 fits */
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
    tcase_add_test(tc, formats);
    tcase_add_test(tc, split_and_windows);
    tcase_add_test(tc, bad_inputs);
    suite_add_tcase(s, tc);
    int failed = test_run(s, 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return failed;
}
