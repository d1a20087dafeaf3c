/*
 * tests/check_nonfinite.c: a step whose gradients are not finite, under
 * on_nonfinite = MPT_NONFINITE_SKIP, applies no update on any device, and
 * the run then equals one that never saw that batch (issue 21).
 *
 * The bad step: MPT_FAIL_NONFINITE=3 makes every gradient of step 3 NaN
 * on every device before the guard (engine/schedule.c), as a diverging
 * step's would be.  The reference: a trainer of the same configuration fed
 * the batches of steps 1, 2, 4..10 and never step 3's (the MLP has no
 * dropout and the rate is constant, so the step count changes nothing
 * else).  Compared after the last step: the parameters, and the losses of
 * the steps after the skip.
 *
 * Tolerances.  One device: the same kernels on the same data in the same
 * order, so the parameters agree to 1e-6 (in practice bitwise).  Under a
 * plan (PP=2 x DP=2, ZeRO-1 DP=2) against that one-device reference: the
 * replicas sum their gradients in another order, a few fp32 ulps per
 * element; losses within MLP_LOSS_TOL (mlp_runs.h) and parameters within
 * 1e-5.  What the tolerances catch: a NaN update applied makes every
 * parameter NaN; an AdamW update count that counted the skipped step
 * changes the bias correction of every later update by ~5%, moving each
 * parameter by ~5e-5 (lr 1e-3) per step; SGD's momentum started at the
 * skipped step moves them by more.
 *
 * Also: skipped steps in a row past max_skips fail the step with
 * MPT_ERR_DIVERGED naming it, with the parameters still the last finite
 * ones; MPT_NONFINITE_STOP (the default) leaves the step to the caller
 * (the NaN update is applied, the next loss is NaN: mpt_trainer_fit
 * stops there, tests/reliability.sh); a checkpoint records the skipped
 * count, so a resumed AdamW run equals the uninterrupted one; the
 * progress line shows the count.
 *
 * Runs without fork (OpenCL) on four one-core PoCL devices.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/trainer.h"
#include "mlp_runs.h"
#include "testutil.h"

enum { BAD_STEP = 3 }; /* 1-based, as MPT_FAIL_NONFINITE counts */

static mpt_trainer_t *trainer(const mpt_plan_t *plan, mpt_optimizer_t opt,
                              mpt_nonfinite_t policy, uint64_t max_skips)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    mlp_config(&c, opt);
    c.on_nonfinite = policy;
    c.max_skips = max_skips;
    if (plan)
        ck_assert_mpt_ok(mpt_trainer_create_planned(mlp_model, mlp_devs, plan, &c, NULL, NULL, &t));
    else
        ck_assert_mpt_ok(mpt_trainer_create(mlp_model, mpt_devices_get(mlp_devs, 0), &c, &t));
    return t;
}

static float *params(mpt_trainer_t *t)
{
    float *p = malloc(mlp_model->param_floats * sizeof *p);
    ck_assert_ptr_nonnull(p);
    ck_assert_mpt_ok(mpt__trainer_read_params(t, p));
    return p;
}

/* The reference: steps 1..10's batches but step BAD_STEP's; losses[s] is
 * the loss on batch s (NaN for the batch never seen). */
static float *reference(mpt_optimizer_t opt, double *losses)
{
    mpt_trainer_t *t = trainer(NULL, opt, MPT_NONFINITE_STOP, 10);
    mlp_train(t, 0, BAD_STEP - 1, losses);
    losses[BAD_STEP - 1] = NAN;
    mlp_train(t, BAD_STEP, MLP_STEPS, losses);
    ck_assert_uint_eq(mpt_trainer_steps(t), MLP_STEPS - 1);
    float *p = params(t);
    mpt_trainer_free(t);
    return p;
}

/* Steps [from, to) with step BAD_STEP's gradients made NaN; asserts that
 * exactly that step was skipped. */
static void train_with_bad_step(mpt_trainer_t *t, size_t from, size_t to, double *losses)
{
    ck_assert_int_eq(setenv("MPT_FAIL_NONFINITE", "3", 1), 0);
    for (size_t s = from; s < to; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mlp_step(t, s, &st));
        ck_assert_uint_eq(st.step, s + 1);
        ck_assert_int_eq(st.skipped, st.step == BAD_STEP);
        int norm_ok = isfinite(st.grad_norm) && st.grad_norm > 0;
        ck_assert_msg(st.skipped ? !isfinite(st.grad_norm) : norm_ok,
                      "step %llu: gradient norm %g", (unsigned long long)st.step, st.grad_norm);
        losses[s] = st.loss;
    }
    unsetenv("MPT_FAIL_NONFINITE");
}

