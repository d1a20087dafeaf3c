/*
 * bin/tool.c: shared helpers of the mpt tools (see tool.h).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static const char *tool_name = "mpt";

static void log_to_stderr(mpt_log_level_t level, const char *message, void *user)
{
    static const char *names[] = {"error", "warning", "info", "debug"};
    (void)user;
    fprintf(stderr, "%s: %s: %s\n", tool_name, names[level], message);
}

/* At exit: what went to standard output must have arrived (a full disk, a
 * closed pipe, /dev/full), or the exit status says it did not. */
static void check_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int err = errno ? errno : EIO;
        fprintf(stderr, "%s: writing standard output: %s\n", tool_name, strerror(err));
        _exit(TOOL_EXIT_FAIL);
    }
}

void tool_init(const char *name, int verbose)
{
    static int registered;
    tool_name = name;
    mpt_set_log_callback(log_to_stderr, verbose ? MPT_LOG_DEBUG : MPT_LOG_WARN, NULL);
    if (!registered++)
        atexit(check_stdout);
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

uint64_t tool_parse_count(const char *opt, const char *s, uint64_t min)
{
    char *end;
    errno = 0;
    /* strtoull would skip spaces and wrap "-1" to 2^64 - 1: digits only. */
    unsigned long long v = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
    if (s[0] < '0' || s[0] > '9' || errno || *end || v < min)
        tool_usage_error("%s needs an integer >= %" PRIu64 ", got '%s'", opt, min, s);
    return v;
}

uint64_t tool_parse_size(const char *opt, const char *s)
{
    static const char units[] = "KMGT";
    char *end;
    errno = 0;
    unsigned long long v = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
    int shift = 0;
    if (s[0] >= '0' && s[0] <= '9' && !errno && *end) {
        const char *u = strchr(units, toupper((unsigned char)*end));
        if (u && *u) {
            shift = 10 * (int)(u - units + 1);
            end++;
            if (*end == 'i')
                end++;
        }
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (s[0] < '0' || s[0] > '9' || errno || *end || v == 0 || (shift && v > (~0ull >> shift)))
        tool_usage_error("%s needs a size in bytes such as 65536, 64M or 1G, got '%s'", opt, s);
    return (uint64_t)v << shift;
}

double tool_parse_real(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || end == s || errno == ERANGE || !isfinite(v) || isspace((unsigned char)s[0]))
        tool_usage_error("%s needs a finite number, got '%s'", opt, s);
    return v;
}

const char *tool_data_path(const char *relative)
{
    static char path[4096];
    struct stat st;
    const char *dir = getenv("MPT_DATADIR");
    if (dir && *dir) {
        snprintf(path, sizeof path, "%s/%s", dir, relative);
        return path;
    }
    snprintf(path, sizeof path, "%s/%s", MPT_PKGDATADIR, relative);
    if (stat(path, &st) == 0)
        return path;
    snprintf(path, sizeof path, "%s", relative);
    return path;
}

mpt_cluster_t *tool_local_cluster(mpt_devices_t *set, mpt_topology_t **topo)
{
    mpt_cluster_t *c = NULL;
    tool_check(mpt_topology_load(NULL, topo), "loading the topology");
    /* Profiling a device measures for seconds the first time (cached after). */
    if (tool_stderr_is_tty())
        fprintf(stderr, "\rprofiling %zu device(s)...", mpt_devices_count(set));
    int status = mpt_cluster_local(set, *topo, &c);
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r\033[K");
    tool_check(status, "describing the devices");
    return c;
}

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mpt_allreduce_t tool_parse_allreduce(const char *s)
{
    if (strcmp(s, "ring") == 0)
        return MPT_ALLREDUCE_RING;
    if (strcmp(s, "hierarchical") == 0)
        return MPT_ALLREDUCE_HIERARCHICAL;
    if (strcmp(s, "auto") == 0)
        return MPT_ALLREDUCE_AUTO;
    tool_usage_error("--allreduce must be ring, hierarchical or auto, got '%s'", s);
}
