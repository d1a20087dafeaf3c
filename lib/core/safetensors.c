/*
 * core/safetensors.c: reads and writes safetensors files (see
 * safetensors.h), the format of checkpoints and PyTorch fixtures.
 *
 * The reader loads the whole file with fread (checkpoints here are a few
 * MB) and checks everything a writer could have got wrong before handing
 * out a tensor: header length against the file size, the JSON, every
 * dtype, shape and offset, and that the tensors tile the data section
 * exactly.  The writer emits compact JSON with "__metadata__" first and the
 * tensors in insertion order with contiguous offsets, which is what
 * Python's safetensors writes for tensors given in offset order.
 * Left out: memory mapping, dtypes other than F32/I32/I64 (F16, BF16, ...
 * are rejected as unknown), and lazy loading of single tensors.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"

/* The reference implementation refuses headers above this size too: a
 * larger length is a corrupted or hostile file, not a real header. */
#define ST_MAX_HEADER 100000000u
#define ST_MAX_DIMS 8

struct mpt__st_file {
    mpt__st_tensor_t *tensors; /* in insertion (writer) or header (reader) order */
    size_t count, cap;
    json_t *meta; /* object of string -> string; owns the values */
};

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [MPT_ST_F32] = {"F32", 4},
    [MPT_ST_I32] = {"I32", 4},
    [MPT_ST_I64] = {"I64", 8},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

/* The file format is little-endian; a big-endian host swaps each element
 * on the way in and out (an involution, so one helper serves both). */
static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static void swap_elements(unsigned char *p, size_t bytes, size_t size)
{
    for (size_t i = 0; i + size <= bytes; i += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[i + a];
            p[i + a] = p[i + b];
            p[i + b] = t;
        }
}

/* product(shape) * size, or SIZE_MAX when it overflows. */
static size_t byte_count(int ndim, const size_t *shape, size_t size)
{
    size_t n = size;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] != 0 && n > SIZE_MAX / shape[d])
            return SIZE_MAX;
        n *= shape[d];
    }
    return n;
}

int mpt__st_create(mpt__st_file_t **out)
{
    *out = NULL;
    mpt__st_file_t *f = calloc(1, sizeof *f);
    if (!f)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory creating a safetensors file");
    f->meta = json_object();
    if (!f->meta) {
        free(f);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory creating a safetensors file");
    }
    *out = f;
    return MPT_OK;
}

void mpt__st_free(mpt__st_file_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->count; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].data);
    }
    free(f->tensors);
    json_decref(f->meta);
    free(f);
}

size_t mpt__st_count(const mpt__st_file_t *f) { return f ? f->count : 0; }

const mpt__st_tensor_t *mpt__st_at(const mpt__st_file_t *f, size_t i)
{
    return f && i < f->count ? &f->tensors[i] : NULL;
}

