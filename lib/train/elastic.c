/*
 * train/elastic.c: a device failure costs seconds, not the run.  The
 * training loop (fit.c) takes a host snapshot of the whole model's state
 * every few steps; when a step, or the checkpoint or evaluation after it,
 * fails because of a device of this process (the engine names it:
 * engine/workers.c), the device is dropped, the same planner plans again
 * on the survivors of the same (calibrated) cluster, the engine is rebuilt
 * with the snapshot's state (rebalance.c's mpt__trainer_rebuild, the path
 * of every move between plans) and the loop goes back to the snapshot's
 * step and batch (and trains again to the checkpoint or evaluation that
 * failed).  Plan invariance makes the rest of the run the one an
 * uninterrupted run would train on the new plan from that step.
 *
 * Device health: a device that is lost or hung is dropped at once; one
 * whose failure was a plain OpenCL or BLAS error gets one more chance (a
 * transient fault), and its second failure drops it for the rest of the
 * run.  A dropped device is never planned onto again, rebalancing
 * included.
 *
 * Left out: several processes (a rank's failure ends an MPI job; mpt-run
 * is the answer there), and a hang inside a real driver call, whose thread
 * cannot be taken back (only injected hangs return).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "train/elastic.h"

/* The snapshot's share of the step time that the chosen interval stays
 * under (the target). */
#define SNAPSHOT_SHARE 0.02
/* The longest chosen interval: past it a failure would replay too much. */
#define SNAPSHOT_MAX_EVERY 1000

static size_t plan_devices(const mpt__plan_t *p)
{
    size_t n = 0;
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            n += p->replicas[r].stages[s].ndevices;
    return n;
}

int mpt__elastic_begin(mpt__elastic_t *el, mpt_trainer_t *t, const mpt_fit_options_t *o)
{
    memset(el, 0, sizeof *el);
    const mpt_cluster_t *cluster = o->cluster ? o->cluster : t->cluster;
    int possible = cluster && t->nranks == 1 && t->ndevs > 0;
    if (o->elastic < 0)
        return MPT_OK;
    if (o->elastic > 0 && !possible)
        return mpt__fail(MPT_ERR_UNSUPPORTED,
                         "elastic training needs a planned trainer in one process (a cluster "
                         "to plan on): under mpirun, restart from the checkpoint instead");
    if (!possible || (o->elastic == 0 && plan_devices(t->plan) < 2))
        return MPT_OK;
    if (!t->failures && (!(t->failures = calloc(t->ndevs, sizeof *t->failures)) ||
                         !(t->excluded = calloc(t->ndevs, 1))))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (int k = 0; k < 3; k++)
        if (!t->snap.state[k] &&
            !(t->snap.state[k] = malloc((t->model->param_floats + 1) * sizeof(float))))
            return mpt__fail(MPT_ERR_NOMEM, "out of memory for the elastic snapshot (%zu "
                             "floats)", 3 * t->model->param_floats);
    if (!t->cluster)
        t->cluster = cluster;
    if (o->replan) {
        el->request = *o->replan;
    } else {
        mpt_plan_request_default(&el->request);
        el->request.batch = t->cfg.batch;
        el->request.optimizer = t->cfg.optimizer;
    }
    /* The survivors cannot keep dimensions pinned for more devices. */
    el->request.dp = el->request.pp = el->request.tp = 0;
    el->on = 1;
    el->every = o->snapshot_every ? o->snapshot_every : 1;
    el->chosen = o->snapshot_every == 0;
    return MPT_OK;
}

int mpt__elastic_due(const mpt__elastic_t *el, uint64_t step)
{
    return el->on && (el->snapshots == 0 || step >= el->last + el->every);
}

void mpt__elastic_step_done(mpt__elastic_t *el, double seconds)
{
    el->steps_s += seconds, el->steps++;
}

int mpt__elastic_snapshot(mpt__elastic_t *el, mpt_trainer_t *t, const mpt_data_position_t *next)
{
    double t0 = mpt__now();
    t->snap.valid = 0; /* a failure halfway leaves no half snapshot behind */
    MPT_TRY_RETURN(mpt__engine_read_params(t->eng, t->snap.state[0]));
    MPT_TRY_RETURN(mpt__engine_read_slot(t->eng, 0, t->snap.state[1]));
    MPT_TRY_RETURN(mpt__engine_read_slot(t->eng, 1, t->snap.state[2]));
    t->snap.step = mpt__engine_step(t->eng), t->snap.next = *next, t->snap.valid = 1;
    t->snap.skipped = t->skipped, t->snap.skipped_in_row = t->skipped_in_row;
    el->copy_s = mpt__now() - t0;
    el->snapshot_s_total += el->copy_s, el->snapshots++;
    /* Chosen: the copy over the interval's steps stays under the share of
     * their time (the first steps, kernel builds, make it conservative). */
    if (el->chosen && el->steps > 0) {
        double step_s = el->steps_s / (double)el->steps;
        double every = step_s > 0 ? ceil(el->copy_s / (SNAPSHOT_SHARE * step_s)) : 1;
        uint64_t was = el->every;
        el->every = every < 1 ? 1 : every > SNAPSHOT_MAX_EVERY ? SNAPSHOT_MAX_EVERY
                                                               : (uint64_t)every;
        if (el->every != was || el->snapshots == 2)
            mpt__log(MPT_LOG_INFO, "elastic: a snapshot of %zu floats copied in %.3f ms, a step "
                     "%.3f ms: a snapshot every %llu step(s) (under %.0f%% of the step time)",
                     3 * t->model->param_floats, el->copy_s * 1e3, step_s * 1e3,
                     (unsigned long long)el->every, SNAPSHOT_SHARE * 100);
    }
    el->last = t->snap.step, el->steps_s = 0, el->steps = 0;
    return MPT_OK;
}

