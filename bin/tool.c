/*
 * bin/tool.c: shared helpers of the mpt tools (see tool.h).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

static const char *tool_name = "mpt";

static void log_to_stderr(mpt_log_level_t level, const char *message, void *user)
{
    static const char *names[] = {"error", "warning", "info", "debug"};
    (void)user;
    fprintf(stderr, "%s: %s: %s\n", tool_name, names[level], message);
}

void tool_init(const char *name, int verbose)
{
    tool_name = name;
    mpt_set_log_callback(log_to_stderr, verbose ? MPT_LOG_DEBUG : MPT_LOG_WARN, NULL);
}

void tool_check(int status, const char *what)
{
    if (status >= 0)
        return;
    const char *detail = mpt_last_error();
    fprintf(stderr, "%s: %s: %s\n", tool_name, what, *detail ? detail : mpt_strerror(status));
    exit(TOOL_EXIT_FAIL);
}

void tool_die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(TOOL_EXIT_FAIL);
}

void tool_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", tool_name);
    exit(TOOL_EXIT_USAGE);
}

void tool_print_env(FILE *f)
{
    fprintf(f, "\nEnvironment:\n");
    for (size_t i = 0; i < mpt_env_count(); i++) {
        const mpt_env_var_t *v = mpt_env_get(i);
        fprintf(f, "  %-22s %s\n", v->name, v->help);
    }
}

int tool_stderr_is_tty(void)
{
    return isatty(STDERR_FILENO);
}