const mpt__st_tensor_t *mpt__st_get(const mpt__st_file_t *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *mpt__st_meta(const mpt__st_file_t *f, const char *key)
{
    if (!f || !key)
        return NULL;
    return json_string_value(json_object_get(f->meta, key));
}

/* Appends a tensor whose data buffer (bytes long, malloc'ed) is taken over. */
static int append(mpt__st_file_t *f, const char *name, mpt__st_dtype_t dtype, int ndim,
                  const size_t *shape, size_t bytes, void *data)
{
    if (f->count == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        mpt__st_tensor_t *t = realloc(f->tensors, cap * sizeof *t);
        if (!t) {
            free(data);
            return mpt__fail(MPT_ERR_NOMEM, "out of memory adding tensor %s", name);
        }
        f->tensors = t;
        f->cap = cap;
    }
    mpt__st_tensor_t *t = &f->tensors[f->count];
    memset(t, 0, sizeof *t);
    t->name = mpt__strdup(name);
    if (!t->name) {
        free(data);
        return MPT_ERR_NOMEM;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->bytes = bytes;
    t->data = data;
    f->count++;
    return MPT_OK;
}

int mpt__st_add(mpt__st_file_t *f, const char *name, mpt__st_dtype_t dtype, int ndim,
                const size_t *shape, const void *data)
{
    if (!f || !name)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: a tensor needs a name");
    if (strcmp(name, "__metadata__") == 0)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: \"__metadata__\" is reserved, not a tensor name");
    if ((unsigned)dtype >= N_DTYPES)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: tensor %s: unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return mpt__fail(MPT_ERR_INVALID, "safetensors: tensor %s: %d dimensions (0 to %d allowed)",
                         name, ndim, ST_MAX_DIMS);
    if (mpt__st_get(f, name))
        return mpt__fail(MPT_ERR_INVALID, "safetensors: tensor %s added twice", name);
    size_t bytes = byte_count(ndim, shape, dtypes[dtype].size);
    if (bytes == SIZE_MAX)
        return mpt__fail(MPT_ERR_RANGE, "safetensors: tensor %s: shape too large", name);
    if (bytes > 0 && !data)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: tensor %s: no data", name);
    /* malloc(0) may return NULL; one byte keeps "data != NULL" true. */
    void *copy = malloc(bytes ? bytes : 1);
    if (!copy)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory copying tensor %s (%zu bytes)", name, bytes);
    if (bytes)
        memcpy(copy, data, bytes);
    return append(f, name, dtype, ndim, shape, bytes, copy);
}

int mpt__st_set_meta(mpt__st_file_t *f, const char *key, const char *value)
{
    if (!f || !key || !value)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: metadata needs a key and a value");
    if (json_object_set_new(f->meta, key, json_string(value)) != 0)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: cannot set metadata %s (not UTF-8?)", key);
    return MPT_OK;
}

/* ---- writer ------------------------------------------------------------ */

/* The header JSON, compact, "__metadata__" first (as Python writes it),
 * then the tensors in insertion order with contiguous offsets. */
static int build_header(const mpt__st_file_t *f, char **out)
{
    int status = MPT_OK;
    json_t *root = json_object();
    *out = NULL;
    if (!root)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory building a safetensors header");
    if (json_object_size(f->meta) > 0 &&
        json_object_set(root, "__metadata__", f->meta) != 0) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory building a safetensors header");
        goto out;
    }
    size_t offset = 0;
    for (size_t i = 0; i < f->count; i++) {
        const mpt__st_tensor_t *t = &f->tensors[i];
        json_t *shape = json_array(), *entry = json_object();
        int bad = !shape || !entry;
        for (int d = 0; !bad && d < t->ndim; d++)
            bad |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0;
        bad |= json_object_set_new(entry, "dtype", json_string(dtypes[t->dtype].name)) != 0;
        bad |= json_object_set_new(entry, "shape", shape) != 0;
        bad |= json_object_set_new(entry, "data_offsets",
                                   json_pack("[II]", (json_int_t)offset,
                                             (json_int_t)(offset + t->bytes))) != 0;
        bad |= json_object_set_new(root, t->name, entry) != 0;
        if (bad) {
            status = mpt__fail(MPT_ERR_NOMEM, "cannot put tensor %s in a safetensors header",
                               t->name);
            goto out;
        }
        offset += t->bytes;
    }
    *out = json_dumps(root, JSON_COMPACT);
    if (!*out)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory printing a safetensors header");
out:
    json_decref(root);
    return status;
}

/* Writes the tensor's bytes little-endian. */
static int write_data(FILE *fp, const mpt__st_tensor_t *t)
{
    if (t->bytes == 0)
        return 0;
    if (host_is_little_endian())
        return fwrite(t->data, 1, t->bytes, fp) != t->bytes;
    unsigned char *copy = malloc(t->bytes);
    if (!copy)
        return 1;
    memcpy(copy, t->data, t->bytes);
    swap_elements(copy, t->bytes, dtypes[t->dtype].size);
    int bad = fwrite(copy, 1, t->bytes, fp) != t->bytes;
    free(copy);
    return bad;
}

/* Removes what killed writers of path left: "<path>.tmp.<pid>" files of
 * processes that no longer run (kill(pid, 0) says ESRCH).  A live writer's
 * file, this process's included, is left alone. */
static void remove_stale_temporaries(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? path + (slash - dir) + 1 : path;
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        char *end = NULL;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0)
            continue;
        long pid = strtol(n + blen + 5, &end, 10);
        if (!*end && pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 &&
            errno == ESRCH) {
            char stale[8192];
            snprintf(stale, sizeof stale, "%s/%s", dir, n);
            if (unlink(stale) == 0)
                mpt__log(MPT_LOG_INFO, "removed %s, left by a writer that died", stale);
        }
    }
    closedir(d);
}

