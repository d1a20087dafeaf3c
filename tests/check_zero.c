/*
 * tests/check_zero.c: ZeRO-1 (optimizer state sharded across
 * data-parallel replicas) and ZeRO-2 (the gradients too; issue 24, part 2)
 * train the same model as one device, checkpoints move across ZeRO and
 * non-ZeRO plans, and a replica holds only its shards.
 *
 * Plan invariance: 10 steps of the Fashion-MNIST MLP at batch 60 on
 * random images (tests/mlp_runs.c) under ZeRO-1 with DP=2 (shares 2/3,
 * 1/3), DP=3 (1/2, 1/3, 1/6), both with SGD + momentum and DP=2 with
 * AdamW, and PP=2 x DP=2 on four devices; under ZeRO-2 the same with 1 to
 * 3 micro-batches (each reduce-scattered, summed on the host); gpt-micro
 * (tied embedding: the window's pinned start) under ZeRO-2 DP=2, and under
 * ZeRO-1 and 2 with TP=2 x DP=2, clipped, its gradient norms compared too.
 * Tolerance: |loss - loss_1device| <= 1e-5 * max(1, loss)
 * (MLP_LOSS_TOL, tests/mlp_runs.h): the replicas' gradients are summed in
 * another order, a few fp32 ulps per element, which 10 steps do not
 * amplify past ~1e-7; a wrong shard, a lost update or a stale all-gather
 * moves the loss by 1e-3 or more.
 *
 * Checkpoints: 5 steps under one plan, saved, 5 more under another (ZeRO-1
 * or 2, DP=2 or 3, TP=2 x DP=2, one device): the one-device run of 10
 * steps (same tolerance).
 *
 * Memory (the allocator's peak): with SGD a replica under ZeRO-1 holds
 * exactly (params - its shard) * 4 bytes less than without; under ZeRO-2
 * exactly (m * params - max(shard, window)) * 4 bytes less than under
 * ZeRO-1 (m micro-batches: the accumulation copy goes too); gpt-micro's
 * peaks within 10% of mpt__cost_memory_zero.
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

static mpt_plan_t *make_plan_mb(size_t dp, size_t pp, const double *shares, size_t mb, int zero)
{
    return mlp_plan_for(mlp_model, MLP_BATCH, dp, pp, 1, shares, mb, zero);
}

static void expect_invariant_of(const char *name, size_t dp, size_t pp, const double *shares,
                                size_t mb, int zero, mpt_optimizer_t opt)
{
    double ref[MLP_STEPS], got[MLP_STEPS];
    mlp_open();
    mlp_reference(opt, ref);
    mpt_plan_t *plan = make_plan_mb(dp, pp, shares, mb, zero);
    mpt_trainer_t *t = mlp_trainer(plan, opt);
    mlp_train(t, 0, MLP_STEPS, got);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    mlp_expect_same(name, ref, got);
}

static void expect_invariant(const char *name, size_t dp, size_t pp, const double *shares,
                             mpt_optimizer_t opt)
{
    expect_invariant_of(name, dp, pp, shares, 1, 1, opt);
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

/* ZeRO-2: one micro-batch, and three (each reduce-scattered, the shards
 * summed on the host in micro-batch order instead of on the device). */
START_TEST(zero2_dp2_uneven_sgd)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    expect_invariant_of("ZeRO-2 DP=2 (2:1) SGD", 2, 1, shares, 1, 2, MPT_OPTIM_SGD);
    expect_invariant_of("ZeRO-2 DP=2 (2:1) SGD, 3 micro-batches", 2, 1, shares, 3, 2,
                        MPT_OPTIM_SGD);
}
END_TEST

START_TEST(zero2_dp3_uneven_sgd)
{
    const double shares[] = {0.5, 1.0 / 3, 1.0 / 6};
    expect_invariant_of("ZeRO-2 DP=3 (3:2:1) SGD", 3, 1, shares, 1, 2, MPT_OPTIM_SGD);
    expect_invariant_of("ZeRO-2 DP=3 (3:2:1) SGD, 2 micro-batches", 3, 1, shares, 2, 2,
                        MPT_OPTIM_SGD);
}
END_TEST