static void expect_params(const char *name, const float *ref, const float *got, double tol)
{
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < mlp_model->param_floats; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= worst)) /* NaN counts as the worst */
            worst = d, at = i;
    }
    ck_assert_msg(worst <= tol, "%s: parameter %zu is %.9g, the reference's %.9g (tolerance %.1e)",
                  name, at, (double)got[at], (double)ref[at], tol);
    printf("%s: parameters within %.2e of the reference\n", name, worst);
}

/* The skipping run under plan (NULL: one device) against the one-device
 * reference that never saw the bad step's batch. */
static void expect_skip_equals_reference(const char *name, const mpt_plan_t *plan,
                                         mpt_optimizer_t opt, double loss_tol, double param_tol)
{
    double ref[MLP_STEPS], got[MLP_STEPS];
    mlp_open();
    float *want = reference(opt, ref);
    mpt_trainer_t *t = trainer(plan, opt, MPT_NONFINITE_SKIP, 10);
    train_with_bad_step(t, 0, MLP_STEPS, got);
    float *have = params(t);
    mpt_step_report_t r;
    ck_assert_mpt_ok(mpt_trainer_report(t, &r));
    ck_assert_uint_eq(r.skipped_steps, 1);
    mpt_trainer_free(t);
    for (size_t s = 0; s < MLP_STEPS; s++)
        if (s != BAD_STEP - 1)
            ck_assert_msg(fabs(got[s] - ref[s]) <= loss_tol * fmax(1.0, fabs(ref[s])),
                          "%s, step %zu: loss %.9g, reference %.9g", name, s + 1, got[s], ref[s]);
    expect_params(name, want, have, param_tol);
    free(want);
    free(have);
}

START_TEST(skip_equals_never_seeing_the_batch_adamw)
{
    expect_skip_equals_reference("one device, AdamW", NULL, MPT_OPTIM_ADAMW, 1e-7, 1e-6);
}
END_TEST

START_TEST(skip_equals_never_seeing_the_batch_sgd)
{
    expect_skip_equals_reference("one device, SGD + momentum", NULL, MPT_OPTIM_SGD, 1e-7, 1e-6);
}
END_TEST

START_TEST(skip_on_every_replica_and_stage)
{
    const double shares[] = {0.5, 0.5};
    mlp_open();
    mpt_plan_t *plan = mlp_plan(2, 2, shares, 0);
    expect_skip_equals_reference("PP=2 x DP=2, SGD + momentum", plan, MPT_OPTIM_SGD,
                                 MLP_LOSS_TOL, 1e-5);
    mpt_plan_free(plan);
}
END_TEST

START_TEST(skip_under_zero1)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    mlp_open();
    mpt_plan_t *plan = mlp_plan(2, 1, shares, 1);
    expect_skip_equals_reference("ZeRO-1 DP=2, AdamW", plan, MPT_OPTIM_ADAMW, MLP_LOSS_TOL, 1e-5);
    mpt_plan_free(plan);
}
END_TEST

/* ZeRO-2 with two micro-batches: the shards are summed per micro-batch
 * while the backward runs, and the skip is still decided before any
 * replica updates its shard. */
START_TEST(skip_under_zero2)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    mlp_open();
    mpt_plan_t *plan = mlp_plan_for(mlp_model, MLP_BATCH, 2, 1, 1, shares, 2, 2);
    expect_skip_equals_reference("ZeRO-2 DP=2 m=2, AdamW", plan, MPT_OPTIM_ADAMW, MLP_LOSS_TOL,
                                 1e-5);
    mpt_plan_free(plan);
}
END_TEST

/* max_skips 2: steps 2 and 3 are skipped, step 4 is the third in a row and
 * fails naming itself; the parameters are still those after step 1. */
