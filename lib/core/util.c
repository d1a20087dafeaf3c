/*
 * core/util.c: clocks, strings, directories and JSON files: the small
 * helpers every module needs and none should write again.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

/* MPT_CLOCK_SKEW_S and MPT_CLOCK_DRIFT, read once: what tests of the
 * trace's clock alignment across ranks set on one rank. */
static double clock_skew, clock_rate = 1;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static void read_clock_settings(void)
{
    clock_skew = strtod(mpt__env(MPT_ENV_CLOCK_SKEW), NULL);
    clock_rate = 1 + strtod(mpt__env(MPT_ENV_CLOCK_DRIFT), NULL);
}

double mpt__now(void)
{
    struct timespec ts;
    pthread_once(&clock_once, read_clock_settings);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ((double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec) * clock_rate + clock_skew;
}

double mpt__wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *mpt__strdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        mpt__fail(MPT_ERR_NOMEM, "out of memory duplicating a string");
    return d;
}

int mpt__snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return mpt__fail(MPT_ERR_RANGE, "text longer than %zu bytes", size);
    return MPT_OK;
}

int mpt__mkdir_p(const char *path)
{
    char tmp[4096];
    int status = mpt__snprintf(tmp, sizeof tmp, "%s", path);
    if (status < 0)
        return status;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return mpt__fail(MPT_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return mpt__fail(MPT_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
    return MPT_OK;
}

int mpt__json_load_file(const char *path, json_t **out)
{
    json_error_t err;
    struct stat st;
    FILE *f;
    *out = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return mpt__fail(MPT_ERR_IO, "%s: is a directory, not a JSON file", path);
    f = fopen(path, "rb");
    if (!f)
        return mpt__fail(errno == ENOENT ? MPT_ERR_NOT_FOUND : MPT_ERR_IO, "%s: %s", path,
                         strerror(errno));
    *out = json_loadf(f, JSON_REJECT_DUPLICATES, &err);
    fclose(f);
    if (!*out)
        return mpt__fail(MPT_ERR_PARSE, "%s:%d:%d: malformed JSON: %s", path, err.line,
                         err.column, err.text);
    return MPT_OK;
}

int mpt__json_save_file(const char *path, const json_t *value)
{
    char tmp[4096];
    int status = mpt__snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (status < 0)
        return status;
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return mpt__fail(MPT_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    int bad = json_dumpf(value, f, JSON_INDENT(2) | JSON_SORT_KEYS) != 0;
    bad |= fputc('\n', f) == EOF;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return mpt__fail(MPT_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return MPT_OK;
}

int mpt__json_first_difference(const json_t *want, const json_t *got, const char **key,
                               char **want_text, char **got_text)
{
    const char *k;
    json_t *v;
    *key = NULL, *want_text = NULL, *got_text = NULL;
    json_object_foreach((json_t *)want, k, v) {
        json_t *w = json_object_get(got, k);
        if (w && json_equal(v, w))
            continue;
        *key = k;
        *want_text = json_dumps(v, JSON_ENCODE_ANY);
        *got_text = w ? json_dumps(w, JSON_ENCODE_ANY) : mpt__strdup("(none)");
        return 1;
    }
    return 0;
}