START_TEST(zero2_dp2_uneven_adamw)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    expect_invariant_of("ZeRO-2 DP=2 (2:1) AdamW, 2 micro-batches", 2, 1, shares, 2, 2,
                        MPT_OPTIM_ADAMW);
}
END_TEST

START_TEST(zero2_pp2_dp2)
{
    const double shares[] = {0.5, 0.5};
    expect_invariant_of("ZeRO-2 PP=2 x DP=2, 2 micro-batches", 2, 2, shares, 2, 2,
                        MPT_OPTIM_SGD);
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

START_TEST(checkpoint_zero2_to_one_device)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    mlp_open();
    mpt_plan_t *plan = make_plan_mb(2, 1, shares, 2, 2);
    expect_resume("saved under ZeRO-2 DP=2, resumed on one device", plan, NULL);
    mpt_plan_free(plan);
}
END_TEST

START_TEST(checkpoint_one_device_to_zero2)
{
    const double shares[] = {0.5, 1.0 / 3, 1.0 / 6};
    mlp_open();
    mpt_plan_t *plan = mlp_plan(3, 1, shares, 2);
    expect_resume("saved on one device, resumed under ZeRO-2 DP=3", NULL, plan);
    mpt_plan_free(plan);
}
END_TEST

START_TEST(checkpoint_zero2_tp_to_one_device)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    mlp_open();
    mpt_plan_t *plan = mlp_plan_for(mlp_model, MLP_BATCH, 2, 1, 2, shares, 1, 2);
    expect_resume("saved under ZeRO-2 TP=2 x DP=2, resumed on one device", plan, NULL);
    mpt_plan_free(plan);
}
END_TEST

START_TEST(checkpoint_zero1_to_zero2)
{
    const double three[] = {0.5, 1.0 / 3, 1.0 / 6}, two[] = {2.0 / 3, 1.0 / 3};
    mlp_open();
    mpt_plan_t *a = mlp_plan(3, 1, three, 1), *b = mlp_plan(2, 1, two, 2);
    expect_resume("saved under ZeRO-1 DP=3, resumed under ZeRO-2 DP=2", a, b);
    mpt_plan_free(a);
    mpt_plan_free(b);
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

/* gpt-micro runs: GPT_STEPS steps of GPT_BATCH random tokens (counter-
 * based, seed 9) under plan (NULL: device 0 alone) with optimizer opt and
 * clipping at clip (0: none); losses[], and when not NULL the gradient
 * norms[] and each replica's peak[]. */
enum { GPT_BATCH = 6, GPT_STEPS = 4 };

static void gpt_run(const mpt_model_t *gpt, const mpt_plan_t *plan, mpt_optimizer_t opt,
                    float clip, double *losses, double *norms, uint64_t *peak)
{
    size_t T = mpt_model_input_floats(gpt), n = GPT_STEPS * GPT_BATCH * T;
    float *x = malloc(n * sizeof *x);
    int32_t *y = malloc(n * sizeof *y);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(y);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(mpt__rng_u32(9, 1, i) % 256);
        y[i] = (int32_t)(mpt__rng_u32(9, 2, i) % 256);
    }
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    mlp_config(&c, opt);
    c.batch = GPT_BATCH, c.clip_norm = clip;
    if (plan)
        ck_assert_mpt_ok(mpt_trainer_create_planned(gpt, mlp_devs, plan, &c, NULL, NULL, &t));
    else
        ck_assert_mpt_ok(mpt_trainer_create(gpt, mpt_devices_get(mlp_devs, 0), &c, &t));
    for (size_t s = 0; s < GPT_STEPS; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, x + s * GPT_BATCH * T, y + s * GPT_BATCH * T, &st));
        losses[s] = st.loss;
        if (norms)
            norms[s] = st.grad_norm;
    }
    for (size_t r = 0; peak && r < plan->nreplicas; r++) {
        mpt_device_step_t d;
        ck_assert_mpt_ok(mpt_trainer_device_stats(t, r * (mpt_trainer_device_count(t) /
                                                          plan->nreplicas),
                                                  &d));
        peak[r] = d.peak_memory_bytes;
    }
    mpt_trainer_free(t);
    free(x);
    free(y);
}