int mpt__st_write(const mpt__st_file_t *f, const char *path)
{
    char tmp[4096], *header = NULL;
    int status;
    if (!f || !path)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: nothing to write or no path");
    MPT_TRY(mpt__snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()));
    remove_stale_temporaries(path);
    MPT_TRY(build_header(f, &header));
    /* What this writer writes, its reader must read. */
    if (strlen(header) > ST_MAX_HEADER) {
        status = mpt__fail(MPT_ERR_RANGE,
                           "cannot write %s: its header (tensor names and metadata) is %zu "
                           "bytes, above the %u a reader accepts",
                           path, strlen(header), ST_MAX_HEADER);
        goto out;
    }

    /* Spaces pad the header so that the data starts 8-byte aligned. */
    size_t len = strlen(header), padded = (len + 7) / 8 * 8;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)padded >> (8 * i));

    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        status = mpt__fail(MPT_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    errno = 0; /* so that the message below shows the failing call's errno, if any */
    int bad = fwrite(prefix, 1, 8, fp) != 8;
    bad |= fwrite(header, 1, len, fp) != len;
    for (size_t i = len; i < padded; i++)
        bad |= fputc(' ', fp) == EOF;
    for (size_t i = 0; !bad && i < f->count; i++)
        bad |= write_data(fp, &f->tensors[i]);
    bad |= fflush(fp) != 0;
    bad |= fsync(fileno(fp)) != 0;
    bad |= fclose(fp) != 0;
    if (bad || rename(tmp, path) != 0) {
        /* The old file, if any, is untouched: only the temporary goes. */
        int e = errno;
        unlink(tmp);
        status = mpt__fail(MPT_ERR_IO, "cannot write %s: %s", path,
                           e ? strerror(e) : "short write");
        goto out;
    }
    status = MPT_OK;
out:
    free(header);
    return status;
}

/* ---- reader ------------------------------------------------------------ */

/* A tensor's place in the data section, for the tiling check. */
typedef struct {
    size_t begin, end;
    const char *name;
} span_t;

static int span_cmp(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* A JSON integer in [0, SIZE_MAX], or -1. */
static int json_size(const json_t *v, size_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (size_t)json_integer_value(v);
    return 0;
}

static int parse_metadata(mpt__st_file_t *f, const char *path, json_t *meta)
{
    const char *key;
    json_t *value;
    if (!json_is_object(meta))
        return mpt__fail(MPT_ERR_PARSE, "%s: __metadata__ is not an object", path);
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value))
            return mpt__fail(MPT_ERR_PARSE, "%s: __metadata__ key \"%s\": value is not a string",
                             path, key);
    }
    json_decref(f->meta);
    f->meta = json_incref(meta);
    return MPT_OK;
}

/* One header entry: checks it and appends the tensor with a copy of its
 * bytes (so that the caller can free the file buffer, and so that each
 * tensor is aligned for its type whatever its offset). */
static int parse_tensor(mpt__st_file_t *f, const char *path, const char *name, json_t *entry,
                        const unsigned char *data, size_t data_len, span_t *span)
{
    json_t *dt = json_object_get(entry, "dtype"), *shape = json_object_get(entry, "shape");
    json_t *offsets = json_object_get(entry, "data_offsets");
    size_t dims[ST_MAX_DIMS], begin, end;
    mpt__st_dtype_t dtype = 0;
    size_t n;

    if (!json_is_object(entry))
        return mpt__fail(MPT_ERR_PARSE, "%s: tensor \"%s\": entry is not an object", path, name);
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offsets))
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: tensor \"%s\": needs dtype (string), shape and data_offsets (arrays)",
                         path, name);
    for (n = 0; n < N_DTYPES; n++)
        if (strcmp(json_string_value(dt), dtypes[n].name) == 0)
            break;
    if (n == N_DTYPES)
        return mpt__fail(MPT_ERR_PARSE, "%s: tensor \"%s\": unsupported dtype \"%s\" (F32, I32, I64)",
                         path, name, json_string_value(dt));
    dtype = (mpt__st_dtype_t)n;
    if (json_array_size(shape) > ST_MAX_DIMS)
        return mpt__fail(MPT_ERR_PARSE, "%s: tensor \"%s\": %zu dimensions, at most %d", path,
                         name, json_array_size(shape), ST_MAX_DIMS);
    int ndim = (int)json_array_size(shape);
    for (int d = 0; d < ndim; d++)
        if (json_size(json_array_get(shape, (size_t)d), &dims[d]) != 0)
            return mpt__fail(MPT_ERR_PARSE,
                             "%s: tensor \"%s\": shape[%d] is not a non-negative integer", path,
                             name, d);
    if (json_array_size(offsets) != 2 || json_size(json_array_get(offsets, 0), &begin) != 0 ||
        json_size(json_array_get(offsets, 1), &end) != 0 || begin > end)
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: tensor \"%s\": data_offsets is not [begin, end] with 0 <= begin <= end",
                         path, name);
    size_t bytes = byte_count(ndim, dims, dtypes[dtype].size);
    if (end - begin != bytes)
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: tensor \"%s\": data_offsets [%zu, %zu] hold %zu bytes, shape and dtype need %zu",
                         path, name, begin, end, end - begin, bytes);
    if (end > data_len)
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: tensor \"%s\": data_offsets [%zu, %zu] beyond the %zu-byte data section",
                         path, name, begin, end, data_len);

    void *copy = malloc(bytes ? bytes : 1);
    if (!copy)
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for tensor \"%s\" (%zu bytes)", path,
                         name, bytes);
    if (bytes)
        memcpy(copy, data + begin, bytes);
    if (!host_is_little_endian())
        swap_elements(copy, bytes, dtypes[dtype].size);
    span->begin = begin;
    span->end = end;
    span->name = name;
    return append(f, name, dtype, ndim, dims, bytes, copy);
}

