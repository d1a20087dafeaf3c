/*
 * train/rebalance.c: a trainer measured against its plan and moved to a
 * better one.  mpt_trainer_calibrate turns the phases the engine measured
 * (mpt_device_step_t) into calibration factors on the cluster
 * (plan/calibrate.c); mpt_trainer_replan moves the trainer to another
 * plan in memory, at its step, through the whole-model state arrays that
 * checkpoints use (so any plan can follow any other, as a checkpoint of
 * one plan resumes under another); mpt__trainer_rebalance is what
 * mpt_trainer_fit does after its warm-up steps: calibrate, plan again
 * (devices idle so far priced with the measured ones' factors:
 * mpt__calibration_borrowed), move when the new plan is predicted faster
 * by the margin.  Under a job rank 0 decides and every rank follows, with
 * rank 0's calibration.
 *
 * Left out: moving more than once a run (fit.c calls it once), and a
 * trace across the move (the new engine's trace starts at the move).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "train/trainer.h"

double mpt_trainer_predicted_step(const mpt_trainer_t *t)
{
    return t ? t->predicted_s : NAN;
}

void mpt__trainer_reset_calibration(mpt_trainer_t *t)
{
    t->cal_steps = 0;
}

void mpt_trainer_set_calibrating(mpt_trainer_t *t, int on)
{
    if (t)
        t->cal_paused = !on;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of field `off` (a double of mpt__cal_measured_t) of row i
 * over the k steps kept. */
static double median_of(const mpt_trainer_t *t, size_t n, size_t k, size_t i, size_t off,
                        double *scratch)
{
    for (size_t j = 0; j < k; j++)
        scratch[j] = *(const double *)((const char *)&t->cal_sum[j * (n + 1) + i] + off);
    qsort(scratch, k, sizeof *scratch, by_value);
    return k % 2 ? scratch[k / 2] : 0.5 * (scratch[k / 2 - 1] + scratch[k / 2]);
}

