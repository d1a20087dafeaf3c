/*
 * bin/tool.h: what every mpt tool shares: exit codes, die-on-error helpers
 * (allowed here, never in lib/), a stderr log callback, the environment
 * table for --help.
 */
#ifndef MPT_TOOL_H
#define MPT_TOOL_H

#include <stdint.h>
#include <stdio.h>

#include "mpt.h"

enum { TOOL_EXIT_OK = 0, TOOL_EXIT_FAIL = 1, TOOL_EXIT_USAGE = 2 };

/* Prints "<tool>: <what>: <mpt_last_error() or strerror>" and exits 1 when
 * status is an error; returns otherwise. */
void tool_check(int status, const char *what);
/* Prints "<tool>: message" and exits 1. */
void tool_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Prints "<tool>: message" and a hint to --help, exits 2. */
void tool_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Sets the program name used in messages and installs the stderr logger
 * (warnings and errors; info too when verbose). */
void tool_init(const char *name, int verbose);
/* Prints the environment variables mpt reads, for --help. */
void tool_print_env(FILE *f);
/* An option's integer value, at least `min`, else a usage error (exit 2). */
uint64_t tool_parse_count(const char *opt, const char *s, uint64_t min);
/* A size in bytes, at least 1: digits with an optional K, M, G or T
 * (powers of 1024, "64M", "1G"; a trailing B or iB is allowed), else a
 * usage error (exit 2). */
uint64_t tool_parse_size(const char *opt, const char *s);
/* --allreduce's value: ring, hierarchical or auto, else a usage error. */
mpt_allreduce_t tool_parse_allreduce(const char *s);
/* An option's number, else a usage error. */
double tool_parse_real(const char *opt, const char *s);
/* A file shipped with mpt (e.g. "models/mlp-fashion.json"): under
 * $MPT_DATADIR when it is set (tests of a VPATH build point it at the source
 * tree), else the installed copy when there is one, else the path relative to
 * the current directory (a source tree). */
const char *tool_data_path(const char *relative);
/* The opened devices as a cluster (docs/cluster.md): mpt_cluster_local
 * with this machine's topology (returned in *topo, to free after the
 * cluster's users), a progress line on a terminal while it profiles.
 * Exits on failure. */
mpt_cluster_t *tool_local_cluster(mpt_devices_t *set, mpt_topology_t **topo);
/* Monotonic seconds, for timing runs and steps. */
double tool_now(void);
/* Whether stderr is a terminal (progress lines only then). */
int tool_stderr_is_tty(void);

#endif