START_TEST(too_many_skips_in_a_row_stop)
{
    double losses[MLP_STEPS];
    mpt_step_stats_t st;
    mlp_open();
    mpt_trainer_t *t = trainer(NULL, MPT_OPTIM_SGD, MPT_NONFINITE_SKIP, 2);
    mlp_train(t, 0, 1, losses);
    float *after1 = params(t);
    ck_assert_int_eq(setenv("MPT_FAIL_NONFINITE", "2,3,4", 1), 0);
    ck_assert_mpt_ok(mlp_step(t, 1, &st));
    ck_assert_mpt_ok(mlp_step(t, 2, &st));
    ck_assert(st.skipped);
    ck_assert_mpt_fails(mlp_step(t, 3, &st), MPT_ERR_DIVERGED);
    unsetenv("MPT_FAIL_NONFINITE");
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "step 4:"));
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "3 steps in a row"));
    float *now = params(t);
    expect_params("after 3 skipped steps", after1, now, 0);
    free(after1);
    free(now);
    mpt_trainer_free(t);
}
END_TEST

/* The default applies the step's update, NaN and all: the caller
 * (mpt_trainer_fit) stops at the loss it sees. */
START_TEST(stop_policy_leaves_the_step_to_the_caller)
{
    double losses[MLP_STEPS];
    mpt_step_stats_t st;
    mlp_open();
    mpt_trainer_t *t = trainer(NULL, MPT_OPTIM_SGD, MPT_NONFINITE_STOP, 10);
    ck_assert_int_eq(setenv("MPT_FAIL_NONFINITE", "1", 1), 0);
    ck_assert_mpt_ok(mlp_step(t, 0, &st));
    unsetenv("MPT_FAIL_NONFINITE");
    ck_assert(!st.skipped);
    mlp_train(t, 1, 2, losses);
    ck_assert_msg(isnan(losses[1]), "step 2's loss %g after a NaN update", losses[1]);
    mpt_trainer_free(t);
}
END_TEST

/* 5 steps (the third skipped), a checkpoint, 5 more on a new trainer:
 * AdamW's update count comes back with it (4, not 5). */
START_TEST(checkpoint_keeps_the_skipped_count)
{
    double whole[MLP_STEPS], parts[MLP_STEPS];
    char path[] = "/tmp/check_nonfinite_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    mlp_open();
    mpt_trainer_t *t = trainer(NULL, MPT_OPTIM_ADAMW, MPT_NONFINITE_SKIP, 10);
    train_with_bad_step(t, 0, MLP_STEPS, whole);
    float *want = params(t);
    mpt_trainer_free(t);
    t = trainer(NULL, MPT_OPTIM_ADAMW, MPT_NONFINITE_SKIP, 10);
    train_with_bad_step(t, 0, MLP_STEPS / 2, parts);
    ck_assert_mpt_ok(mpt_trainer_save(t, path, NULL));
    mpt_trainer_free(t);
    t = trainer(NULL, MPT_OPTIM_ADAMW, MPT_NONFINITE_SKIP, 10);
    ck_assert_mpt_ok(mpt_trainer_load(t, path, NULL));
    train_with_bad_step(t, MLP_STEPS / 2, MLP_STEPS, parts);
    float *have = params(t);
    mpt_step_report_t r;
    ck_assert_mpt_ok(mpt_trainer_report(t, &r));
    ck_assert_uint_eq(r.skipped_steps, 1);
    mpt_trainer_free(t);
    unlink(path);
    expect_params("resumed after a skipped step, AdamW", want, have, 1e-6);
    free(want);
    free(have);
}
END_TEST

/* The progress line counts the run's skipped steps once there are any. */
START_TEST(progress_line_counts_skips)
{
    mpt_step_report_t r = {.step = 7, .total_steps = 10, .loss = 2.5, .samples_per_s = 100,
                           .eta_s = NAN, .skipped_steps = 0};
    char line[256];
    mpt_progress_line(&r, 1, NULL, 0, line, sizeof line);
    ck_assert_msg(!strstr(line, "skipped"), "%s", line);
    r.skipped_steps = 3;
    mpt_progress_line(&r, 1, NULL, 0, line, sizeof line);
    ck_assert_msg(strstr(line, "  skipped 3  "), "%s", line);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nonfinite");
    TCase *tc = tcase_create("skip");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, skip_equals_never_seeing_the_batch_adamw);
    tcase_add_test(tc, skip_equals_never_seeing_the_batch_sgd);
    tcase_add_test(tc, skip_on_every_replica_and_stage);
    tcase_add_test(tc, skip_under_zero1);
    tcase_add_test(tc, skip_under_zero2);
    tcase_add_test(tc, too_many_skips_in_a_row_stop);
    tcase_add_test(tc, stop_policy_leaves_the_step_to_the_caller);
    tcase_add_test(tc, checkpoint_keeps_the_skipped_count);
    tcase_add_test(tc, progress_line_counts_skips);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return mlp_main(suite());
}
