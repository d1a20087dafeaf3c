/*
 * tests/check_plan_subsets.c: the planner's search over which devices
 * (plan/subsets.c) and its pricing of shared cores (plan/share.c).
 *
 * - brute force: on clusters of 3 and 4 devices of mixed speed, the
 *   chosen plan's predicted step equals the best over every non-empty
 *   subset of the devices, each planned over all its shapes on its own
 *   (relative 1e-9: the same cost model, summed in another order at most),
 *   and is never slower than the best uniform split or any one device;
 * - a useless device (1e-2 GFLOP/s among 1,000s) on a 10-device cluster,
 *   above the exhaustive limit, is left idle and named with the reason;
 * - shared cores, on the topology of tests/fixtures/two-socket-gpus.xml:
 *   two CPU devices on the same 4 cores predict no faster together than
 *   one alone, the same two on disjoint cores nearly twice as fast, and a
 *   measured concurrent rate (shared_gemm_gflops) replaces the estimate,
 *   and a plan on two of three devices that were measured together gets
 *   the three's rate times 3/2, capped at the rate alone (as measured
 *   when measured with two, or when the count is not said);
 *   the plan's description names the share and whether it was measured;
 * - profile values outside physical bounds (1e-300 GFLOP/s, negative or
 *   absurd bandwidths, 1 EB of memory, 1.5 or 1 devices measured
 *   together) are refused naming file and field.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plan/plan.h"
#include "testutil.h"

/* An MLP of four linear 1024 layers (compute-bound at the rates below). */
static mpt_model_t *mlp(void)
{
    char path[] = "/tmp/check_subsets_model_XXXXXX";
    test_write_temp(path, "{\"name\": \"mlp4\", \"input\": [1024], \"layers\": ["
                     "{\"kind\": \"linear\", \"units\": 1024}, {\"kind\": \"relu\"},"
                     "{\"kind\": \"linear\", \"units\": 1024}, {\"kind\": \"relu\"},"
                     "{\"kind\": \"linear\", \"units\": 1024}, {\"kind\": \"relu\"},"
                     "{\"kind\": \"linear\", \"units\": 10},"
                     "{\"kind\": \"softmax_cross_entropy\"}]}");
    mpt_model_t *m = NULL;
    int status = mpt_model_load(path, &m);
    unlink(path);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    return m;
}

/* n GPUs of one node, device i at gflops[i]; extra: JSON added to each. */
static mpt_cluster_t *cluster(size_t n, const double *gflops)
{
    char text[16384];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "{\"mpt_cluster\": 1, \"name\": \"t\", \"devices\": [");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(
            text + len, sizeof text - len,
            "%s{\"name\": \"dev%zu\", \"type\": \"gpu\", \"global_mem_bytes\": 10000000000, "
            "\"node\": 0, \"numa_node\": 0, \"package\": 0, \"profile\": {\"gemm_gflops\": %g, "
            "\"mem_gbps\": 500, \"h2d_gbps\": 10, \"d2h_gbps\": 10, \"launch_us\": 5}}",
            i ? ", " : "", i, gflops[i]);
    snprintf(text + len, sizeof text - len, "]}");
    return test_cluster_from_text(text);
}

static double plan_step(const mpt_model_t *m, const mpt_cluster_t *c, int all_devices,
                        mpt_plan_t **keep)
{
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL;
    double step = 0;
    mpt_plan_request_default(&req);
    req.batch = 256;
    req.all_devices = all_devices;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_mpt_ok(mpt_plan_simulate(p, m, c, &step, NULL, NULL));
    if (keep)
        *keep = p;
    else
        mpt_plan_free(p);
    return step;
}

static void brute_force(size_t n, const double *gflops)
{
    mpt_model_t *m = mlp();
    mpt_cluster_t *c = cluster(n, gflops);
    double chosen = plan_step(m, c, 0, NULL), best = HUGE_VAL, uniform = 0;
    for (unsigned mask = 1; mask < (1u << n); mask++) {
        double g[8];
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (mask >> i & 1)
                g[k++] = gflops[i];
        mpt_cluster_t *sub = cluster(k, g);
        double step = plan_step(m, sub, 1, NULL);
        best = fmin(best, step);
        if (k == 1) /* never slower than any one device */
            ck_assert_msg(chosen <= step * (1 + 1e-9), "chosen %g > device alone %g", chosen,
                          step);
        mpt_cluster_free(sub);
    }
    ck_assert_msg(fabs(chosen - best) <= 1e-9 * best, "chosen %.9g, brute force %.9g", chosen,
                  best);
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.batch = 256;
    ck_assert_mpt_ok(mpt_plan_uniform_step(m, c, &req, &uniform));
    ck_assert_msg(chosen <= uniform * (1 + 1e-9), "chosen %g > uniform %g", chosen, uniform);
    mpt_cluster_free(c);
    mpt_model_free(m);
}

