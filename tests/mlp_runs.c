/*
 * tests/mlp_runs.c: the shared MLP runs of mlp_runs.h.
 */
#define _POSIX_C_SOURCE 200809L /* testutil.h's setenv */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "mlp_runs.h"
#include "plan_text.h"
#include "testutil.h"

mpt_devices_t *mlp_devs;
mpt_model_t *mlp_model;
static float *X;
static int32_t *Y;
static size_t in;

void mlp_open(void)
{
    if (mlp_devs)
        return;
    ck_assert_mpt_ok(mpt_devices_open(NULL, &mlp_devs));
    ck_assert_uint_ge(mpt_devices_count(mlp_devs), 4);
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/mlp-fashion.json"), &mlp_model));
    in = mpt_model_input_floats(mlp_model);
    size_t n = (size_t)MLP_STEPS * MLP_BATCH;
    X = malloc(n * in * sizeof *X);
    Y = malloc(n * sizeof *Y);
    ck_assert_ptr_nonnull(X);
    ck_assert_ptr_nonnull(Y);
    for (size_t i = 0; i < n * in; i++)
        X[i] = (float)mpt__u01(mpt__rng_u32(7, 1, i));
    for (size_t i = 0; i < n; i++)
        Y[i] = (int32_t)(mpt__rng_u32(7, 2, i) % MLP_CLASSES);
}

void mlp_close(void)
{
    mpt_devices_free(mlp_devs);
    mpt_model_free(mlp_model);
    free(X);
    free(Y);
    mlp_devs = NULL, mlp_model = NULL, X = NULL, Y = NULL;
}

int mlp_main(Suite *s)
{
    setenv("POCL_DEVICES", "pthread pthread pthread pthread", 1);
    setenv("POCL_MAX_PTHREAD_COUNT", "1", 1);
    int failed = test_run(s, 0);
    mlp_close();
    return failed;
}

void mlp_config(mpt_train_config_t *c, mpt_optimizer_t opt)
{
    mpt_train_config_default(c);
    mpt_train_config_use_optimizer(c, opt);
    c->batch = MLP_BATCH;
    c->seed = 5;
}

mpt_trainer_t *mlp_trainer(const mpt_plan_t *plan, mpt_optimizer_t opt)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    mlp_config(&c, opt);
    if (plan)
        ck_assert_mpt_ok(mpt_trainer_create_planned(mlp_model, mlp_devs, plan, &c, NULL, NULL, &t));
    else
        ck_assert_mpt_ok(mpt_trainer_create(mlp_model, mpt_devices_get(mlp_devs, 0), &c, &t));
    return t;
}

/* dp replicas of pp stages (cut at layer 4 when pp = 2) of tp devices
 * each (equal fractions), replica r stage s member g on device
 * (r * pp + s) * tp + g, shares[r] of the batch, mb micro-batches (GPipe),
 * ZeRO stage `zero`. */
mpt_plan_t *mlp_plan_for(const mpt_model_t *m, size_t batch, size_t dp, size_t pp, size_t tp,
                         const double *shares, size_t mb, int zero)
{
    size_t cuts[3] = {0, pp == 2 ? 4 : m->nlayers, m->nlayers};
    test_plan_spec_t spec = {.dp = dp, .pp = pp, .tp = tp, .microbatches = mb, .batch = batch,
                             .shares = shares, .cuts = cuts, .optimizer_slots = 1, .zero = zero};
    mpt_plan_t *p = test_plan(&spec, m, mpt_devices_count(mlp_devs));
    ck_assert_int_eq(p->zero, zero);
    return p;
}

mpt_plan_t *mlp_plan(size_t dp, size_t pp, const double *shares, int zero)
{
    return mlp_plan_for(mlp_model, MLP_BATCH, dp, pp, 1, shares, 1, zero);
}

int mlp_step(mpt_trainer_t *t, size_t s, mpt_step_stats_t *st)
{
    return mpt_trainer_step(t, X + s * MLP_BATCH * in, Y + s * MLP_BATCH, st);
}

void mlp_train(mpt_trainer_t *t, size_t from, size_t to, double *losses)
{
    for (size_t s = from; s < to; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mlp_step(t, s, &st));
        losses[s] = st.loss;
    }
}

void mlp_reference(mpt_optimizer_t opt, double *losses)
{
    mpt_trainer_t *t = mlp_trainer(NULL, opt);
    mlp_train(t, 0, MLP_STEPS, losses);
    mpt_trainer_free(t);
}

void mlp_expect_same(const char *name, const double *ref, const double *got)
{
    for (size_t s = 0; s < MLP_STEPS; s++) {
        double tol = MLP_LOSS_TOL * fmax(1.0, fabs(ref[s]));
        if (fabs(got[s] - ref[s]) > tol)
            ck_abort_msg("%s, step %zu: loss %.9g, one device %.9g (tolerance %.1e)", name, s,
                         got[s], ref[s], tol);
    }
    printf("%s: %d steps equal one device, last loss %.7f vs %.7f\n", name, MLP_STEPS,
           got[MLP_STEPS - 1], ref[MLP_STEPS - 1]);
}
