/*
 * tests/mlp_runs.h: the Fashion-MNIST MLP trained for MLP_STEPS steps of
 * MLP_BATCH random images (counter-based, seed 7) on one device or under a
 * plan, for the suites that compare a plan's losses with one device's
 * (check_zero, check_recompute, check_nonfinite).  Tolerance: |loss - loss_1device| <=
 * MLP_LOSS_TOL * max(1, loss), as tests/check_engine.c argues: a plan sums
 * the same gradients in another order, a few fp32 ulps per element that 10
 * steps do not amplify past ~1e-7, while a lost or wrong update moves the
 * loss by 1e-3 or more.
 */
#ifndef MPT_TESTS_MLP_RUNS_H
#define MPT_TESTS_MLP_RUNS_H

#include <check.h>

#include "train/trainer.h"

enum { MLP_STEPS = 10, MLP_BATCH = 60, MLP_CLASSES = 10 };
#define MLP_LOSS_TOL 1e-5

extern mpt_devices_t *mlp_devs; /* every device: at least four */
extern mpt_model_t *mlp_model;

/* Opens the devices, the model and the data once per process. */
void mlp_open(void);
/* Frees what mlp_open opened. */
void mlp_close(void);
/* The main of a suite of these runs: four one-core PoCL devices sharing
 * one thread (POCL_DEVICES, before OpenCL starts), the suite run without
 * fork (testutil.h), then mlp_close; the number of failures. */
int mlp_main(Suite *s);
/* The configuration every run shares: the optimizer's defaults, seed 5. */
void mlp_config(mpt_train_config_t *c, mpt_optimizer_t opt);
/* A trainer under plan, or on device 0 alone when plan is NULL. */
mpt_trainer_t *mlp_trainer(const mpt_plan_t *plan, mpt_optimizer_t opt);
/* dp replicas of pp stages of m (cut at layer 4 when pp = 2) of tp
 * devices each (equal fractions), replica r stage s member g on device
 * (r * pp + s) * tp + g, shares[r] of the batch, mb micro-batches (GPipe),
 * ZeRO stage `zero`. */
mpt_plan_t *mlp_plan_for(const mpt_model_t *m, size_t batch, size_t dp, size_t pp, size_t tp,
                         const double *shares, size_t mb, int zero);
/* mlp_plan_for the MLP at MLP_BATCH, one device per stage, one micro-batch. */
mpt_plan_t *mlp_plan(size_t dp, size_t pp, const double *shares, int zero);
/* One step on batch s of the data: the trainer's status. */
int mlp_step(mpt_trainer_t *t, size_t s, mpt_step_stats_t *st);
/* Steps [from, to) of the data; their losses into losses[from..]. */
void mlp_train(mpt_trainer_t *t, size_t from, size_t to, double *losses);
/* The one-device losses of all MLP_STEPS steps. */
void mlp_reference(mpt_optimizer_t opt, double *losses);
/* Fails naming the first step whose loss is outside the tolerance. */
void mlp_expect_same(const char *name, const double *ref, const double *got);

#endif
