/*
 * core/status.c: status strings generated from MPT_STATUS_LIST, and the
 * per-thread failure detail behind mpt_last_error().
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "core/internal.h"

#define MPT__DETAIL_MAX 8192 /* room for an OpenCL build log excerpt */

static _Thread_local char last_error[MPT__DETAIL_MAX];

const char *mpt_strerror(int status)
{
    switch (status) {
#define MPT__STATUS_TEXT(name, code, text) case code: return text;
        MPT_STATUS_LIST(MPT__STATUS_TEXT)
#undef MPT__STATUS_TEXT
    }
    return "unknown status";
}

const char *mpt_status_name(int status)
{
    switch (status) {
#define MPT__STATUS_NAME(name, code, text) case code: return "MPT_" #name;
        MPT_STATUS_LIST(MPT__STATUS_NAME)
#undef MPT__STATUS_NAME
    }
    return "MPT_UNKNOWN";
}

const char *mpt_last_error(void)
{
    return last_error;
}

const char *mpt_version(void)
{
    return PACKAGE_VERSION;
}

void mpt__clear_error(void)
{
    last_error[0] = '\0';
}

int mpt__fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    mpt__log(MPT_LOG_DEBUG, "%s: %s", mpt_status_name(code), last_error);
    return code;
}

int mpt__fail_context(int code, const char *fmt, ...)
{
    char prefix[1024], old[MPT__DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    snprintf(last_error, sizeof last_error, "%s: %s", prefix,
             old[0] ? old : mpt_strerror(code));
    return code;
}
