/*
 * tests/check_zero.c: ZeRO-1 (optimizer state sharded across
 * data-parallel replicas; issue 24, part 2) trains the same model as one
 * device, checkpoints across ZeRO and non-ZeRO plans, and holds only the
 * shard's optimizer state.
 *
 * Plan invariance: 10 steps of the Fashion-MNIST MLP at batch 60 on
 * random images (counter-based, seed 7) under ZeRO-1 with DP=2 (shares
 * 2/3, 1/3), DP=3 (1/2, 1/3, 1/6), both with SGD + momentum and DP=2 with
 * AdamW, and PP=2 x DP=2 on four devices; each step's loss against one
 * device's.  Tolerance: |loss - loss_1device| <= 1e-5 * max(1, loss), as
 * tests/check_engine.c argues: the replicas' gradients are summed in
 * another order (a ring reduce-scatter instead of one GEMM over the whole
 * batch), a few fp32 ulps per element, which 10 steps do not amplify past
 * ~1e-7; a wrong shard, a lost update or a stale all-gather moves the loss
 * by 1e-3 or more.
 *
 * Checkpoints: 5 steps under ZeRO DP=2, saved, resumed on one device for 5
 * more; and 5 steps on one device, saved, resumed under ZeRO DP=3 for 5
 * more: both equal the one-device run of 10 steps (same tolerance).
 *
 * Memory: with SGD (one slot), a replica under ZeRO-1 holds exactly
 * (params - its shard) * 4 bytes less than without, measured by the
 * allocator's peak.
 *
 * Runs without fork (OpenCL) on four one-core PoCL devices.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "train/trainer.h"
#include "mlp_runs.h"
#include "testutil.h"

static void expect_invariant(const char *name, size_t dp, size_t pp, const double *shares,
                             mpt_optimizer_t opt)
{
    double ref[MLP_STEPS], got[MLP_STEPS];
    mlp_open();
    mlp_reference(opt, ref);
    mpt_plan_t *plan = mlp_plan(dp, pp, shares, 1);
    mpt_trainer_t *t = mlp_trainer(plan, opt);
    mlp_train(t, 0, MLP_STEPS, got);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    mlp_expect_same(name, ref, got);
}

START_TEST(zero1_dp2_uneven_sgd)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    expect_invariant("ZeRO-1 DP=2 (2:1) SGD", 2, 1, shares, MPT_OPTIM_SGD);
}
END_TEST

START_TEST(zero1_dp3_uneven_sgd)
{
    const double shares[] = {0.5, 1.0 / 3, 1.0 / 6};
    expect_invariant("ZeRO-1 DP=3 (3:2:1) SGD", 3, 1, shares, MPT_OPTIM_SGD);
}
END_TEST

START_TEST(zero1_dp2_uneven_adamw)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    expect_invariant("ZeRO-1 DP=2 (2:1) AdamW", 2, 1, shares, MPT_OPTIM_ADAMW);
}
END_TEST

START_TEST(zero1_pp2_dp2)
{
    const double shares[] = {0.5, 0.5};
    expect_invariant("ZeRO-1 PP=2 x DP=2", 2, 2, shares, MPT_OPTIM_SGD);
}
END_TEST

/* 5 steps under `first`, a checkpoint, 5 steps under `second` (NULL: one
 * device): the one-device losses of 10 steps. */
static void expect_resume(const char *name, const mpt_plan_t *first, const mpt_plan_t *second)
{
    double ref[MLP_STEPS], got[MLP_STEPS];
    char path[] = "/tmp/check_zero_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    mlp_reference(MPT_OPTIM_SGD, ref);
    mpt_trainer_t *t = mlp_trainer(first, MPT_OPTIM_SGD);
    mlp_train(t, 0, MLP_STEPS / 2, got);
    ck_assert_mpt_ok(mpt_trainer_save(t, path, NULL));
    mpt_trainer_free(t);
    t = mlp_trainer(second, MPT_OPTIM_SGD);
    ck_assert_mpt_ok(mpt_trainer_load(t, path, NULL));
    mlp_train(t, MLP_STEPS / 2, MLP_STEPS, got);
    mpt_trainer_free(t);
    unlink(path);
    mlp_expect_same(name, ref, got);
}