int mpt_trainer_calibrate(mpt_trainer_t *t, mpt_cluster_t *cluster)
{
    mpt__model_cost_t mc = {0};
    mpt__cal_measured_t *mean = NULL;
    int status;
    if (!t || !cluster)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_calibrate: NULL argument");
    if (!t->cluster && t->own_plan && t->own_plan == t->plan)
        return mpt__fail(MPT_ERR_INVALID, "a one-device trainer (mpt_trainer_create) has no "
                         "cluster to calibrate: plan it (mpt_trainer_create_planned)");
    if (t->cal_steps == 0)
        return mpt__fail(MPT_ERR_INVALID, "calibration needs at least one step since the "
                         "trainer's creation, last calibration or move");
    size_t n = mpt__engine_worker_count(t->eng);
    size_t k = t->cal_steps < MPT__CAL_HISTORY ? (size_t)t->cal_steps : MPT__CAL_HISTORY;
    double scratch[MPT__CAL_HISTORY];
    if (!(mean = malloc((n + 1) * sizeof *mean)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    /* Medians, not means: a step slowed by another process's burst on a
     * shared machine must not become the device's speed. */
    for (size_t i = 0; i <= n; i++)
        mean[i] = (mpt__cal_measured_t){
            median_of(t, n, k, i, offsetof(mpt__cal_measured_t, forward_s), scratch),
            median_of(t, n, k, i, offsetof(mpt__cal_measured_t, backward_s), scratch),
            median_of(t, n, k, i, offsetof(mpt__cal_measured_t, reduce_wait_s), scratch),
            median_of(t, n, k, i, offsetof(mpt__cal_measured_t, step_s), scratch)};
    MPT_TRY(mpt__model_cost(t->model, &mc));
    MPT_TRY(mpt__calibrate(t->plan, &mc, cluster, t->cfg.batch, mean, n, mean[n].step_s,
                           t->cal_steps, &t->predicted_s));
    t->cal_steps = 0;
out:
    mpt__model_cost_free(&mc);
    free(mean);
    return status;
}

int mpt_trainer_save_calibration(const mpt_trainer_t *t, const mpt_cluster_t *cluster)
{
    int status = MPT_OK;
    if (!t || !cluster)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_save_calibration: NULL argument");
    for (size_t d = 0; d < t->ndevs && status == MPT_OK; d++) {
        const mpt_cluster_device_t *cd = mpt_cluster_device(cluster, d);
        if (t->devs[d] && cd && cd->profile.calibration.steps > 0)
            status = mpt_profile_save_calibration(t->devs[d], &cd->profile.calibration);
    }
    return status;
}

/* A copy of plan p that the trainer owns (through its JSON, as a plan
 * file would be read, with its tensor-parallel roles). */
static int copy_plan(const mpt_trainer_t *t, const mpt__plan_t *p, mpt__plan_t **out)
{
    char *text = NULL;
    int status;
    *out = NULL;
    MPT_TRY(mpt__plan_to_json(p, &text));
    MPT_TRY(mpt__plan_from_json(text, "the new plan", t->model->nlayers, t->ndevs, out));
    if ((status = mpt__plan_roles(*out, t->model)) < 0) {
        mpt__plan_free(*out);
        *out = NULL;
    }
out:
    free(text);
    return status;
}

/* A new engine for plan p with the trainer's state written in. */
static int engine_with_state(mpt_trainer_t *t, const mpt__plan_t *p, uint64_t step,
                             float *const state[3], mpt__engine_t **out)
{
    mpt__engine_ranks_t ranks = {t->rank, t->nranks, t->rank_of};
    int status;
    MPT_TRY(mpt__engine_create_ranks(t->model, t->devs, t->ndevs, p, t->cfg.batch, t->cfg.seed,
                                     t->topo, t->cluster, t->nranks > 1 ? &ranks : NULL, out));
    MPT_TRY(mpt__engine_write_params(*out, state[0]));
    MPT_TRY(mpt__engine_write_slot(*out, 0, state[1]));
    MPT_TRY(mpt__engine_write_slot(*out, 1, state[2]));
    mpt__engine_set_step(*out, step);
    mpt__engine_set_tracing(*out, t->tracing);
    mpt__engine_set_comm_timeout(*out, t->comm_timeout_s);
out:
    if (status < 0) {
        mpt__engine_free(*out);
        *out = NULL;
    }
    return status;
}

static int adopt(mpt_trainer_t *t, mpt__plan_t *copy);

int mpt_trainer_replan(mpt_trainer_t *t, const mpt_plan_t *plan)
{
    mpt__plan_t *copy = NULL;
    float *state[3] = {NULL, NULL, NULL};
    size_t floats = t && t->model->param_floats ? t->model->param_floats : 1;
    int status;
    if (!t || !plan)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_replan: NULL argument");
    MPT_TRY(copy_plan(t, plan, &copy));
    for (int k = 0; k < 3; k++)
        if (!(state[k] = malloc(floats * sizeof(float)))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory for the state of the move");
            goto out;
        }
    /* 1. Out of the old engine: parameters and both optimizer slots (the
     * whole model's, as a checkpoint holds them). */
    MPT_TRY(mpt__engine_read_params(t->eng, state[0]));
    MPT_TRY(mpt__engine_read_slot(t->eng, 0, state[1]));
    MPT_TRY(mpt__engine_read_slot(t->eng, 1, state[2]));
    uint64_t step = mpt__engine_step(t->eng);
    /* 2. The old engine goes first: both at once may not fit the devices. */
    mpt__engine_free(t->eng);
    t->eng = NULL;
    /* 3. In to the new one; when it cannot be built, back to the old plan. */
    mpt__engine_t *e = NULL;
    status = engine_with_state(t, copy, step, state, &e);
    if (status < 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", mpt_last_error());
        int back = engine_with_state(t, t->plan, step, state, &t->eng);
        if (back < 0)
            status = mpt__fail(status, "moving to the new plan: %s; and back to the old one: %s",
                               why, mpt_last_error());
        else
            status = mpt__fail(status, "moving to the new plan: %s (the trainer stays on the "
                               "old one)", why);
        goto out;
    }
    t->eng = e;
    status = adopt(t, copy);
    copy = NULL;
out:
    mpt__plan_free(copy);
    for (int k = 0; k < 3; k++)
        free(state[k]);
    return status;
}

/* The trainer's engine runs `copy` now: the trainer owns it and predicts
 * its step, calibrated when it can. */
static int adopt(mpt_trainer_t *t, mpt__plan_t *copy)
{
    mpt__plan_free(t->own_plan); /* after its engine */
    t->own_plan = copy, t->plan = copy;
    t->predicted_s = t->plan->predicted_step_s > 0 ? t->plan->predicted_step_s : NAN;
    if (t->cluster) { /* with the cluster's calibration, as mpt_trainer_calibrate */
        mpt__model_cost_t mc = {0};
        mpt__plan_t times = {0};
        if (mpt__model_cost(t->model, &mc) == MPT_OK &&
            mpt__plan_predict_calibrated(t->plan, &mc, t->cluster, t->cfg.batch, &times) == MPT_OK)
            t->predicted_s = times.predicted_step_s;
        mpt__model_cost_free(&mc);
        mpt__clear_error();
    }
    /* Kernel timing as before the move, on devices that were idle then
     * too, their counters read empty: otherwise a device new to the plan
     * reports no busy time (a move to an idle device once showed 3%). */
    for (size_t i = 0; t->timing && i < mpt__engine_worker_count(t->eng); i++) {
        mpt_device_t *dev = mpt__engine_worker_device(t->eng, i);
        double busy = 0;
        int status = dev ? mpt_device_set_timing(dev, 1) : MPT_OK;
        if (status == MPT_OK && dev)
            status = mpt_device_busy_seconds(dev, &busy, NULL);
        if (status < 0)
            return mpt__fail_context(status, "timing the new plan's devices");
    }
    return mpt__trainer_size_arrays(t);
}

int mpt__trainer_rebuild(mpt_trainer_t *t, const mpt__plan_t *p, uint64_t step,
                         float *const state[3])
{
    mpt__plan_t *copy = NULL;
    int status;
    MPT_TRY_RETURN(copy_plan(t, p, &copy));
    mpt__engine_free(t->eng); /* first: both at once may not fit the devices */
    t->eng = NULL;
    if ((status = engine_with_state(t, copy, step, state, &t->eng)) < 0) {
        mpt__plan_free(copy);
        return status;
    }
    return adopt(t, copy);
}

void mpt__plan_summary(const mpt__plan_t *p, char *buf, size_t size)
{
    size_t at = 0;
    int n = snprintf(buf, size, "dp=%zu pp=%zu tp=%zu m=%zu %s on devices", p->dp, p->pp, p->tp,
                     p->microbatches, p->schedule == MPT__PIPE_1F1B ? "1f1b" : "gpipe");
    at = n > 0 && (size_t)n < size ? (size_t)n : size;
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            for (size_t g = 0; g < p->replicas[r].stages[s].ndevices && at < size; g++) {
                n = snprintf(buf + at, size - at, "%s%zu", at && buf[at - 1] == 's' ? " " : ",",
                             p->replicas[r].stages[s].devices[g].device);
                at = n > 0 && at + (size_t)n < size ? at + (size_t)n : size;
            }
}

/* Rank 0's decision as JSON: the summaries, the predictions, whether it
 * moves, the plan it moves to, and every device's calibration. */
static char *decision_json(const mpt__replan_t *d, const mpt__plan_t *plan,
                           const mpt_cluster_t *cluster)
{
    char *plan_text = NULL, *text = NULL;
    json_t *cal = json_array(), *root = NULL;
    for (size_t i = 0; cal && i < mpt_cluster_device_count(cluster); i++) {
        const mpt_calibration_t *c = &mpt_cluster_device(cluster, i)->profile.calibration;
        json_array_append_new(cal, json_pack("[f,f,f,f,I,f,f,I]", c->forward, c->backward,
                                             c->transfer, c->allreduce, (json_int_t)c->steps,
                                             c->company_forward, c->company_backward,
                                             (json_int_t)c->company_steps));
    }
    if (d->moved && mpt__plan_to_json(plan, &plan_text) < 0)
        goto out;
    root = json_pack("{s:s,s:s,s:f,s:f,s:b,s:s*,s:o*}", "old_plan", d->old_plan, "new_plan",
                     d->new_plan, "old_s", d->old_s, "new_s", d->new_s, "moved", d->moved,
                     "plan", plan_text, "calibration", cal);
    cal = NULL; /* root owns it (or it was freed with a failed pack) */
    if (root)
        text = json_dumps(root, JSON_COMPACT);
out:
    json_decref(cal);
    json_decref(root);
    free(plan_text);
    return text;
}

/* The other ranks: rank 0's decision read, its calibration adopted and
 * *plan set to the plan to move to (NULL: stay). */
static int read_decision(mpt_trainer_t *t, mpt_cluster_t *cluster, const char *text,
                         mpt__replan_t *d, mpt__plan_t **plan)
{
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr), *cal = NULL;
    const char *old_plan = NULL, *new_plan = NULL, *plan_text = NULL;
    int moved = 0, status = MPT_OK;
    if (!root || json_unpack(root, "{s:s,s:s,s:F,s:F,s:b,s?s,s:o}", "old_plan", &old_plan,
                             "new_plan", &new_plan, "old_s", &d->old_s, "new_s", &d->new_s,
                             "moved", &moved, "plan", &plan_text, "calibration", &cal) != 0 ||
        json_array_size(cal) != mpt_cluster_device_count(cluster) || (moved && !plan_text)) {
        status = mpt__fail(MPT_ERR_PARSE, "rank 0's rebalance decision is malformed");
        goto out;
    }
    snprintf(d->old_plan, sizeof d->old_plan, "%s", old_plan);
    snprintf(d->new_plan, sizeof d->new_plan, "%s", new_plan);
    d->moved = moved;
    for (size_t i = 0; i < json_array_size(cal); i++) {
        mpt_calibration_t c;
        json_int_t steps = 0, company_steps = 0;
        if (json_unpack(json_array_get(cal, i), "[F,F,F,F,I,F,F,I]", &c.forward, &c.backward,
                        &c.transfer, &c.allreduce, &steps, &c.company_forward,
                        &c.company_backward, &company_steps) != 0 ||
            steps < 0 || company_steps < 0) {
            status = mpt__fail(MPT_ERR_PARSE, "rank 0's calibration of device %zu is malformed", i);
            goto out;
        }
        c.steps = (uint64_t)steps, c.company_steps = (uint64_t)company_steps;
        MPT_TRY(mpt_cluster_set_calibration(cluster, i, &c));
    }
    if (moved) {
        MPT_TRY(mpt__plan_from_json(plan_text, "rank 0's new plan", t->model->nlayers, t->ndevs,
                                    plan));
        MPT_TRY(mpt__plan_roles(*plan, t->model));
    }
out:
    json_decref(root);
    return status;
}

/* Under a job, every rank does what rank 0 decided, with rank 0's
 * calibration: each rank calibrates on its own wall clock, a few percent
 * apart, and two ranks deciding apart (one moving, one staying) waited on
 * each other until the deadline.  `failed`: rank 0's own failure, which
 * every rank then returns. */
static int share_decision(mpt_trainer_t *t, mpt_cluster_t *cluster, int failed,
                          mpt__replan_t *d, mpt__plan_t **plan)
{
    char *text = NULL;
    int rank = mpt_world_rank(t->world), status;
    if (rank == 0 && failed == MPT_OK && !(text = decision_json(d, *plan, cluster)))
        failed = mpt__fail(MPT_ERR_NOMEM, "out of memory for the rebalance decision");
    MPT_TRY(mpt__world_bcast_text(t->world, failed, &text));
    if (rank != 0) {
        mpt__plan_free(*plan);
        *plan = NULL;
        status = read_decision(t, cluster, text, d, plan);
    }
out:
    free(text);
    return status;
}

int mpt__trainer_rebalance(mpt_trainer_t *t, mpt_cluster_t *cluster,
                           const mpt_plan_request_t *request, double margin, int save,
                           mpt__replan_t *out)
{
    mpt__plan_t *plan = NULL;
    int status, job = t->world && mpt_world_size(t->world) > 1;
    memset(out, 0, sizeof *out);
    /* 1. The cost model calibrated on the steps so far (every rank: each
     * forgets the steps it measured). */
    status = mpt_trainer_calibrate(t, cluster);
    /* 2. Planned again with it: the same request, so the same freedom
     * (pinned dimensions stay pinned).  3. Moved only for a clear gain: a
     * move costs a rebuild of every stage, and the prediction has its
     * error.  Under a job, rank 0 decides for every rank. */
    if (status == MPT_OK && (!job || mpt_world_rank(t->world) == 0)) {
        out->old_s = t->predicted_s;
        mpt__plan_summary(t->plan, out->old_plan, sizeof out->old_plan);
        /* Devices idle so far priced like the measured ones (calibrate.c). */
        mpt_cluster_t *priced = NULL;
        status = mpt__calibration_borrowed(cluster, &priced);
        if (status == MPT_OK)
            status = mpt__plan_make_excluding(t->model, priced, request, t->excluded, &plan);
        mpt_cluster_free(priced);
        if (status == MPT_OK) {
            out->new_s = plan->predicted_step_s;
            mpt__plan_summary(plan, out->new_plan, sizeof out->new_plan);
            out->moved = out->new_s < (1.0 - margin) * out->old_s;
        }
    }
    if (job)
        status = share_decision(t, cluster, status, out, &plan);
    if (status < 0)
        goto out;
    if (save)
        MPT_TRY(mpt_trainer_save_calibration(t, cluster));
    if (out->moved) {
        MPT_TRY(mpt_trainer_replan(t, plan));
        t->predicted_s = out->new_s; /* with the borrowed factors, as decided */
    }
    mpt__log(MPT_LOG_INFO, "rebalance at step %llu: %s, predicted %.3f ms (calibrated); "
             "re-planned %s, predicted %.3f ms: %s",
             (unsigned long long)mpt__engine_step(t->eng), out->old_plan, out->old_s * 1e3,
             out->new_plan, out->new_s * 1e3,
             out->moved ? "moved to it" : "stays (not faster by the margin)");
out:
    mpt__plan_free(plan);
    return status;
}
