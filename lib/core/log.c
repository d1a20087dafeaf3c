/*
 * core/log.c: the log callback.  The library never prints; a tool or an
 * application that wants messages installs a callback.
 */
#include <stdio.h>

#include "core/internal.h"

static mpt_log_fn log_fn;
static mpt_log_level_t log_max = MPT_LOG_INFO;
static void *log_user;

void mpt_set_log_callback(mpt_log_fn fn, mpt_log_level_t max_level, void *user)
{
    log_fn = fn;
    log_max = max_level;
    log_user = user;
}

void mpt__log(mpt_log_level_t level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    if (!log_fn || level > log_max)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fn(level, msg, log_user);
}
