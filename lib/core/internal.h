/*
 * core/internal.h: what every module of libmpt shares and no user sees:
 * error reporting (mpt__fail and MPT_TRY), logging, the environment table,
 * clocks and small JSON helpers.  Never installed.
 */
#ifndef MPT_CORE_INTERNAL_H
#define MPT_CORE_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include <jansson.h>

#include "mpt.h"

#if defined(__GNUC__)
#define MPT__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define MPT__PRINTF(f, a)
#endif

/* Records the detail of a failure for mpt_last_error() on this thread and
 * returns code, so that a failing path reads `return mpt__fail(...)`. */
int mpt__fail(int code, const char *fmt, ...) MPT__PRINTF(2, 3);
/* Prepends context ("loading plan.json: ") to the current detail; returns code. */
int mpt__fail_context(int code, const char *fmt, ...) MPT__PRINTF(2, 3);
/* Forgets the last failure of this thread. */
void mpt__clear_error(void);

/* Runs a call returning a status; on failure stores it in `status` (a local
 * variable every user declares) and jumps to the function's one cleanup
 * label `out`. */
#define MPT_TRY(call)                                                          \
    do {                                                                       \
        status = (call);                                                       \
        if (status < 0)                                                        \
            goto out;                                                          \
    } while (0)

/* Returns a failing call's status at once: for functions with nothing to
 * clean up (MPT_TRY's label would be empty). */
#define MPT_TRY_RETURN(call)                                                   \
    do {                                                                       \
        int status_ = (call);                                                  \
        if (status_ < 0)                                                       \
            return status_;                                                    \
    } while (0)

void mpt__log(mpt_log_level_t level, const char *fmt, ...) MPT__PRINTF(2, 3);

/* The environment tunables, one enumerator each, described in env.c. */
typedef enum {
    MPT_ENV_DEVICES,
    MPT_ENV_KERNEL_DIR,
    MPT_ENV_CL_BUILD_OPTIONS,
    MPT_ENV_TOPOLOGY_XML,
    MPT_ENV_CACHE_HOME,
    MPT_ENV_PROFILE_QUICK,
    MPT_ENV_PLAN_DEBUG,
    MPT_ENV_FAIL_LAUNCH,
    MPT_ENV_FAIL_DEVICE,
    MPT_ENV_FAIL_NONFINITE,
    MPT_ENV_POCL_CACHE_DIR,
    MPT_ENV_BLAS,
    MPT_ENV_CLBLAST_TUNING,
    MPT_ENV_CLOCK_SKEW,
    MPT_ENV_CLOCK_DRIFT,
    MPT_ENV__COUNT
} mpt__env_id_t;

/* The variable's value, or its default when unset (never NULL). */
const char *mpt__env(mpt__env_id_t id);

/* Monotonic seconds. */
double mpt__now(void);
/* Seconds since the epoch (wall clock). */
double mpt__wall_time(void);

/* Duplicates a string; NULL (with detail set) when out of memory. */
char *mpt__strdup(const char *s);
/* snprintf that reports MPT_ERR_RANGE instead of truncating silently. */
int mpt__snprintf(char *buf, size_t size, const char *fmt, ...) MPT__PRINTF(3, 4);

/* JSON: load a file with a one-line error naming the file, line and reason. */
int mpt__json_load_file(const char *path, json_t **out);
/* Writes JSON to `path` atomically: temporary file, flush, fsync, rename. */
int mpt__json_save_file(const char *path, const json_t *value);
/* The first key of object `want` whose value differs in `got` (or is
 * missing there), with both values as compact JSON ("(none)" when missing;
 * the caller frees both).  0 when every key of want matches, 1 otherwise;
 * for messages that name the setting that differs. */
int mpt__json_first_difference(const json_t *want, const json_t *got, const char **key,
                               char **want_text, char **got_text);
/* Creates a directory and its parents (mkdir -p). */
int mpt__mkdir_p(const char *path);

#endif