static void gpt_expect_same(const char *name, const double *ref, const double *got)
{
    for (size_t s = 0; s < GPT_STEPS; s++)
        ck_assert_msg(fabs(got[s] - ref[s]) <= MLP_LOSS_TOL * fmax(1.0, fabs(ref[s])),
                      "%s, step %zu: loss %.9g, one device %.9g", name, s, got[s], ref[s]);
    printf("%s: %d steps equal one device, last loss %.7f vs %.7f\n", name, GPT_STEPS,
           got[GPT_STEPS - 1], ref[GPT_STEPS - 1]);
}

/* gpt-micro, whose head reads the embedding's weight: under ZeRO-2 the
 * embedding's gradients stay at the window's start from the head's
 * backward to its own.  DP=2 (2:1), 2 micro-batches, AdamW, against one
 * device (MLP_LOSS_TOL, same argument), and each replica's peak within 10%
 * (the bound) of mpt__cost_memory_zero. */
START_TEST(zero2_gpt_tied_embedding)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    double ref[GPT_STEPS], got[GPT_STEPS];
    uint64_t peak[2];
    mlp_open();
    mpt_model_t *gpt = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/gpt-micro.json"), &gpt));
    mpt_plan_t *plan = mlp_plan_for(gpt, GPT_BATCH, 2, 1, 1, shares, 2, 2);
    gpt_run(gpt, NULL, MPT_OPTIM_ADAMW, 0, ref, NULL, NULL);
    gpt_run(gpt, plan, MPT_OPTIM_ADAMW, 0, got, NULL, peak);
    gpt_expect_same("gpt-micro ZeRO-2 DP=2 (2:1), 2 micro-batches, AdamW", ref, got);
    mpt__model_cost_t mc;
    ck_assert_mpt_ok(mpt__model_cost(gpt, &mc));
    for (size_t r = 0; r < 2; r++) {
        double want = mpt__cost_memory_zero(&mc, 0, gpt->nlayers - 1, GPT_BATCH * shares[r] / 2,
                                            2, 1.0, 2, MPT__MEM_ACCUMULATES, 2, shares[r]);
        printf("gpt-micro ZeRO-2 DP=2, replica %zu: peak %llu bytes, predicted %.0f\n", r,
               (unsigned long long)peak[r], want);
        ck_assert_double_eq_tol(want, (double)peak[r], 0.10 * (double)peak[r]);
    }
    mpt__model_cost_free(&mc);
    mpt_plan_free(plan);
    mpt_model_free(gpt);
}
END_TEST

/* TP=2 x DP=2 on four devices: each member's compact buffer (its slice's
 * layout; the embedding, its tied head and the layer norms replicated in
 * both members) sharded across the replicas, clipped at every step: the
 * losses and the gradient norms equal one device's (MLP_LOSS_TOL relative;
 * the norm sums the same squares in another order, ~1e-7).  Counting the
 * replicated elements twice gives norms 28% larger. */
