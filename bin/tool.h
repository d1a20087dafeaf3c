/*
 * bin/tool.h: what every mpt tool shares: exit codes, die-on-error helpers
 * (allowed here, never in lib/), a stderr log callback, the environment
 * table for --help.
 */
#ifndef MPT_TOOL_H
#define MPT_TOOL_H

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
/* Whether stderr is a terminal (progress lines only then). */
int tool_stderr_is_tty(void);

#endif
