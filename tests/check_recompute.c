/*
 * tests/check_recompute.c: activation recomputation (issue 24, part 3):
 * a stage that keeps only its input per micro-batch and runs its forward
 * again before each backward trains the same model as one device, and
 * holds less.
 *
 * Plan invariance: 10 steps of the Fashion-MNIST MLP at batch 60 on
 * random images (seed 7) under PP=2 with 4 micro-batches, GPipe and 1F1B,
 * recomputing on both stages or on one, and DP=2 recomputing; each step's
 * loss against one device's within 1e-5 * max(1, loss), the tolerance of
 * tests/check_engine.c (the same sums in another order; recomputation
 * itself repeats the same kernels on the same inputs, bit for bit).
 *
 * Memory: PP=2 GPipe with 4 micro-batches, stage 0 (layers 0..3) holds
 * exactly (3 x (activations + saved state of one micro-batch past its
 * input)) bytes less with recomputation: four micro-batches' activations
 * become four inputs and one shared region (executor.c).
 *
 * Runs without fork (OpenCL) on four one-core PoCL devices.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "train/trainer.h"
#include "mlp_runs.h"
#include "testutil.h"

/* dp replicas of 2 stages cut at layer 4, m micro-batches, schedule,
 * stage s recomputing when recompute[s]; replica r stage s on device
 * r * 2 + s. */
static mpt_plan_t *make_plan(size_t dp, size_t m, const char *schedule, const int *recompute)
{
    char text[4096];
    size_t len = 0, cuts[3] = {0, 4, mlp_model->nlayers};
    len += (size_t)snprintf(text + len, sizeof text - len,
                            "{\"mpt_plan\": 1, \"dp\": %zu, \"pp\": 2, \"tp\": 1, "
                            "\"microbatches\": %zu, \"batch\": %d, \"schedule\": \"%s\", "
                            "\"optimizer_slots\": 1, \"predicted_step_s\": 0.001, "
                            "\"breakdown\": {\"compute_s\": 0, \"bubble_s\": 0, \"p2p_s\": 0, "
                            "\"allreduce_s\": 0}, \"replicas\": [",
                            dp, m, MLP_BATCH, schedule);
    for (size_t r = 0; r < dp; r++) {
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "%s{\"batch_share\": %.17g, \"stages\": [", r ? ", " : "",
                                1.0 / (double)dp);
        for (size_t s = 0; s < 2; s++)
            len += (size_t)snprintf(text + len, sizeof text - len,
                                    "%s{\"layers\": [%zu, %zu], \"fwd_s\": 0, \"bwd_s\": 0, "
                                    "\"recompute\": %s, \"devices\": [{\"device\": %zu, "
                                    "\"fraction\": 1.0, \"memory_bytes\": 0}]}",
                                    s ? ", " : "", cuts[s], cuts[s + 1] - 1,
                                    recompute[s] ? "true" : "false", r * 2 + s);
        len += (size_t)snprintf(text + len, sizeof text - len, "]}");
    }
    snprintf(text + len, sizeof text - len, "], \"alternatives\": []}");
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt__plan_from_json(text, "test plan", mlp_model->nlayers,
                                         mpt_devices_count(mlp_devs), &p));
    ck_assert_mpt_ok(mpt__plan_roles(p, mlp_model));
    for (size_t s = 0; s < 2; s++)
        ck_assert_int_eq(p->replicas[0].stages[s].recompute, recompute[s]);
    return p;
}

static void expect_invariant(const char *name, size_t dp, size_t m, const char *schedule,
                             const int *recompute)
{
    double ref[MLP_STEPS], got[MLP_STEPS];
    mlp_open();
    mlp_reference(MPT_OPTIM_SGD, ref);
    mpt_plan_t *plan = make_plan(dp, m, schedule, recompute);
    mpt_trainer_t *t = mlp_trainer(plan, MPT_OPTIM_SGD);
    mlp_train(t, 0, MLP_STEPS, got);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    mlp_expect_same(name, ref, got);
}

START_TEST(recompute_pp2_gpipe)
{
    const int both[2] = {1, 1};
    expect_invariant("PP=2 GPipe m=4, both stages recompute", 1, 4, "gpipe", both);
}
END_TEST

START_TEST(recompute_pp2_1f1b_first_stage)
{
    const int first[2] = {1, 0};
    expect_invariant("PP=2 1F1B m=4, stage 0 recomputes", 1, 4, "1f1b", first);
}
END_TEST

START_TEST(recompute_pp2_dp2)
{
    const int both[2] = {1, 1};
    expect_invariant("PP=2 x DP=2 GPipe m=2, recomputing", 2, 2, "gpipe", both);
}
END_TEST

/* The peak of stage 0 (device 0) after one step. */
static uint64_t stage0_peak(const int *recompute)
{
    double loss[MLP_STEPS];
    mpt_plan_t *plan = make_plan(1, 4, "gpipe", recompute);
    mpt_trainer_t *t = mlp_trainer(plan, MPT_OPTIM_SGD);
    mlp_train(t, 0, 1, loss);
    mpt_device_step_t d;
    ck_assert_mpt_ok(mpt_trainer_device_stats(t, 0, &d));
    ck_assert_int_eq(d.stage, 0);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    return d.peak_memory_bytes;
}

START_TEST(recompute_holds_less)
{
    const int none[2] = {0, 0}, first[2] = {1, 0};
    mlp_open();
    uint64_t whole = stage0_peak(none), less = stage0_peak(first);
    /* Layers 0..3: linear 784->256, relu, linear 256->128, relu; a
     * micro-batch of 15: past its input it keeps the outputs 256, 256,
     * 128, 128 floats per sample (no saved state). */
    uint64_t per_mb = 15 * (256 + 256 + 128 + 128) * sizeof(float);
    printf("stage 0 peak: %llu bytes keeping every activation, %llu recomputing\n",
           (unsigned long long)whole, (unsigned long long)less);
    ck_assert_uint_eq(whole - less, 3 * per_mb);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("recompute");
    TCase *tc = tcase_create("recompute");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, recompute_pp2_gpipe);
    tcase_add_test(tc, recompute_pp2_1f1b_first_stage);
    tcase_add_test(tc, recompute_pp2_dp2);
    tcase_add_test(tc, recompute_holds_less);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return mlp_main(suite());
}
