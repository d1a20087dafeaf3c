/*
 * tests/testutil.h: what the Check suites share: a status assertion that
 * prints the library's detail, the suite runner, and paths of fixtures.
 */
#ifndef MPT_TESTUTIL_H
#define MPT_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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

/* Writes text to a fresh temporary file made from the template path
 * ("...XXXXXX", rewritten in place); the caller unlinks it. */
static inline void test_write_temp(char *path, const char *text)
{
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

/* A cluster from its description's text, through a temporary file
 * (mpt_cluster_load reads files), asserted to load. */
static inline mpt_cluster_t *test_cluster_from_text(const char *text)
{
    char path[] = "/tmp/mpt_test_cluster_XXXXXX";
    mpt_cluster_t *c = NULL;
    test_write_temp(path, text);
    int status = mpt_cluster_load(path, &c);
    unlink(path);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    return c;
}

/* A fixture file under tests/ of the source tree (MPT_TESTS_SRCDIR, set by
 * make check), in a static buffer. */
static inline const char *test_path(const char *relative)
{
    static char buf[4096];
    const char *dir = getenv("MPT_TESTS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests", relative);
    return buf;
}

/* MPT_TEST_SMALL=1 (set by make check-kernels): smaller shapes for runs
 * under a simulator (Oclgrind interprets every work-item), still checked
 * against the same references and tolerances.  Each test that reads it
 * says which shapes shrink. */
static inline int test_small(void)
{
    const char *s = getenv("MPT_TEST_SMALL");
    return s && s[0] == '1' && s[1] == '\0';
}

/* The GEMM providers (lib/device/gemm.h) that every test using GEMMs runs
 * under, as a Check loop test over [0, TEST_GEMM_PROVIDERS). */
#define TEST_GEMM_PROVIDERS 2
static inline const char *test_gemm_provider(int i)
{
    return i == 0 ? "clblast" : "host";
}

/* Opens the devices of `spec` with GEMM provider i (MPT_BLAS, read only
 * while opening, then restored to unset) and asserts each got it. */
static inline mpt_devices_t *test_open_with_provider(const char *spec, int i)
{
    mpt_devices_t *set = NULL;
    ck_assert_int_eq(setenv("MPT_BLAS", test_gemm_provider(i), 1), 0);
    int status = mpt_devices_open(spec, &set);
    unsetenv("MPT_BLAS");
    ck_assert_msg(status == MPT_OK, "opening devices %s with MPT_BLAS=%s: %s", spec,
                  test_gemm_provider(i), mpt_last_error());
    for (size_t d = 0; d < mpt_devices_count(set); d++)
        ck_assert_str_eq(mpt_device_info(mpt_devices_get(set, d))->gemm_provider,
                         test_gemm_provider(i));
    return set;
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
