/*
 * tests/testutil.h: what the Check suites share: a status assertion that
 * prints the library's detail, the suite runner, and paths of fixtures.
 */
#ifndef MPT_TESTUTIL_H
#define MPT_TESTUTIL_H

#include <stdlib.h>

#include <check.h>

#include "mpt.h"

/* Asserts a call returns MPT_OK; on failure shows the code and detail. */
#define ck_assert_mpt_ok(call)                                                 \
    do {                                                                       \
        int s_ = (call);                                                       \
        ck_assert_msg(s_ == MPT_OK, "%s returned %s: %s", #call,               \
                      mpt_status_name(s_), mpt_last_error());                  \
    } while (0)

/* Asserts a call fails with `code`. */
#define ck_assert_mpt_fails(call, code)                                        \
    do {                                                                       \
        int s_ = (call);                                                       \
        ck_assert_msg(s_ == (code), "%s returned %s, expected %s (detail: %s)", \
                      #call, mpt_status_name(s_), mpt_status_name(code),       \
                      mpt_last_error());                                       \
    } while (0)

/* A fixture file under tests/ of the source tree (MPT_TESTS_SRCDIR, set by
 * make check), in a static buffer. */
static inline const char *test_path(const char *relative)
{
    static char buf[4096];
    const char *dir = getenv("MPT_TESTS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests", relative);
    return buf;
}

/* Runs a suite; OpenCL suites pass fork = 0, since a forked child of a
 * process that initialised OpenCL hangs (see ENVIRONMENT.md).  Exit status
 * for automake: 0 pass, 1 fail. */
static inline int test_run(Suite *s, int fork)
{
    SRunner *sr = srunner_create(s);
    if (!fork)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