START_TEST(checkpoint_zero_to_one_device)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    mlp_open();
    mpt_plan_t *plan = mlp_plan(2, 1, shares, 1);
    expect_resume("saved under ZeRO-1 DP=2, resumed on one device", plan, NULL);
    mpt_plan_free(plan);
}
END_TEST

START_TEST(checkpoint_one_device_to_zero)
{
    const double shares[] = {0.5, 1.0 / 3, 1.0 / 6};
    mlp_open();
    mpt_plan_t *plan = mlp_plan(3, 1, shares, 1);
    expect_resume("saved on one device, resumed under ZeRO-1 DP=3", NULL, plan);
    mpt_plan_free(plan);
}
END_TEST

/* The peak of each replica's device after one step under a plan. */
static void peaks(const mpt_plan_t *plan, size_t dp, uint64_t *peak)
{
    double loss[MLP_STEPS];
    mpt_trainer_t *t = mlp_trainer(plan, MPT_OPTIM_SGD);
    mlp_train(t, 0, 1, loss);
    for (size_t r = 0; r < dp; r++) {
        mpt_device_step_t d;
        ck_assert_mpt_ok(mpt_trainer_device_stats(t, r, &d));
        ck_assert_int_eq(d.replica, (int)r);
        peak[r] = d.peak_memory_bytes;
    }
    mpt_trainer_free(t);
}

START_TEST(zero1_holds_the_shard_of_the_state)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    uint64_t whole[2], sharded[2];
    mlp_open();
    mpt_plan_t *p0 = mlp_plan(2, 1, shares, 0), *p1 = mlp_plan(2, 1, shares, 1);
    peaks(p0, 2, whole);
    peaks(p1, 2, sharded);
    /* One segment (one stage), cut at params * 40 / 60 (data_parallel.c). */
    size_t n = mlp_model->param_floats, cut = n * 40 / 60;
    size_t shard[2] = {cut, n - cut};
    for (size_t r = 0; r < 2; r++) {
        printf("replica %zu: peak %llu bytes without ZeRO, %llu with ZeRO-1\n", r,
               (unsigned long long)whole[r], (unsigned long long)sharded[r]);
        ck_assert_uint_eq(whole[r] - sharded[r], (n - shard[r]) * sizeof(float));
    }
    mpt_plan_free(p0);
    mpt_plan_free(p1);
}
END_TEST

START_TEST(zero2_is_refused_in_plan_json)
{
    mlp_open();
    char text[] = "{\"mpt_plan\": 1, \"dp\": 1, \"pp\": 1, \"tp\": 1, \"microbatches\": 1, "
                  "\"batch\": 60, \"schedule\": \"gpipe\", \"optimizer_slots\": 1, \"zero\": 2, "
                  "\"predicted_step_s\": 0.001, \"breakdown\": {\"compute_s\": 0, "
                  "\"bubble_s\": 0, \"p2p_s\": 0, \"allreduce_s\": 0}, \"replicas\": "
                  "[{\"batch_share\": 1, \"stages\": [{\"layers\": [0, 7], \"fwd_s\": 0, "
                  "\"bwd_s\": 0, \"devices\": [{\"device\": 0, \"fraction\": 1.0, "
                  "\"memory_bytes\": 0}]}]}], \"alternatives\": []}";
    mpt_plan_t *p = NULL;
    ck_assert_mpt_fails(mpt__plan_from_json(text, "test plan", mlp_model->nlayers,
                                            mpt_devices_count(mlp_devs), &p),
                        MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "zero"));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("zero");
    TCase *tc = tcase_create("zero1");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, zero1_dp2_uneven_sgd);
    tcase_add_test(tc, zero1_dp3_uneven_sgd);
    tcase_add_test(tc, zero1_dp2_uneven_adamw);
    tcase_add_test(tc, zero1_pp2_dp2);
    tcase_add_test(tc, checkpoint_zero_to_one_device);
    tcase_add_test(tc, checkpoint_one_device_to_zero);
    tcase_add_test(tc, zero1_holds_the_shard_of_the_state);
    tcase_add_test(tc, zero2_is_refused_in_plan_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("POCL_DEVICES", "pthread pthread pthread pthread", 1);
    setenv("POCL_MAX_PTHREAD_COUNT", "1", 1);
    int failed = test_run(suite(), 0);
    mlp_close();
    return failed;
}
