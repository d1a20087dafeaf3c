/*
 * train/tokens.c: token files for language models (mpt.h, docs/data.md):
 * llm.c shards, raw uint16 files (nanoGPT's .bin) and text as bytes; the
 * train/validation split; seeded random windows and sequential ones.
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

#include "core/rng.h"
#include "core/internal.h"

#define LLMC_MAGIC 20240520
#define LLMC_VERSION 1
#define LLMC_HEADER_INTS 256

struct mpt_tokens {
    char *path;           /* for messages */
    const char *format;   /* "text", "llm.c shard", "uint16" */
    uint16_t *owned;      /* NULL for a view */
    const uint16_t *tok;
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
    FILE *f = fopen(path, "rb");
    if (!f)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: %s", path,
                         strerror(errno));
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        unsigned char *grown = realloc(buf, cap *= 2);
        if (!grown)
            free(buf);
        buf = grown;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf)
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory reading it", path);
    if (bad) {
        free(buf);
        return mpt__fail(MPT_ERR_IO, "%s: read error", path);
    }
    *data = buf, *size = n;
    return MPT_OK;
}

/* The tokens of a file's bytes by its format; sets format. */
static int decode(const char *path, const unsigned char *data, size_t size, mpt_tokens_t *t)
{
    size_t first = 0, count;
    if (size >= 4 * LLMC_HEADER_INTS && le32(data) == LLMC_MAGIC) {
        uint32_t version = le32(data + 4), n = le32(data + 8);
        if (version != LLMC_VERSION)
            return mpt__fail(MPT_ERR_PARSE, "%s: an llm.c token shard of version %u (mpt reads "
                             "version %d)", path, version, LLMC_VERSION);
        if ((size_t)n * 2 + 4 * LLMC_HEADER_INTS != size)
            return mpt__fail(MPT_ERR_PARSE, "%s: its llm.c header says %u tokens (%zu bytes with "
                             "the header), but the file has %zu bytes", path, n,
                             (size_t)n * 2 + 4 * LLMC_HEADER_INTS, size);
        t->format = "llm.c shard", first = 4 * LLMC_HEADER_INTS, count = n;
    } else if (ends_with(path, ".bin")) {
        if (size % 2)
            return mpt__fail(MPT_ERR_PARSE, "%s: a raw uint16 token file (.bin without the llm.c "
                             "magic %d) of an odd size, %zu bytes", path, LLMC_MAGIC, size);
        t->format = "uint16", count = size / 2;
    } else {
        t->format = "text", count = size;
    }
    if (count == 0)
        return mpt__fail(MPT_ERR_PARSE, "%s: no tokens (%s)", path, t->format);
    if (!(t->owned = malloc(count * sizeof *t->owned)))
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu tokens", path, count);
    size_t most = 0;
    for (size_t i = 0; i < count; i++) {
        t->owned[i] = strcmp(t->format, "text") == 0
                          ? data[i]
                          : (uint16_t)(data[first + 2 * i] | data[first + 2 * i + 1] << 8);
        most = t->owned[i] > most ? t->owned[i] : most;
    }
    t->tok = t->owned, t->count = count;
    t->vocab = strcmp(t->format, "text") == 0 ? 256 : most + 1;
    return MPT_OK;
}

int mpt_tokens_load(const char *path, mpt_tokens_t **out)
{
    unsigned char *data = NULL;
    size_t size = 0;
    mpt_tokens_t *t = NULL;
    int status;
    *out = NULL;
    if (!path)
        return mpt__fail(MPT_ERR_INVALID, "mpt_tokens_load: NULL path");
    MPT_TRY(read_all(path, &data, &size));
    if (!(t = calloc(1, sizeof *t)) || !(t->path = mpt__strdup(path))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    MPT_TRY(decode(path, data, size, t));
    *out = t, t = NULL;
out:
    free(data);
    mpt_tokens_free(t);
    return status;
}

void mpt_tokens_free(mpt_tokens_t *t)
{
    if (!t)
        return;
    free(t->owned);
    free(t->path);
    free(t);
}

size_t mpt_tokens_count(const mpt_tokens_t *t) { return t->count; }
size_t mpt_tokens_vocab(const mpt_tokens_t *t) { return t->vocab; }
const char *mpt_tokens_format(const mpt_tokens_t *t) { return t->format; }

int mpt_tokens_check_vocab(const mpt_tokens_t *t, size_t vocab)
{
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
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    v->format = all->format, v->tok = all->tok + first, v->count = count;
    v->vocab = all->vocab;
    *out = v;
    return MPT_OK;
}

int mpt_tokens_split(mpt_tokens_t *all, double val_fraction, mpt_tokens_t **train,
                     mpt_tokens_t **val)
{
    *train = NULL, *val = NULL;
    if (!(val_fraction >= 0 && val_fraction < 1))
        return mpt__fail(MPT_ERR_INVALID, "%s: a validation fraction of %g (must be in [0, 1))",
                         all->path, val_fraction);
    size_t nval = (size_t)((double)all->count * val_fraction);
    int status = view(all, 0, all->count - nval, train);
    if (status == MPT_OK && nval > 0 && (status = view(all, all->count - nval, nval, val)) < 0) {
        mpt_tokens_free(*train);
        *train = NULL;
    }
    return status;
}

static int check_context(const mpt_tokens_t *t, size_t context)
{
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
    int status = check_context(t, context);
    if (status < 0)
        return status;
    size_t starts = t->count - context; /* start + context + 1 <= count */
    for (size_t b = 0; b < batch; b++) {
        /* 64 random bits: the modulo's bias is below 2^-40 for any file here. */
        uint64_t k = (index * batch + b) * 2;
        uint64_t r = (uint64_t)mpt__rng_u32(seed, MPT_RNG_STREAM(MPT_RNG_WINDOWS, 0), k) << 32 |
                     mpt__rng_u32(seed, MPT_RNG_STREAM(MPT_RNG_WINDOWS, 0), k + 1);
        window(t, (size_t)(r % starts), context, x + b * context, y + b * context);
    }
    return MPT_OK;
}

size_t mpt_tokens_windows(const mpt_tokens_t *t, size_t context)
{
    return context && t->count > context ? (t->count - 1) / context : 0;
}

int mpt_tokens_sequential(const mpt_tokens_t *t, size_t context, size_t first, size_t count,
                          float *x, int32_t *y)
{
    int status = check_context(t, context);
    if (status < 0)
        return status;
    if (first + count > mpt_tokens_windows(t, context))
        return mpt__fail(MPT_ERR_RANGE, "%s: windows %zu..%zu of %zu tokens, but it has %zu "
                         "windows of %zu", t->path, first, first + count, context,
                         mpt_tokens_windows(t, context), context);
    for (size_t w = 0; w < count; w++)
        window(t, (first + w) * context, context, x + w * context, y + w * context);
    return MPT_OK;
}
