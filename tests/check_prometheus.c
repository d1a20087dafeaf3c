/*
 * tests/check_prometheus.c: the Prometheus exposition text of made-up
 * reports, checked sample by sample (values, labels, HELP/TYPE once per
 * family, unknown figures left out, counters summed over steps), and the
 * listener's errors.  The text as a real scraper reads it is checked by
 * tests/prometheus_cli.sh (curl, promtool, prometheus).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

/* The value of the sample whose line starts with `series` (name and
 * labels exactly), NAN when there is none. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

static int count(const char *text, const char *needle)
{
    int k = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        k++;
    return k;
}

static mpt_step_report_t report_at(uint64_t step)
{
    return (mpt_step_report_t){.step = step, .total_steps = 100, .steps = 4, .seconds = 0.5,
                               .loss = 2.25, .lr = 0.01, .grad_norm = NAN,
                               .samples_per_s = 1024, .tokens_per_s = 0, .device_busy = 0.75,
                               .blas_busy = 0.5, .eta_s = 12,
                               .step_s = 0.125, .predicted_step_s = 0.0625,
                               .skipped_steps = 2};
}

#define DEV0 "{device=\"0\",rank=\"0\",replica=\"0\",stage=\"0\",member=\"0\"}"
#define DEV1 "{device=\"1\",rank=\"1\",replica=\"1\",stage=\"0\",member=\"0\"}"

START_TEST(text_of_a_report)
{
    mpt_prometheus_t *s = NULL;
    char *text = NULL;
    ck_assert_mpt_ok(mpt_prometheus_create(&s));
    ck_assert_int_eq(mpt_prometheus_port(s), -1);
    /* Before any report: only the info metric. */
    ck_assert_mpt_ok(mpt_prometheus_text(s, &text));
    ck_assert_msg(strstr(text, "mpt_info{version=\"") != NULL, "%s", text);
    ck_assert_ptr_null(strstr(text, "mpt_loss"));
    free(text);

    /* Device 1 is rank 1's, its kernel time unknown (timing off there):
     * busy, launch counts and achieved rates unknown (NaN), and no profile
     * or capacity (NaN, 0). */
    mpt_device_step_t d[2] = {
        {.device = 0, .replica = 0, .step_s = 0.125, .allreduce_s = 0.01,
         .allreduce_bytes = 1000, .memory_bytes = 4096, .busy = 0.5, .kernels = 7,
         .blas_calls = 3, .tp_s = 0, .forward_s = 0.25, .backward_s = 0.5, .p2p_s = 0.0,
         .reduce_wait_s = 0.03125, .update_s = 0.015625, .peak_memory_bytes = 6144,
         .predicted_memory_bytes = 5120, .gflops = 2.5, .mem_gbps = 0.5,
         .profile_gflops = 10, .profile_mem_gbps = 4, .memory_capacity_bytes = 65536,
         .peer_wait_s = 0.25, .transfer_s = 0.0078125, .allreduce_wait_s = 0.0625,
         .allreduce_transfer_s = 0.001953125},
        {.device = 1, .rank = 1, .replica = 1, .step_s = 0.25, .allreduce_s = 0.02,
         .allreduce_bytes = 1000, .memory_bytes = 8192, .busy = NAN, .forward_s = NAN,
         .backward_s = NAN, .p2p_s = NAN, .reduce_wait_s = NAN, .update_s = NAN,
         .gflops = NAN, .mem_gbps = NAN, .profile_gflops = NAN, .profile_mem_gbps = NAN},
    };
    mpt_step_report_t r = report_at(4);
    ck_assert_mpt_ok(mpt_prometheus_update(s, &r, 1, d, 2));
    ck_assert_mpt_ok(mpt_prometheus_text(s, &text));
    /* Exact values: every figure is a binary fraction, printed with %.17g. */
    ck_assert_double_eq(sample(text, "mpt_steps_total"), 4);
    ck_assert_double_eq(sample(text, "mpt_skipped_steps_total"), 2);
    ck_assert_double_eq(sample(text, "mpt_total_steps"), 100);
    ck_assert_double_eq(sample(text, "mpt_epoch"), 1);
    ck_assert_double_eq(sample(text, "mpt_loss"), 2.25);
    ck_assert_double_eq(sample(text, "mpt_samples_per_second"), 1024);
    ck_assert_double_eq(sample(text, "mpt_step_seconds"), 0.125);
    ck_assert_double_eq(sample(text, "mpt_predicted_step_seconds"), 0.0625);
    ck_assert_double_eq(sample(text, "mpt_busy_ratio"), 0.75);
    ck_assert_double_eq(sample(text, "mpt_device_busy_ratio" DEV0), 0.5);
    ck_assert_double_eq(sample(text, "mpt_device_memory_bytes" DEV1), 8192);
    ck_assert_double_eq(sample(text, "mpt_device_kernel_launches" DEV0), 7);
    ck_assert_double_eq(sample(text, "mpt_device_blas_calls" DEV0), 3);
    ck_assert_double_eq(sample(text, "mpt_device_step_seconds" DEV1), 0.25);
    ck_assert_double_eq(sample(text, "mpt_device_backward_seconds" DEV0), 0.5);
    ck_assert_double_eq(sample(text, "mpt_device_reduce_wait_seconds" DEV0), 0.03125);
    ck_assert(isnan(sample(text, "mpt_device_forward_seconds" DEV1)));
    /* Rates in base units; memory against the prediction and capacity;
     * blocked time split at the peer's arrival. */
    ck_assert_double_eq(sample(text, "mpt_device_flops_per_second" DEV0), 2.5e9);
    ck_assert_double_eq(sample(text, "mpt_device_profile_flops_per_second" DEV0), 1e10);
    ck_assert_double_eq(sample(text, "mpt_device_memory_bandwidth_bytes_per_second" DEV0),
                        0.5e9);
    ck_assert_double_eq(
        sample(text, "mpt_device_profile_memory_bandwidth_bytes_per_second" DEV0), 4e9);
    ck_assert_double_eq(sample(text, "mpt_device_peak_memory_bytes" DEV0), 6144);
    ck_assert_double_eq(sample(text, "mpt_device_predicted_memory_bytes" DEV0), 5120);
    ck_assert_double_eq(sample(text, "mpt_device_memory_capacity_bytes" DEV0), 65536);
    ck_assert_double_eq(sample(text, "mpt_device_peer_wait_seconds" DEV0), 0.25);
    ck_assert_double_eq(sample(text, "mpt_device_transfer_seconds" DEV0), 0.0078125);
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_wait_seconds" DEV0), 0.0625);
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_transfer_seconds" DEV0),
                        0.001953125);
    ck_assert(isnan(sample(text, "mpt_device_flops_per_second" DEV1)));
    ck_assert(isnan(sample(text, "mpt_device_profile_flops_per_second" DEV1)));
    ck_assert(isnan(sample(text, "mpt_device_memory_capacity_bytes" DEV1)));
    ck_assert(isnan(sample(text, "mpt_device_predicted_memory_bytes" DEV1)));
    /* Unknown figures have no sample: no clipping, no tokens, a device's
     * busy fraction and launch counts without its kernel time. */
    ck_assert_ptr_null(strstr(text, "mpt_grad_norm"));
    ck_assert_ptr_null(strstr(text, "mpt_tokens_per_second"));
    ck_assert(isnan(sample(text, "mpt_device_busy_ratio" DEV1)));
    ck_assert(isnan(sample(text, "mpt_device_kernel_launches" DEV1)));
    /* One HELP and one TYPE per family, before its samples. */
    ck_assert_int_eq(count(text, "# TYPE mpt_device_memory_bytes gauge\n"), 1);
    ck_assert_int_eq(count(text, "# HELP mpt_device_memory_bytes "), 1);
    ck_assert_int_eq(count(text, "# TYPE mpt_steps_total counter\n"), 1);
    ck_assert(strstr(text, "# TYPE mpt_device_allreduce_bytes_total counter\n") <
              strstr(text, "mpt_device_allreduce_bytes_total" DEV0));
    ck_assert_int_eq(text[strlen(text) - 1], '\n');
    /* The first update counts its own step once. */
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_bytes_total" DEV0), 1000);
    free(text);

    /* Counters add the last step's figures once per step since the
     * previous update: steps 4 -> 5 -> 8 is 1 + 1 + 3 steps. */
    r = report_at(5);
    ck_assert_mpt_ok(mpt_prometheus_update(s, &r, 1, d, 2));
    r = report_at(8);
    ck_assert_mpt_ok(mpt_prometheus_update(s, &r, 2, d, 2));
    ck_assert_mpt_ok(mpt_prometheus_text(s, &text));
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_bytes_total" DEV1), 5000);
    ck_assert_double_eq(sample(text, "mpt_device_peer_wait_seconds_total" DEV0), 1.25);
    ck_assert_double_eq(sample(text, "mpt_device_transfer_seconds_total" DEV0), 0.0390625);
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_wait_seconds_total" DEV0), 0.3125);
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_transfer_seconds_total" DEV0),
                        0.009765625);
    ck_assert_double_eq_tol(sample(text, "mpt_device_allreduce_seconds_total" DEV1), 0.1,
                            1e-15); /* 5 x 0.02: a few ulps of rounding */
    ck_assert_double_eq(sample(text, "mpt_epoch"), 2);
    free(text);

    /* A step back (a new run through the same server) starts them again. */
    r = report_at(2);
    ck_assert_mpt_ok(mpt_prometheus_update(s, &r, 1, d, 2));
    ck_assert_mpt_ok(mpt_prometheus_text(s, &text));
    ck_assert_double_eq(sample(text, "mpt_device_allreduce_bytes_total" DEV1), 1000);
    free(text);

    /* Another device count (a re-plan onto one device): one device's series. */
    ck_assert_mpt_ok(mpt_prometheus_update(s, &r, 1, d, 1));
    ck_assert_mpt_ok(mpt_prometheus_text(s, &text));
    ck_assert(isnan(sample(text, "mpt_device_memory_bytes" DEV1)));
    ck_assert_double_eq(sample(text, "mpt_device_memory_bytes" DEV0), 4096);
    free(text);
    mpt_prometheus_stop(s);

    /* A report without devices (a program that has none to give). */
    ck_assert_mpt_ok(mpt_prometheus_create(&s));
    r = report_at(3);
    ck_assert_mpt_ok(mpt_prometheus_update(s, &r, 1, NULL, 0));
    ck_assert_mpt_ok(mpt_prometheus_text(s, &text));
    ck_assert_double_eq(sample(text, "mpt_steps_total"), 3);
    ck_assert_ptr_null(strstr(text, "mpt_device_"));
    free(text);
    mpt_prometheus_stop(s);
}
END_TEST

