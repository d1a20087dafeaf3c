/*
 * tests/check_core.c: status codes and strings, per-thread error detail,
 * the log callback, the environment table, and the JSON file helpers.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "testutil.h"

static const int all_codes[] = {
#define CODE(name, code, text) code,
    MPT_STATUS_LIST(CODE)
#undef CODE
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

START_TEST(status_strings_are_distinct)
{
    for (size_t i = 0; i < N_CODES; i++) {
        ck_assert_str_ne(mpt_strerror(all_codes[i]), "unknown status");
        ck_assert_str_ne(mpt_strerror(all_codes[i]), "");
        ck_assert(strncmp(mpt_status_name(all_codes[i]), "MPT_", 4) == 0);
        for (size_t j = 0; j < i; j++) {
            ck_assert_int_ne(all_codes[i], all_codes[j]);
            ck_assert_str_ne(mpt_strerror(all_codes[i]), mpt_strerror(all_codes[j]));
        }
    }
    ck_assert_str_eq(mpt_strerror(MPT_OK), "success");
    ck_assert_str_eq(mpt_status_name(MPT_ERR_BUILD), "MPT_ERR_BUILD");
    ck_assert_str_eq(mpt_strerror(12345), "unknown status");
    ck_assert_str_eq(mpt_status_name(-999), "MPT_UNKNOWN");
    ck_assert(strlen(mpt_version()) > 0);
}
END_TEST

static void *fail_in_thread(void *arg)
{
    (void)arg;
    mpt__fail(MPT_ERR_IO, "thread detail %d", 42);
    return strcmp(mpt_last_error(), "thread detail 42") == 0 ? (void *)1 : NULL;
}

START_TEST(last_error_is_per_thread)
{
    pthread_t t;
    void *ok = NULL;
    ck_assert_int_eq(mpt__fail(MPT_ERR_PARSE, "main detail"), MPT_ERR_PARSE);
    pthread_create(&t, NULL, fail_in_thread, NULL);
    pthread_join(t, &ok);
    ck_assert_ptr_nonnull(ok);
    ck_assert_str_eq(mpt_last_error(), "main detail");
    mpt__fail_context(MPT_ERR_PARSE, "reading %s", "x.json");
    ck_assert_str_eq(mpt_last_error(), "reading x.json: main detail");
    mpt__clear_error();
    ck_assert_str_eq(mpt_last_error(), "");
}
END_TEST

static int logged;
static char last_message[256];
static void count_log(mpt_log_level_t level, const char *message, void *user)
{
    (void)level;
    logged += *(int *)user;
    snprintf(last_message, sizeof last_message, "%s", message);
}

START_TEST(log_callback_filters_by_level)
{
    int one = 1;
    logged = 0;
    mpt__log(MPT_LOG_ERROR, "dropped: no callback");
    ck_assert_int_eq(logged, 0);
    mpt_set_log_callback(count_log, MPT_LOG_WARN, &one);
    mpt__log(MPT_LOG_WARN, "warning %d", 7);
    mpt__log(MPT_LOG_DEBUG, "too detailed");
    ck_assert_int_eq(logged, 1);
    ck_assert_str_eq(last_message, "warning 7");
    mpt_set_log_callback(NULL, MPT_LOG_ERROR, NULL);
    mpt__log(MPT_LOG_ERROR, "dropped again");
    ck_assert_int_eq(logged, 1);
}
END_TEST

START_TEST(env_table_is_complete)
{
    ck_assert_uint_eq(mpt_env_count(), MPT_ENV__COUNT);
    for (size_t i = 0; i < mpt_env_count(); i++) {
        const mpt_env_var_t *v = mpt_env_get(i);
        ck_assert_ptr_nonnull(v);
        ck_assert_ptr_nonnull(v->name);
        ck_assert_ptr_nonnull(v->default_value);
        ck_assert(strlen(v->help) > 10);
    }
    ck_assert_ptr_null(mpt_env_get(mpt_env_count()));
    setenv("MPT_CL_BUILD_OPTIONS", "-DX=1", 1);
    ck_assert_str_eq(mpt__env(MPT_ENV_CL_BUILD_OPTIONS), "-DX=1");
    unsetenv("MPT_CL_BUILD_OPTIONS");
    ck_assert_str_eq(mpt__env(MPT_ENV_CL_BUILD_OPTIONS), "");
}
END_TEST

START_TEST(json_files_round_trip_and_fail_clearly)
{
    char dir[] = "/tmp/mpt-core-XXXXXX", path[512], sub[256];
    json_t *v = NULL, *back = NULL;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(sub, sizeof sub, "%s/a/b/c", dir);
    ck_assert_mpt_ok(mpt__mkdir_p(sub));
    ck_assert_mpt_ok(mpt__mkdir_p(sub)); /* exists: still fine */
    snprintf(path, sizeof path, "%s/v.json", sub);
    v = json_pack("{s:i,s:[f,f]}", "n", 3, "x", 0.1, 1e-30);
    ck_assert_mpt_ok(mpt__json_save_file(path, v));
    ck_assert_mpt_ok(mpt__json_load_file(path, &back));
    ck_assert(json_equal(v, back));
    json_decref(back);

    FILE *f = fopen(path, "w");
    fputs("{\"n\": 3,\n \"x\": [1, }", f);
    fclose(f);
    ck_assert_mpt_fails(mpt__json_load_file(path, &back), MPT_ERR_PARSE);
    ck_assert_ptr_null(back);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), path));
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), ":2:")); /* the line of the error */

    snprintf(path, sizeof path, "%s/missing.json", dir);
    ck_assert_mpt_fails(mpt__json_load_file(path, &back), MPT_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "missing.json"));
    snprintf(path, sizeof path, "%s/no/such/dir/v.json", dir);
    ck_assert_mpt_fails(mpt__json_save_file(path, v), MPT_ERR_IO);
    json_decref(v);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(snprintf_refuses_to_truncate)
{
    char small[4];
    ck_assert_mpt_ok(mpt__snprintf(small, sizeof small, "%s", "abc"));
    ck_assert_mpt_fails(mpt__snprintf(small, sizeof small, "%s", "abcd"), MPT_ERR_RANGE);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, status_strings_are_distinct);
    tcase_add_test(tc, last_error_is_per_thread);
    tcase_add_test(tc, log_callback_filters_by_level);
    tcase_add_test(tc, env_table_is_complete);
    tcase_add_test(tc, json_files_round_trip_and_fail_clearly);
    tcase_add_test(tc, snprintf_refuses_to_truncate);
    suite_add_tcase(s, tc);
    return test_run(s, 1);
}
