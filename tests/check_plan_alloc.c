/*
 * tests/check_plan_alloc.c: the planner respects each device's largest
 * allocation (max_alloc_bytes), not only its memory (issue 21).
 *
 * The cluster (tests/fixtures/cluster-small-alloc.json): two alike GPUs of
 * 4 GiB whose largest buffer is 900000 bytes.  The Fashion-MNIST MLP's
 * parameters are 247766 floats, 991064 bytes in one flat buffer (and its
 * gradients and optimizer state as many), so one device cannot hold the
 * whole model although its memory could hold it 4000 times over; its
 * first layer alone is 200960 floats, 803840 bytes, which fits.  At batch
 * 64 the activations of a whole-model stage are 64 x 1762 floats, 451072
 * bytes: they fit either way.
 *
 * - The automatic plan avoids the overflow (two pipeline stages, or
 *   tensor-parallel halves): every buffer of every device, as
 *   mpt__cost_largest_buffer counts the executor's layout, is within
 *   900000 bytes.
 * - Pinned to data parallelism (a whole model per device) the planner
 *   refuses, naming the device, the buffer and both sizes.
 * - A plan file that puts the whole model on one device is refused when
 *   read against this cluster, naming the same.
 * - mpt__cost_largest_buffer against the executor's allocations of the
 *   MLP counted by hand (parameters, activations, activation gradients).
 */
#define _POSIX_C_SOURCE 200809L /* setenv in testutil.h */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plan/plan.h"
#include "testutil.h"

#define MAX_ALLOC 900000.0
#define MLP_PARAM_BYTES 991064.0 /* 247766 floats */

static mpt_model_t *mlp(void)
{
    mpt_model_t *m = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/mlp-fashion.json"), &m));
    ck_assert_uint_eq(mpt_model_param_count(m), 247766);
    return m;
}

static mpt_cluster_t *small_alloc(void)
{
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_ok(mpt_cluster_load(test_path("fixtures/cluster-small-alloc.json"), &c));
    ck_assert_uint_eq(mpt_cluster_device_count(c), 2);
    ck_assert_uint_eq(mpt_cluster_device(c, 0)->info.max_alloc_bytes, (uint64_t)MAX_ALLOC);
    return c;
}

static void request(mpt_plan_request_t *r)
{
    mpt_plan_request_default(r);
    r->batch = 64;
}

/* Fails unless err names a device, the buffer and both byte counts. */
static void expect_named(const char *err, const char *buffer, const char *bytes)
{
    ck_assert_msg(strstr(err, "device ") && strstr(err, buffer) && strstr(err, bytes) &&
                      strstr(err, "largest allocation of 900000 bytes"),
                  "the error does not name device, %s and %s bytes: %s", buffer, bytes, err);
}

START_TEST(buffers_counted_as_the_executor_lays_them_out)
{
    mpt_model_t *m = mlp();
    mpt__model_cost_t mc;
    const char *what = NULL;
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    /* Whole model, one micro-batch of 64: the parameters are largest. */
    double b = mpt__cost_largest_buffer(&mc, 0, 7, 64, 1, 1.0, 0, &what);
    ck_assert_double_eq(b, MLP_PARAM_BYTES);
    ck_assert_ptr_nonnull(strstr(what, "parameters"));
    /* Four micro-batches of 64 in flight: the activations, input 784 and
     * the outputs of linear/relu 256, 256, 128, 128, 100, 100, 10 floats
     * per sample (the loss layer has no region). */
    b = mpt__cost_largest_buffer(&mc, 0, 7, 64, 4, 1.0, 0, &what);
    ck_assert_double_eq(b, 4.0 * 64 * 4 * (784 + 256 + 256 + 128 + 128 + 100 + 100 + 10));
    ck_assert_str_eq(what, "activations");
    /* Recomputing keeps the four inputs and one set of outputs. */
    b = mpt__cost_largest_buffer(&mc, 0, 7, 64, 4, 1.0, MPT__MEM_RECOMPUTE, &what);
    ck_assert_double_eq(b, 4.0 * 64 * (4 * 784 + 256 + 256 + 128 + 128 + 100 + 100 + 10));
    /* Layers 2-7 at one sample: linear 128x256 + 128, 100x128 + 100, 10x100 + 10. */
    b = mpt__cost_largest_buffer(&mc, 2, 7, 1, 1, 1.0, 0, &what);
    ck_assert_double_eq(b, 4.0 * (128 * 256 + 128 + 100 * 128 + 100 + 10 * 100 + 10));
    /* Half of each layer's parameters for a tensor-parallel member. */
    b = mpt__cost_largest_buffer(&mc, 0, 7, 1, 1, 0.5, 0, &what);
    ck_assert_double_eq(b, MLP_PARAM_BYTES / 2);
    mpt__model_cost_free(&mc);
    mpt_model_free(m);
}
END_TEST