/* Records the failure of plan device d: dropped for good when lost or
 * hung, or at its second failure. */
static void count_failure(mpt_trainer_t *t, int d, const char *reason)
{
    t->failures[d]++;
    if (strcmp(reason, "error") != 0 || t->failures[d] >= 2)
        t->excluded[d] = 1;
}

/* A device that failed while the engine was being rebuilt: one whose
 * count of faults (device/health.c) grew since `before`, or one left lost
 * by a failure outside a step.  \return the plan device id, or -1. */
static int faulted_device(const mpt_trainer_t *t, const unsigned long *before)
{
    for (size_t d = 0; d < t->ndevs; d++)
        if (t->devs[d] && !t->excluded[d] &&
            (t->devs[d]->lost || (before && t->devs[d]->faults > before[d])))
            return (int)d;
    return -1;
}

int mpt__elastic_recover(mpt__elastic_t *el, mpt_trainer_t *t, int status, mpt__recovery_t *out)
{
    int device;
    const char *reason;
    char first[600];
    mpt__plan_t *plan = NULL;
    memset(out, 0, sizeof *out);
    if (!el->on || !t->snap.valid)
        return status;
    /* The engine names the device of a failed step; a failure outside a
     * step (a checkpoint's reads) leaves the device marked lost. */
    if (!mpt__engine_failed_device(t->eng, &device, &reason)) {
        if ((device = faulted_device(t, NULL)) < 0)
            return status;
        reason = "lost";
    }
    unsigned long *faults = malloc((t->ndevs + 1) * sizeof *faults);
    if (!faults)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    double t0 = mpt__now();
    uint64_t failed_step = mpt__engine_step(t->eng);
    snprintf(first, sizeof first, "%s", mpt_last_error());
    if (el->after_step) /* the step counted: it is trained again */
        mpt__log(MPT_LOG_WARN, "the %s after step %llu failed: %s; recovering from the "
                 "snapshot of step %llu", el->after_step, (unsigned long long)failed_step,
                 first, (unsigned long long)t->snap.step);
    else
        mpt__log(MPT_LOG_WARN, "step %llu failed: %s; recovering from the snapshot of step %llu",
                 (unsigned long long)failed_step + 1, first, (unsigned long long)t->snap.step);
    out->device = device, out->reason = reason;
    count_failure(t, device, reason);
    for (;;) {
        mpt__plan_free(plan);
        plan = NULL;
        status = mpt__plan_make_excluding(t->model, t->cluster, &el->request, t->excluded, &plan);
        if (status < 0) {
            mpt__engine_free(t->eng); /* the checkpoint now reads the snapshot */
            t->eng = NULL;
            /* The planner's reason stays (passing mpt_last_error() to
             * mpt__fail would read the buffer it writes). */
            status = mpt__fail_context(status, "device %d failed (%s: %s) and no plan is left "
                                       "on the other devices", device, reason, first);
            break;
        }
        mpt__plan_summary(plan, out->plan, sizeof out->plan);
        for (size_t d = 0; d < t->ndevs; d++)
            faults[d] = t->devs[d] ? t->devs[d]->faults : 0;
        status = mpt__trainer_rebuild(t, plan, t->snap.step, t->snap.state);
        if (status == MPT_OK)
            break;
        /* A second failure while rebuilding: drop that device too and
         * plan again; any other failure ends the run. */
        int again = faulted_device(t, faults);
        if (again < 0) {
            status = mpt__fail_context(status, "device %d failed (%s: %s); rebuilding on %s "
                                       "failed", device, reason, first, out->plan);
            break;
        }
        mpt__log(MPT_LOG_WARN, "rebuilding on %s: device %d failed too (%s): dropped",
                 out->plan, again, mpt_last_error());
        count_failure(t, again, "lost");
    }
    mpt__plan_free(plan);
    free(faults);
    if (status < 0)
        return status;
    t->skipped = t->snap.skipped, t->skipped_in_row = t->snap.skipped_in_row;
    out->replayed = failed_step - t->snap.step;
    out->seconds_lost = (mpt__now() - t0) + (el->failed_at > 0 ? t0 - el->failed_at : 0) +
                        el->steps_s;
    el->last = t->snap.step, el->steps_s = 0, el->steps = 0;
    mpt__log(MPT_LOG_WARN, "recovered: device %d %s (%s), now %s, back at step %llu, "
             "%llu step(s) to train again, %.2f s lost",
             device, t->excluded[device] ? "dropped" : "kept for one more try", reason,
             out->plan, (unsigned long long)t->snap.step, (unsigned long long)out->replayed,
             out->seconds_lost);
    return MPT_OK;
}