/* The tensors must tile [0, data_len) exactly: sorted by offset, each
 * begins where the previous ended, and the last ends at the file's end. */
static int check_tiling(const char *path, span_t *spans, size_t n, size_t data_len)
{
    size_t cursor = 0;
    qsort(spans, n, sizeof *spans, span_cmp);
    for (size_t i = 0; i < n; i++) {
        if (spans[i].begin > cursor)
            return mpt__fail(MPT_ERR_PARSE, "%s: tensor \"%s\": hole of %zu bytes before it", path,
                             spans[i].name, spans[i].begin - cursor);
        if (spans[i].begin < cursor)
            return mpt__fail(MPT_ERR_PARSE, "%s: tensor \"%s\" overlaps tensor \"%s\"", path,
                             spans[i].name, spans[i - 1].name);
        cursor = spans[i].end;
    }
    if (cursor != data_len)
        return mpt__fail(MPT_ERR_PARSE, "%s: %zu trailing bytes after the last tensor%s%s%s", path,
                         data_len - cursor, n ? " \"" : "", n ? spans[n - 1].name : "",
                         n ? "\"" : "");
    return MPT_OK;
}

/* Opens the file, checks the header length against its size before
 * reading anything else (a corrupted length must not make us allocate
 * gigabytes), then reads header and data into one buffer. */
static int load(const char *path, unsigned char **out, size_t *hlen_out, size_t *size_out)
{
    struct stat st;
    unsigned char prefix[8];
    unsigned char *buf = NULL;
    int status;
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: %s", path,
                         strerror(errno));
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        status = mpt__fail(MPT_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: %zu bytes, shorter than the 8-byte header length",
                           path, size);
        goto out;
    }
    if (fread(prefix, 1, 8, fp) != 8) {
        status = mpt__fail(MPT_ERR_IO, "%s: cannot read the header length", path);
        goto out;
    }
    /* Little-endian whatever the host, hence byte by byte. */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | prefix[i];
    if (hlen > ST_MAX_HEADER || hlen > size - 8) {
        status = mpt__fail(MPT_ERR_PARSE,
                           "%s: header length %llu exceeds the file (%zu bytes) or the %u-byte limit",
                           path, (unsigned long long)hlen, size, ST_MAX_HEADER);
        goto out;
    }
    size_t rest = size - 8;
    buf = malloc(rest ? rest : 1);
    if (!buf) {
        status = mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, rest);
        goto out;
    }
    size_t got = fread(buf, 1, rest, fp);
    if (got != rest) {
        status = mpt__fail(MPT_ERR_IO, "%s: read %zu of %zu bytes", path, got + 8, size);
        goto out;
    }
    *out = buf;
    buf = NULL;
    *hlen_out = (size_t)hlen;
    *size_out = rest;
    status = MPT_OK;
out:
    free(buf);
    fclose(fp);
    return status;
}

int mpt__st_read(const char *path, mpt__st_file_t **out)
{
    unsigned char *buf = NULL; /* the file after its 8-byte length */
    size_t hlen = 0, size = 0;
    json_t *root = NULL;
    span_t *spans = NULL;
    mpt__st_file_t *f = NULL;
    json_error_t jerr;
    int status;

    if (!out || !path)
        return mpt__fail(MPT_ERR_INVALID, "safetensors: no path to read");
    *out = NULL;
    MPT_TRY(load(path, &buf, &hlen, &size));
    root = json_loadb((const char *)buf, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: header is not a JSON object%s%s", path,
                           root ? "" : ": ", root ? "" : jerr.text);
        goto out;
    }
    MPT_TRY(mpt__st_create(&f));
    spans = calloc(json_object_size(root) + 1, sizeof *spans);
    if (!spans) {
        status = mpt__fail(MPT_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    const unsigned char *data = buf + hlen;
    size_t data_len = size - hlen;
    const char *key;
    json_t *entry;
    json_object_foreach(root, key, entry) {
        if (strcmp(key, "__metadata__") == 0)
            MPT_TRY(parse_metadata(f, path, entry));
        else
            MPT_TRY(parse_tensor(f, path, key, entry, data, data_len, &spans[f->count]));
    }
    MPT_TRY(check_tiling(path, spans, f->count, data_len));
    *out = f;
    f = NULL;
    status = MPT_OK;
out:
    mpt__st_free(f);
    free(spans);
    json_decref(root);
    free(buf);
    return status;
}