START_TEST(subsets_match_brute_force)
{
    const double three[] = {4000, 1000, 30}, four[] = {4000, 4000, 700, 5};
    const double alike[] = {2000, 2000, 2000};
    brute_force(3, three);
    brute_force(4, four);
    brute_force(3, alike);
}
END_TEST

START_TEST(useless_device_is_left_idle)
{
    double g[10];
    for (size_t i = 0; i < 10; i++)
        g[i] = i == 7 ? 1e-2 : 3000;
    mpt_model_t *m = mlp();
    mpt_cluster_t *c = cluster(10, g);
    mpt_plan_t *p = NULL;
    plan_step(m, c, 0, &p);
    char *json = NULL, *text = NULL;
    ck_assert_mpt_ok(mpt_plan_to_json(p, &json));
    /* Device 7 appears in no stage ("device": 7 would be its entry). */
    ck_assert_msg(!strstr(json, "\"device\": 7,") && !strstr(json, "\"device\": 7\n"),
                  "device 7 is used: %s", json);
    ck_assert_mpt_ok(mpt_plan_describe(p, m, c, 0, &text));
    ck_assert_msg(strstr(text, "device 7 (dev7) left idle"), "%s", text);
    /* With every device forced in, the step is slower. */
    double forced = plan_step(m, c, 1, NULL), step = 0;
    ck_assert_mpt_ok(mpt_plan_simulate(p, m, c, &step, NULL, NULL));
    ck_assert_msg(step < forced, "idle %g, forced %g", step, forced);
    free(json);
    free(text);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* n CPU devices of 4 compute units on cpus[i] of the XML topology, 100
 * GFLOP/s alone; shared: the measured concurrent GEMM rate of each, or 0,
 * measured with `together` devices running (0: not said). */
static mpt_cluster_t *cpu_devices(size_t n, const char *const *cpus, double shared,
                                  int together)
{
    char text[4096], shared_json[96] = "", count_json[48] = "";
    const char *dir = getenv("MPT_TESTS_SRCDIR");
    if (together)
        snprintf(count_json, sizeof count_json, ", \"shared_devices\": %d", together);
    if (shared > 0)
        snprintf(shared_json, sizeof shared_json, ", \"shared_gemm_gflops\": %g%s", shared,
                 count_json);
    size_t len = (size_t)snprintf(
        text, sizeof text,
        "{\"mpt_cluster\": 1, \"name\": \"cpus\", \"nodes\": [{\"name\": \"h\", "
        "\"topology_xml\": \"%s/fixtures/two-socket-gpus.xml\"}], \"devices\": [",
        dir ? dir : "tests");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(
            text + len, sizeof text - len,
            "%s{\"name\": \"cpu%zu\", \"type\": \"cpu\", \"global_mem_bytes\": 10000000000, "
            "\"compute_units\": 4, \"cpus\": \"%s\", \"cores\": 4, \"numa_node\": 0, "
            "\"package\": 0, \"profile\": {\"gemm_gflops\": 100, \"mem_gbps\": 20, "
            "\"h2d_gbps\": 10, \"d2h_gbps\": 10, \"launch_us\": 5%s}}",
            i ? ", " : "", i, cpus[i], shared_json);
    snprintf(text + len, sizeof text - len, "]}");
    return test_cluster_from_text(text);
}

static mpt_cluster_t *cpu_pair(const char *a, const char *b, double shared)
{
    const char *cpus[2] = {a, b};
    return cpu_devices(2, cpus, shared, shared > 0 ? 2 : 0);
}

static const char *const three_on_same_cores[3] = {"0-3", "0-3", "0-3"};

/* Device 0's GEMM rate in a plan on devices 0 and 2 of three CPU devices
 * on the same cores, each measured at `shared` of 100 GFLOP/s with
 * `together` devices running (0: not said). */
static double rate_in_pair_of_three(double shared, int together)
{
    const size_t two[2] = {0, 2};
    mpt_cluster_t *c = cpu_devices(3, three_on_same_cores, shared, together);
    mpt_cluster_device_t eff[3];
    mpt__cost_shared(c, two, 2, eff);
    mpt_cluster_free(c);
    return eff[0].profile.gemm_gflops;
}

/* A group's concurrent rate was measured with all of it running; a plan
 * on fewer of its devices splits the cores among fewer.  Tolerance 1e-9:
 * each rate is a product and quotient of a few small integers, exact but
 * for a rounding or two of the last bit. */
START_TEST(shared_rate_of_a_subset)
{
    /* 40 of 100 GFLOP/s, three at once */
    mpt_cluster_t *c = cpu_devices(3, three_on_same_cores, 40, 3);
    mpt_cluster_device_t eff[3];
    const size_t all[3] = {0, 1, 2}, two[2] = {0, 2}, one[1] = {1};
    /* All three, as measured: 40. */
    mpt__cost_shared(c, all, 3, eff);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq_tol(eff[i].profile.gemm_gflops, 40, 1e-9);
    /* Two: 40 x 3 / 2 = 60 each; the third, idle, keeps its rate alone. */
    mpt__cost_shared(c, two, 2, eff);
    ck_assert_double_eq_tol(eff[0].profile.gemm_gflops, 60, 1e-9);
    ck_assert_double_eq_tol(eff[2].profile.gemm_gflops, 60, 1e-9);
    ck_assert_double_eq_tol(eff[1].profile.gemm_gflops, 100, 1e-9);
    /* The memory bandwidth follows the GEMM ratio when not measured. */
    ck_assert_double_eq_tol(eff[0].profile.mem_gbps, 20 * 0.6, 1e-9);
    /* One alone shares with nothing. */
    mpt__cost_shared(c, one, 1, eff);
    ck_assert_double_eq_tol(eff[1].profile.gemm_gflops, 100, 1e-9);
    mpt_cluster_free(c);
    /* Never above the rate alone: 80 of 100 with three, two get 100. */
    ck_assert_double_eq_tol(rate_in_pair_of_three(80, 3), 100, 1e-9);
    /* Measured with two (as ranks on one host each measure their own
     * pair): a plan on two of the three runs as measured, 40. */
    ck_assert_double_eq_tol(rate_in_pair_of_three(40, 2), 40, 1e-9);
    /* Not said how many (a cluster file from before the count): as is. */
    ck_assert_double_eq_tol(rate_in_pair_of_three(40, 0), 40, 1e-9);
}
END_TEST

START_TEST(shared_cores_are_priced)
{
    mpt_model_t *m = mlp();
    const double one[1] = {100};
    (void)one;
    mpt_cluster_t *same = cpu_pair("0-3", "0-3", 0), *apart = cpu_pair("0-3", "4-7", 0);
    mpt_cluster_t *measured = cpu_pair("0-3", "0-3", 90);
    /* One device alone: the pair's plan with every device forced in on
     * disjoint cores, against the same on shared ones. */
    double both_apart = plan_step(m, apart, 1, NULL), both_same = plan_step(m, same, 1, NULL);
    double best_same = plan_step(m, same, 0, NULL), best_measured = plan_step(m, measured, 1, NULL);
    double alone = 0;
    {
        mpt_plan_t *p = NULL;
        mpt_plan_request_t req;
        mpt_plan_request_default(&req);
        req.batch = 256;
        req.dp = req.pp = req.tp = 1;
        req.all_devices = 0;
        ck_assert_mpt_ok(mpt_plan_create(m, same, &req, &p));
        ck_assert_mpt_ok(mpt_plan_simulate(p, m, same, &alone, NULL, NULL));
        mpt_plan_free(p);
    }
    /* Estimate: 8 cores wanted of 4, each at half rate: together no
     * faster than one alone (the collectives only add). */
    ck_assert_msg(both_same >= alone * 0.999, "shared %g, alone %g", both_same, alone);
    /* Apart: two full devices, well under one alone (0.7: the
     * all-reduce and launches keep it above one half). */
    ck_assert_msg(both_apart < 0.7 * alone, "apart %g, alone %g", both_apart, alone);
    /* Measured at 90 of 100 GFLOP/s together: close to apart again. */
    ck_assert_msg(best_measured < 0.8 * alone && best_measured > both_apart,
                  "measured %g, apart %g, alone %g", best_measured, both_apart, alone);
    /* And the planner, free to choose, never does worse than one alone. */
    ck_assert_msg(best_same <= alone * (1 + 1e-9), "best %g, alone %g", best_same, alone);
    /* The groups the local cluster measures together (profile/shared.c):
     * the pair on the same cores, not the pair on disjoint ones. */
    ck_assert_int_eq(mpt__cost_share_cores(same, 0, 1), 1);
    ck_assert_int_eq(mpt__cost_share_cores(apart, 0, 1), 0);
    ck_assert_int_eq(mpt__cost_share_cores(same, 0, 0), 0);
    /* The description names the share it priced: estimated at half
     * (8 cores wanted of 4), measured at 90%; nothing on disjoint cores. */
    const struct {
        mpt_cluster_t *c;
        const char *want;
    } said[] = {{same, "device 0 50% (estimated), device 1 50% (estimated)"},
                {measured, "device 0 90% (measured together), device 1 90% (measured together)"},
                {apart, NULL}};
    for (size_t i = 0; i < 3; i++) {
        mpt_plan_t *p = NULL;
        char *text = NULL;
        plan_step(m, said[i].c, 1, &p);
        ck_assert_mpt_ok(mpt_plan_describe(p, m, said[i].c, 0, &text));
        if (said[i].want)
            ck_assert_msg(strstr(text, said[i].want), "%s", text);
        else
            ck_assert_msg(!strstr(text, "Shared cores"), "%s", text);
        free(text);
        mpt_plan_free(p);
    }
    mpt_cluster_free(same);
    mpt_cluster_free(apart);
    mpt_cluster_free(measured);
    mpt_model_free(m);
}
END_TEST

/* Out-of-bounds profile values are refused, naming the file and field. */
START_TEST(bad_profile_values_refused)
{
    static const struct {
        const char *profile, *mem, *field;
    } bad[] = {
        {"\"gemm_gflops\": 1e-300, \"mem_gbps\": 500", "10000000000", "devices[0].profile.gemm_gflops"},
        {"\"gemm_gflops\": 1000, \"mem_gbps\": -5", "10000000000", "devices[0].profile.mem_gbps"},
        {"\"gemm_gflops\": 1000, \"mem_gbps\": 1e12", "10000000000", "devices[0].profile.mem_gbps"},
        {"\"gemm_gflops\": 1e9, \"mem_gbps\": 500", "10000000000", "devices[0].profile.gemm_gflops"},
        {"\"gemm_gflops\": 1000, \"mem_gbps\": 500", "1000000000000000000", "devices[0].global_mem_bytes"},
        {"\"gemm_gflops\": 1000, \"mem_gbps\": 500, \"shared_devices\": 1.5", "10000000000",
         "devices[0].profile.shared_devices"},
        {"\"gemm_gflops\": 1000, \"mem_gbps\": 500, \"shared_devices\": 1", "10000000000",
         "devices[0].profile.shared_devices"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[1024], path[] = "/tmp/check_subsets_bad_XXXXXX";
        snprintf(text, sizeof text,
                 "{\"mpt_cluster\": 1, \"devices\": [{\"name\": \"g\", \"type\": \"gpu\", "
                 "\"global_mem_bytes\": %s, \"profile\": {%s, \"h2d_gbps\": 10, "
                 "\"d2h_gbps\": 10}}]}",
                 bad[i].mem, bad[i].profile);
        test_write_temp(path, text);
        mpt_cluster_t *c = NULL;
        int status = mpt_cluster_load(path, &c);
        ck_assert_int_eq(status, MPT_ERR_PARSE);
        ck_assert_ptr_null(c);
        ck_assert_msg(strstr(mpt_last_error(), path) && strstr(mpt_last_error(), bad[i].field),
                      "case %zu: %s", i, mpt_last_error());
        unlink(path);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan_subsets");
    TCase *tc = tcase_create("subsets");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, subsets_match_brute_force);
    tcase_add_test(tc, useless_device_is_left_idle);
    tcase_add_test(tc, shared_cores_are_priced);
    tcase_add_test(tc, shared_rate_of_a_subset);
    tcase_add_test(tc, bad_profile_values_refused);
    suite_add_tcase(s, tc);
    return test_run(s, 1);
}