START_TEST(automatic_plan_avoids_the_overflow)
{
    mpt_model_t *m = mlp();
    mpt_cluster_t *c = small_alloc();
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL;
    mpt__model_cost_t mc;
    request(&req);
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    ck_assert_msg(p->pp * p->tp == 2, "dp=%zu pp=%zu tp=%zu: a whole model on a device",
                  p->dp, p->pp, p->tp);
    const mpt__plan_replica_t *rep = &p->replicas[0];
    double samples = ceil((double)p->batch * rep->batch_share / (double)p->microbatches);
    for (size_t s = 0; s < rep->nstages; s++)
        for (size_t g = 0; g < rep->stages[s].ndevices; g++) {
            const mpt__plan_stage_t *st = &rep->stages[s];
            const char *what;
            size_t later = rep->nstages - s; /* 1F1B keeps at most these in flight */
            size_t in_flight = p->schedule == MPT__PIPE_1F1B && later < p->microbatches
                                   ? later
                                   : p->microbatches;
            double b = mpt__cost_largest_buffer(&mc, st->first, st->last, samples, in_flight,
                                                st->devices[g].fraction,
                                                st->recompute ? MPT__MEM_RECOMPUTE : 0, &what);
            printf("stage %zu (layers %zu-%zu) member %zu: largest buffer %.0f bytes (%s)\n", s,
                   st->first, st->last, g, b, what);
            ck_assert_msg(b <= MAX_ALLOC, "stage %zu member %zu: %s of %.0f bytes", s, g, what,
                          b);
        }
    mpt__model_cost_free(&mc);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

START_TEST(data_parallel_pin_is_refused)
{
    mpt_model_t *m = mlp();
    mpt_cluster_t *c = small_alloc();
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL;
    request(&req);
    req.dp = 2;
    ck_assert_mpt_fails(mpt_plan_create(m, c, &req, &p), MPT_ERR_DEVICE_MEMORY);
    ck_assert_ptr_null(p);
    expect_named(mpt_last_error(), "parameters", "991064");
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

START_TEST(plan_file_over_the_largest_allocation_is_refused)
{
    mpt_model_t *m = mlp();
    mpt_cluster_t *c = small_alloc();
    const char *text =
        "{\"mpt_plan\": 1, \"dp\": 1, \"pp\": 1, \"tp\": 1, \"microbatches\": 1, \"batch\": 64, "
        "\"schedule\": \"gpipe\", \"optimizer_slots\": 1, \"predicted_step_s\": 0.001, "
        "\"breakdown\": {\"compute_s\": 0, \"bubble_s\": 0, \"p2p_s\": 0, \"allreduce_s\": 0}, "
        "\"replicas\": [{\"batch_share\": 1, \"stages\": [{\"layers\": [0, 7], \"fwd_s\": 0, "
        "\"bwd_s\": 0, \"devices\": [{\"device\": 1, \"fraction\": 1.0, \"memory_bytes\": 0}]}]}], "
        "\"alternatives\": []}";
    mpt_plan_t *p = NULL;
    ck_assert_mpt_fails(mpt_plan_from_json(text, m, c, &p), MPT_ERR_DEVICE_MEMORY);
    ck_assert_ptr_null(p);
    expect_named(mpt_last_error(), "parameters", "991064");
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "device 1 (gpu1)"));
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan_alloc");
    TCase *tc = tcase_create("max_alloc_bytes");
    tcase_add_test(tc, buffers_counted_as_the_executor_lays_them_out);
    tcase_add_test(tc, automatic_plan_avoids_the_overflow);
    tcase_add_test(tc, data_parallel_pin_is_refused);
    tcase_add_test(tc, plan_file_over_the_largest_allocation_is_refused);
    suite_add_tcase(s, tc);
    return test_run(s, 1);
}
