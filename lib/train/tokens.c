/*
 * train/tokens.c: token files for language models (mpt.h, docs/data.md):
 * llm.c shards, raw uint16 files (nanoGPT's .bin) and text as bytes, or
 * ids from the caller's memory (copied); the train/validation split;
 * seeded random windows and sequential ones.
 *
 * The format is decided once, in this order: a file whose first
 * little-endian int32 is the llm.c magic 20240520 is a shard (and then its
 * version, count and size must agree); else a name ending in ".bin" is raw
 * uint16; anything else is text, one token per byte.
 *
 * A file is read whole into memory as uint16 (text bytes fit): the corpora
 * of this machine are megabytes.  Left out: memory-mapping multi-gigabyte
 * shards, and several shards as one set.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "core/internal.h"

#define LLMC_MAGIC 20240520
#define LLMC_VERSION 1
#define LLMC_HEADER_INTS 256
#define LLMC_HEADER_BYTES (4 * LLMC_HEADER_INTS)

/* Stream keys hold 56 bits (core/rng.h): the largest batch index. */
#define MAX_BATCH_INDEX ((1ull << 56) - 1)

struct mpt_tokens {
    char *path;           /* for messages */
    const char *format;   /* "text", "llm.c shard", "uint16" */
    uint16_t *owned;      /* NULL for a view */
    const uint16_t *tok;  /* (count) */
    size_t count, vocab;
};

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int read_all(const char *path, unsigned char **data, size_t *size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: %s", path,
                         strerror(errno));
    if (S_ISDIR(st.st_mode))
        return mpt__fail(MPT_ERR_IO, "%s: is a directory, not a token file", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: %s", path,
                         strerror(errno));
    size_t cap = (size_t)1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        unsigned char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!grown)
            free(buf);
        buf = grown, cap *= 2;
    }
    int bad = ferror(f), err = errno;
    fclose(f);
    if (!buf)
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory reading it", path);
    if (bad) {
        free(buf);
        return mpt__fail(MPT_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    *data = buf, *size = n;
    return MPT_OK;
}

/* Where the tokens of a file lie, by its format; sets t->format. */
static int find_tokens(const char *path, const unsigned char *data, size_t size, mpt_tokens_t *t,
                       size_t *first, size_t *count)
{
    if (size >= 4 && le32(data) == LLMC_MAGIC) {
        if (size < LLMC_HEADER_BYTES)
            return mpt__fail(MPT_ERR_PARSE, "%s: starts with the llm.c magic %d but has %zu "
                             "bytes, less than its header of %d", path, LLMC_MAGIC, size,
                             LLMC_HEADER_BYTES);
        uint32_t version = le32(data + 4);
        int32_t n = (int32_t)le32(data + 8);
        if (version != LLMC_VERSION)
            return mpt__fail(MPT_ERR_PARSE, "%s: an llm.c token shard of version %u (mpt reads "
                             "version %d)", path, version, LLMC_VERSION);
        if (n < 0)
            return mpt__fail(MPT_ERR_PARSE, "%s: its llm.c header says %d tokens, a negative "
                             "count", path, (int)n);
        if ((size_t)n * 2 + LLMC_HEADER_BYTES != size)
            return mpt__fail(MPT_ERR_PARSE, "%s: its llm.c header says %d tokens (%zu bytes with "
                             "the header), but the file has %zu bytes", path, (int)n,
                             (size_t)n * 2 + LLMC_HEADER_BYTES, size);
        t->format = "llm.c shard", *first = LLMC_HEADER_BYTES, *count = (size_t)n;
    } else if (ends_with(path, ".bin")) {
        if (size % 2)
            return mpt__fail(MPT_ERR_PARSE, "%s: a raw uint16 token file (.bin without the llm.c "
                             "magic %d) of an odd size, %zu bytes", path, LLMC_MAGIC, size);
        t->format = "uint16", *first = 0, *count = size / 2;
    } else {
        t->format = "text", *first = 0, *count = size;
    }
    if (*count == 0)
        return mpt__fail(MPT_ERR_PARSE, "%s: no tokens (%s, %zu bytes)", path, t->format, size);
    return MPT_OK;
}

/* The tokens of a file's bytes. */
static int decode(const char *path, const unsigned char *data, size_t size, mpt_tokens_t *t)
{
    size_t first, count;
    int status = find_tokens(path, data, size, t, &first, &count);
    if (status < 0)
        return status;
    int text = strcmp(t->format, "text") == 0;
    if (!(t->owned = malloc(count * sizeof *t->owned)))
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu tokens", path, count);
    size_t most = 0;
    for (size_t i = 0; i < count; i++) {
        t->owned[i] = text ? data[i]
                           : (uint16_t)(data[first + 2 * i] | data[first + 2 * i + 1] << 8);
        most = t->owned[i] > most ? t->owned[i] : most;
    }
    t->tok = t->owned, t->count = count;
    t->vocab = text ? 256 : most + 1;
    return MPT_OK;
}

int mpt_tokens_load(const char *path, mpt_tokens_t **out)
{
    unsigned char *data = NULL;
    size_t size = 0;
    mpt_tokens_t *t = NULL;
    int status;
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_tokens_load: no output pointer");
    *out = NULL;
    if (!path || !*path)
        return mpt__fail(MPT_ERR_INVALID, "mpt_tokens_load: no file name");
    MPT_TRY(read_all(path, &data, &size));
    if (!(t = calloc(1, sizeof *t)) || !(t->path = mpt__strdup(path))) {
        status = mpt__fail(MPT_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    MPT_TRY(decode(path, data, size, t));
    *out = t, t = NULL;
out:
    free(data);
    mpt_tokens_free(t);
    return status;
}

int mpt_tokens_from_memory(const int32_t *ids, size_t count, size_t vocab, mpt_tokens_t **out)
{
    static const char where[] = "tokens in memory";
    mpt_tokens_t *t = NULL;
    size_t most = 0;
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_tokens_from_memory: no output pointer");
    *out = NULL;
    if (!ids || count == 0)
        return mpt__fail(MPT_ERR_INVALID, "%s: no tokens", where);
    if (vocab > 65536)
        return mpt__fail(MPT_ERR_RANGE, "%s: a vocabulary of %zu, more than the 65536 ids "
                         "mpt stores (uint16, as llm.c shards do)", where, vocab);
    /* The same bound as a file's ids, checked before anything is copied. */
    for (size_t i = 0; i < count; i++) {
        if (ids[i] < 0 || ids[i] > 65535 || (vocab && (size_t)ids[i] >= vocab))
            return mpt__fail(MPT_ERR_INVALID, "%s: token %zu is id %ld, outside [0, %zu)",
                             where, i, (long)ids[i], vocab ? vocab : (size_t)65536);
        most = (size_t)ids[i] > most ? (size_t)ids[i] : most;
    }
    if (!(t = calloc(1, sizeof *t)) || !(t->path = mpt__strdup(where)) ||
        !(t->owned = malloc(count * sizeof *t->owned))) {
        mpt_tokens_free(t);
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu tokens", where, count);
    }
    for (size_t i = 0; i < count; i++)
        t->owned[i] = (uint16_t)ids[i];
    t->format = "memory", t->tok = t->owned, t->count = count;
    t->vocab = vocab ? vocab : most + 1;
    *out = t;
    return MPT_OK;
}

void mpt_tokens_free(mpt_tokens_t *t)
{
    if (!t)
        return;
    free(t->owned);
    free(t->path);
    free(t);
}

size_t mpt_tokens_count(const mpt_tokens_t *t) { return t ? t->count : 0; }
size_t mpt_tokens_vocab(const mpt_tokens_t *t) { return t ? t->vocab : 0; }
const char *mpt_tokens_format(const mpt_tokens_t *t) { return t ? t->format : ""; }

int mpt_tokens_check_vocab(const mpt_tokens_t *t, size_t vocab)
{
    if (!t)
        return mpt__fail(MPT_ERR_INVALID, "mpt_tokens_check_vocab: no token set");
    for (size_t i = 0; i < t->count; i++)
        if (t->tok[i] >= vocab)
            return mpt__fail(MPT_ERR_PARSE, "%s: token %zu is id %u, beyond the model's "
                             "vocabulary of %zu", t->path, i, t->tok[i], vocab);
    return MPT_OK;
}

static int view(const mpt_tokens_t *all, size_t first, size_t count, mpt_tokens_t **out)
{
    mpt_tokens_t *v = calloc(1, sizeof *v);
    if (!v || !(v->path = mpt__strdup(all->path))) {
        free(v);
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory", all->path);
    }
    v->format = all->format, v->tok = all->tok + first, v->count = count;
    v->vocab = all->vocab;
    *out = v;
    return MPT_OK;
}

int mpt_tokens_split(mpt_tokens_t *all, double val_fraction, mpt_tokens_t **train,
                     mpt_tokens_t **val)
{
    if (!all || !train || !val)
        return mpt__fail(MPT_ERR_INVALID, "mpt_tokens_split: no token set or output pointer");
    *train = NULL, *val = NULL;
    if (!(val_fraction >= 0 && val_fraction < 1))
        return mpt__fail(MPT_ERR_INVALID, "%s: a validation fraction of %g (must be in [0, 1))",
                         all->path, val_fraction);
    /* Rounded down.  count * val_fraction < count for any val_fraction < 1
     * while count < 2^53; the guard keeps one training token beyond that. */
    size_t nval = (size_t)((double)all->count * val_fraction);
    if (nval >= all->count)
        nval = all->count - 1;
    int status = view(all, 0, all->count - nval, train);
    if (status == MPT_OK && nval > 0 && (status = view(all, all->count - nval, nval, val)) < 0) {
        mpt_tokens_free(*train);
        *train = NULL;
    }
    return status;
}

/* A window needs context inputs and the label after the last. */
static int check_context(const mpt_tokens_t *t, size_t context, const void *x, const void *y)
{
    if (!t || !x || !y)
        return mpt__fail(MPT_ERR_INVALID, "token windows: no token set or output buffer");
    if (context == 0)
        return mpt__fail(MPT_ERR_INVALID, "%s: a context of 0 tokens", t->path);
    if (t->count < context + 1)
        return mpt__fail(MPT_ERR_INVALID, "%s: %zu tokens, shorter than the context of %zu plus "
                         "one", t->path, t->count, context);
    return MPT_OK;
}

static void window(const mpt_tokens_t *t, size_t start, size_t context, float *x, int32_t *y)
{
    for (size_t i = 0; i < context; i++)
        x[i] = (float)t->tok[start + i], y[i] = t->tok[start + i + 1];
}

int mpt_tokens_batch(const mpt_tokens_t *t, size_t context, size_t batch, uint64_t seed,
                     uint64_t index, float *x, int32_t *y)
{
    int status = check_context(t, context, x, y);
    if (status < 0)
        return status;
    if (index > MAX_BATCH_INDEX)
        return mpt__fail(MPT_ERR_RANGE, "%s: batch index %llu beyond the generator's 2^56 "
                         "streams", t->path, (unsigned long long)index);
    if ((uint64_t)batch > UINT64_MAX / 2 || (batch && context > SIZE_MAX / batch))
        return mpt__fail(MPT_ERR_RANGE, "%s: %zu windows of %zu tokens do not fit in memory",
                         t->path, batch, context);
    /* Window b of batch `index` starts at
     *     r % (count - context),  r = u32(2b) << 32 | u32(2b + 1),
     *     u32(k) = mpt__rng_u32(seed, MPT_RNG_STREAM(MPT_RNG_WINDOWS, index), k),
     * so it depends on (seed, index, b) alone: not on the batch size, nor
     * on which process asks.  64 random bits: the modulo favours small
     * starts by at most (count - context) / 2^64 in relative terms. */
    uint64_t stream = MPT_RNG_STREAM(MPT_RNG_WINDOWS, index);
    uint64_t starts = (uint64_t)(t->count - context); /* start + context + 1 <= count */
    for (size_t b = 0; b < batch; b++) {
        uint64_t r = (uint64_t)mpt__rng_u32(seed, stream, 2 * (uint64_t)b) << 32 |
                     mpt__rng_u32(seed, stream, 2 * (uint64_t)b + 1);
        window(t, (size_t)(r % starts), context, x + b * context, y + b * context);
    }
    return MPT_OK;
}

size_t mpt_tokens_windows(const mpt_tokens_t *t, size_t context)
{
    return t && context && t->count > context ? (t->count - 1) / context : 0;
}

int mpt_tokens_sequential(const mpt_tokens_t *t, size_t context, size_t first, size_t count,
                          float *x, int32_t *y)
{
    int status = check_context(t, context, x, y);
    if (status < 0)
        return status;
    size_t windows = mpt_tokens_windows(t, context);
    if (first > windows || count > windows - first)
        return mpt__fail(MPT_ERR_RANGE, "%s: windows %zu to %zu of %zu tokens asked, but its %zu "
                         "tokens hold %zu windows (0 to %zu)", t->path, first,
                         count ? first + count - 1 : first, context, t->count, windows,
                         windows - 1);
    for (size_t w = 0; w < count; w++)
        window(t, (first + w) * context, context, x + w * context, y + w * context);
    return MPT_OK;
}