static void expect_tp(int zero, size_t mb)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    double ref[GPT_STEPS], got[GPT_STEPS], ref_norm[GPT_STEPS], norm[GPT_STEPS];
    char name[96];
    mlp_open();
    mpt_model_t *gpt = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/gpt-micro.json"), &gpt));
    mpt_plan_t *plan = mlp_plan_for(gpt, GPT_BATCH, 2, 1, 2, shares, mb, zero);
    gpt_run(gpt, NULL, MPT_OPTIM_SGD, 0.01f, ref, ref_norm, NULL);
    gpt_run(gpt, plan, MPT_OPTIM_SGD, 0.01f, got, norm, NULL);
    for (size_t s = 0; s < GPT_STEPS; s++)
        ck_assert_msg(fabs(norm[s] - ref_norm[s]) <= MLP_LOSS_TOL * ref_norm[s],
                      "ZeRO-%d TP=2 x DP=2, step %zu: gradient norm %.9g, one device %.9g", zero,
                      s, norm[s], ref_norm[s]);
    snprintf(name, sizeof name, "gpt-micro ZeRO-%d TP=2 x DP=2 (2:1), %zu micro-batch(es), "
             "clipped", zero, mb);
    gpt_expect_same(name, ref, got);
    mpt_plan_free(plan);
    mpt_model_free(gpt);
}

START_TEST(zero1_tp2_dp2)
{
    expect_tp(1, 1);
}
END_TEST

START_TEST(zero2_tp2_dp2)
{
    expect_tp(2, 2);
}
END_TEST

/* ZeRO-2 holds, instead of the whole gradients (and with micro-batches
 * their copy), one buffer of the larger of its shard and the window (the
 * largest layer: 784 x 256 + 256 floats); exactly that much less than
 * ZeRO-1, by the allocator's peak. */
START_TEST(zero2_holds_the_shard_of_the_gradients)
{
    const double shares[] = {2.0 / 3, 1.0 / 3};
    size_t window = 784 * 256 + 256;
    mlp_open();
    size_t n = mlp_model->param_floats, cut = n * 40 / 60, shard[2] = {cut, n - cut};
    for (size_t mb = 1; mb <= 2; mb++) {
        uint64_t one[2], two[2];
        mpt_plan_t *p1 = make_plan_mb(2, 1, shares, mb, 1), *p2 = make_plan_mb(2, 1, shares, mb, 2);
        peaks(p1, 2, one);
        peaks(p2, 2, two);
        for (size_t r = 0; r < 2; r++) {
            size_t held = shard[r] > window ? shard[r] : window;
            printf("%zu micro-batch(es), replica %zu: peak %llu bytes with ZeRO-1, %llu with "
                   "ZeRO-2\n", mb, r, (unsigned long long)one[r], (unsigned long long)two[r]);
            ck_assert_uint_eq(one[r] - two[r], (mb * n - held) * sizeof(float));
        }
        mpt_plan_free(p1);
        mpt_plan_free(p2);
    }
}
END_TEST

START_TEST(zero3_is_refused_in_plan_json)
{
    mlp_open();
    char text[] = "{\"mpt_plan\": 1, \"dp\": 1, \"pp\": 1, \"tp\": 1, \"microbatches\": 1, "
                  "\"batch\": 60, \"schedule\": \"gpipe\", \"optimizer_slots\": 1, \"zero\": 3, "
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
    tcase_add_test(tc, zero2_dp2_uneven_sgd);
    tcase_add_test(tc, zero2_dp3_uneven_sgd);
    tcase_add_test(tc, zero2_dp2_uneven_adamw);
    tcase_add_test(tc, zero2_pp2_dp2);
    tcase_add_test(tc, zero1_tp2_dp2);
    tcase_add_test(tc, zero2_tp2_dp2);
    tcase_add_test(tc, checkpoint_zero_to_one_device);
    tcase_add_test(tc, checkpoint_one_device_to_zero);
    tcase_add_test(tc, zero1_holds_the_shard_of_the_state);
    tcase_add_test(tc, checkpoint_zero2_to_one_device);
    tcase_add_test(tc, checkpoint_one_device_to_zero2);
    tcase_add_test(tc, checkpoint_zero1_to_zero2);
    tcase_add_test(tc, checkpoint_zero2_tp_to_one_device);
    tcase_add_test(tc, zero2_holds_the_shard_of_the_gradients);
    tcase_add_test(tc, zero2_gpt_tied_embedding);
    tcase_add_test(tc, zero3_is_refused_in_plan_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return mlp_main(suite());
}