START_TEST(listener_errors)
{
    mpt_prometheus_t *s = NULL, *t = NULL;
    mpt_step_report_t r = report_at(1);
    ck_assert_mpt_fails(mpt_prometheus_start(70000, NULL, &s), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt_prometheus_update(NULL, &r, 1, NULL, 0), MPT_ERR_INVALID);
    int status = mpt_prometheus_start(0, NULL, &s);
    if (status == MPT_ERR_UNSUPPORTED) { /* built without libmicrohttpd: it says so */
        ck_assert_msg(strstr(mpt_last_error(), "libmicrohttpd-dev") != NULL, "%s",
                      mpt_last_error());
        return;
    }
    ck_assert_mpt_ok(status);
    ck_assert_int_gt(mpt_prometheus_port(s), 0);
    ck_assert_mpt_fails(mpt_prometheus_start(0, "localhost", &t), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "localhost") != NULL, "%s", mpt_last_error());
    /* The port is taken: the error names the address. */
    ck_assert_mpt_fails(mpt_prometheus_start(mpt_prometheus_port(s), "127.0.0.1", &t),
                        MPT_ERR_IO);
    ck_assert_msg(strstr(mpt_last_error(), "127.0.0.1") != NULL, "%s", mpt_last_error());
    ck_assert_ptr_null(t);
    mpt_prometheus_stop(s);
    /* IPv6 loopback, when the machine has it. */
    if (mpt_prometheus_start(0, "::1", &t) == MPT_OK) {
        ck_assert_int_gt(mpt_prometheus_port(t), 0);
        mpt_prometheus_stop(t);
    }
    mpt_prometheus_stop(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prometheus");
    TCase *tc = tcase_create("prometheus");
    tcase_add_test(tc, text_of_a_report);
    tcase_add_test(tc, listener_errors);
    suite_add_tcase(s, tc);
    return test_run(s, 1);
}
