/*
 * engine/workers.c: the worker threads.  One per (replica, stage, member)
 * of the plan, made with its stage's executor (or tensor-parallel shard)
 * on its device, its neighbours and its staging buffers; it waits for a
 * job, runs it (schedule.c) and reports.  The caller's thread posts a job
 * and waits for every local worker; the first real failure (not the aborts
 * it caused) is the engine's, and an engine that failed refuses further
 * work, since its replicas may be out of step.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/engine_impl.h"

/* ---- errors ------------------------------------------------------------------ */

/* Records a worker's failure once and wakes every peer. */
int mpt__eng_worker_fail(worker_t *w, int status)
{
    if (w->status == MPT_OK) {
        w->status = status;
        snprintf(w->error, sizeof w->error, "%s", mpt_last_error());
    }
    char why[600];
    snprintf(why, sizeof why, "device %d (%s), replica %d stage %d: %s", w->dev->info.index,
             w->dev->info.name, w->replica, w->stage, w->error);
    mpt__transport_abort(w->e->t, status, why);
    return status;
}

void *mpt__eng_worker_main(void *arg)
{
    worker_t *w = arg;
    mpt__engine_t *e = w->e;
    unsigned long seen = 0;
    if (e->topo && e->cluster) {
        const mpt_cluster_device_t *cd = mpt_cluster_device(e->cluster, (size_t)w->device);
        if (cd && mpt_topology_bind_thread(e->topo, &cd->locality) < 0)
            mpt__log(MPT_LOG_WARN, "worker of device %d: cannot bind to its cores: %s",
                     w->device, mpt_last_error());
    }
    for (;;) {
        pthread_mutex_lock(&e->lock);
        while (e->generation == seen)
            pthread_cond_wait(&e->go, &e->lock);
        seen = e->generation;
        job_kind_t kind = e->kind;
        pthread_mutex_unlock(&e->lock);
        if (kind == JOB_QUIT)
            break;
        double t0 = mpt__now();
        w->status = MPT_OK, w->error[0] = '\0';
        int status = kind == JOB_TRAIN ? mpt__eng_train_job(w) : mpt__eng_eval_job(w, kind);
        if (status < 0)
            mpt__eng_worker_fail(w, status);
        w->step_s = mpt__now() - t0;
        pthread_mutex_lock(&e->lock);
        w->done_generation = seen;
        e->finished++;
        pthread_cond_broadcast(&e->done);
        pthread_mutex_unlock(&e->lock);
    }
    return NULL;
}

/* The watchdog, with e->lock held.  Past the deadline the transport is
 * aborted first, so that workers waiting on a peer return; those that
 * still have not finished a grace period later are the hung ones: given
 * up, their devices told so. */
static void give_up_hung(mpt__engine_t *e)
{
    for (size_t i = 0; i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        if (w->local && w->done_generation != e->generation) {
            w->timed_out = 1;
            mpt__device_give_up(w->dev);
        }
    }
}

/* How long workers waiting on a peer get to return after the abort. */
#define HANG_GRACE_S 0.5

static void deadline_in(struct timespec *until, double seconds)
{
    clock_gettime(CLOCK_REALTIME, until); /* the condition's clock */
    double end = (double)until->tv_sec + until->tv_nsec * 1e-9 + seconds;
    until->tv_sec = (time_t)end;
    until->tv_nsec = (long)((end - (double)until->tv_sec) * 1e9);
}

/* An evaluation's deadline per batch of its set, in training steps: the
 * margin of the default step deadline (100 predicted steps, train/
 * trainer.c), over work that is at most a step's per batch (a forward). */
#define EVAL_STEPS_PER_BATCH 100.0

/* The deadline of the current job, 0 for none.  A training step's is the
 * engine's.  An evaluation (or logits) job runs its whole set through
 * replica 0, so its deadline scales with the set: the step's, or
 * EVAL_STEPS_PER_BATCH times the last measured step per batch of the set
 * when that is longer (the step's deadline times the batches would make a
 * 300 s floor hours), and a long evaluation is not taken for a hang.
 * Only after the engine finished a job of the kind (kernel builds are not
 * hangs), and in one process only: across ranks the transport's own
 * deadline names the rank that stopped answering. */
static double job_deadline(const mpt__engine_t *e)
{
    int once = e->kind == JOB_TRAIN ? e->trained_once : e->evaluated_once;
    if (e->nranks != 1 || !once || e->job_deadline_s <= 0)
        return 0;
    if (e->kind == JOB_TRAIN)
        return e->job_deadline_s;
    double batches = ceil((double)e->count / (double)(e->batch ? e->batch : 1));
    double scaled = EVAL_STEPS_PER_BATCH * e->train_job_s * batches;
    return scaled > e->job_deadline_s ? scaled : e->job_deadline_s;
}

/* Waits for every local worker of the job, for at most its deadline
 * (job_deadline) before the watchdog steps in. */
static void wait_job(mpt__engine_t *e)
{
    double deadline = job_deadline(e);
    int phase = deadline > 0;
    /* phase 1: to the deadline, 2: the grace after the abort, 0: untimed */
    struct timespec until;
    if (phase)
        deadline_in(&until, deadline);
    while (e->finished < e->nlocal) {
        if (!phase) {
            pthread_cond_wait(&e->done, &e->lock);
        } else if (pthread_cond_timedwait(&e->done, &e->lock, &until) == ETIMEDOUT) {
            if (phase == 1) {
                char why[160];
                snprintf(why, sizeof why, "a%s job passed the %.1f s deadline",
                         e->kind == JOB_TRAIN ? " training" : "n evaluation", deadline);
                mpt__transport_abort(e->t, MPT_ERR_DEVICE_LOST, why);
                deadline_in(&until, HANG_GRACE_S);
                phase = 2;
            } else {
                give_up_hung(e);
                phase = 0; /* then waits for the given-up workers to return */
            }
        }
    }
}

/* What failed the job: the device and the kind of fault, or none. */
static void classify(mpt__engine_t *e, const worker_t *first)
{
    e->failed_device = -1, e->failed_reason = NULL;
    if (first->timed_out)
        e->failed_reason = "hang";
    else if (first->status == MPT_ERR_DEVICE_LOST)
        e->failed_reason = "lost";
    else if (first->status == MPT_ERR_OPENCL || first->status == MPT_ERR_BLAS ||
             first->status == MPT_ERR_BUILD)
        e->failed_reason = "error";
    if (e->failed_reason)
        e->failed_device = first->device;
}

int mpt__engine_failed_device(const mpt__engine_t *e, int *device, const char **reason)
{
    if (!e || !e->failed || e->failed_device < 0)
        return 0;
    *device = e->failed_device, *reason = e->failed_reason;
    return 1;
}

/* Posts a job to every worker and waits; the first real failure (not the
 * aborts it caused; a hung worker first of all) is the engine's. */
int mpt__eng_run_job(mpt__engine_t *e, job_kind_t kind)
{
    if (e->failed)
        return mpt__fail(MPT_ERR_ABORTED, "the engine stopped after an earlier failure");
    pthread_mutex_lock(&e->lock);
    e->kind = kind;
    e->finished = 0;
    e->generation++;
    pthread_cond_broadcast(&e->go);
    wait_job(e);
    pthread_mutex_unlock(&e->lock);
    const worker_t *first = NULL;
    for (size_t i = 0; i < e->nworkers; i++) {
        const worker_t *w = &e->w[i];
        if (w->local && (w->status < 0 || w->timed_out) &&
            (!first || (!first->timed_out && (w->timed_out || (first->status == MPT_ERR_ABORTED &&
                                                               w->status != MPT_ERR_ABORTED)))))
            first = w;
    }
    if (!first) {
        if (kind == JOB_TRAIN) { /* its slowest worker: the evaluations' deadline */
            e->trained_once = 1, e->train_job_s = 0;
            for (size_t i = 0; i < e->nworkers; i++)
                if (e->w[i].local && e->w[i].step_s > e->train_job_s)
                    e->train_job_s = e->w[i].step_s;
        } else {
            e->evaluated_once = 1;
        }
        return e->nranks > 1 ? mpt__eng_exchange_results(e) : MPT_OK;
    }
    e->failed = 1;
    classify(e, first);
    char where[32] = "";
    if (e->nranks > 1) /* the other ranks wait: the caller must end the process (mpt.h) */
        snprintf(where, sizeof where, "rank %d of %d, ", e->rank, e->nranks);
    return mpt__fail(first->status, "%sdevice %d (%s), replica %d stage %d: %s", where,
                     first->dev->info.index, first->dev->info.name, first->replica,
                     first->stage, first->error);
}

/* ---- making a worker ------------------------------------------------------------ */

/* The executor's options: ZeRO's optimizer state (ZeRO-2: and gradients)
 * waits for the shards (data_parallel.c), and ZeRO-2 sums micro-batches
 * on the host instead of the device; the plan's recomputation. */
static unsigned stage_flags(const mpt__engine_t *e, const mpt__plan_stage_t *st)
{
    return (e->zero ? MPT__STAGE_ZERO : 0u) | (e->zero == 2 ? MPT__STAGE_ZERO2 : 0u) |
           (st->recompute ? MPT__STAGE_RECOMPUTE : 0u);
}

/* Worker `w`: member g of the tp devices of replica r's stage s, whose
 * group's workers start at `base`.  Activations come from member
 * g % tp_prev of the previous group and go to every member j of the next
 * with j % tp = g (each member of a group holds the whole output); the
 * gradients take the mirror paths. */
int mpt__eng_make_worker(mpt__engine_t *e, worker_t *w, size_t r, size_t s, size_t g, size_t base,
                       size_t tp_prev, size_t tp_next, size_t max_mb,
                       mpt_device_t *const *devices, uint64_t seed, const float *init)
{
    const mpt__plan_replica_t *rep = &e->plan->replicas[r];
    const mpt__plan_stage_t *st = &rep->stages[s];
    size_t tp = st->ndevices, k = (size_t)(w - e->w);
    float *local = NULL;
    double *fractions = NULL;
    int status = MPT_OK;
    w->e = e, w->index = (int)k, w->replica = (int)r, w->stage = (int)s;
    w->member = (int)g, w->tp = (int)tp;
    w->tied_peer = -1, w->tied_owner_layer = -1;
    pthread_mutex_init(&w->rlock, NULL);
    pthread_cond_init(&w->rcond, NULL);
    w->device = (int)st->devices[g].device;
    w->stats.predicted_memory_bytes = st->devices[g].memory_bytes;
    w->dev = w->local ? devices[w->device] : NULL; /* rank and local: set by the caller */
    e->all_members[k] = (int)k;
    w->stats.device = w->device, w->stats.replica = (int)r, w->stats.stage = (int)s;
    w->stats.member = (int)g, w->stats.rank = w->rank;
    w->prev = tp_prev ? (int)(base - tp_prev + g % tp_prev) : -1;
    w->next = tp_next ? (int)(base + tp + g % tp_next) : -1;
    if (!(w->fwd_to = calloc(tp_next + 1, sizeof *w->fwd_to)) ||
        !(w->bwd_to = calloc(tp_prev + 1, sizeof *w->bwd_to))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t j = g; j < tp_next; j += tp)
        w->fwd_to[w->nfwd_to++] = (int)(base + tp + j);
    for (size_t i = g; i < tp_prev; i += tp)
        w->bwd_to[w->nbwd_to++] = (int)(base - tp_prev + i);
    w->max_mb = max_mb;
    size_t in_flight = e->pipe_1f1b ? rep->nstages - s : e->microbatches;
    w->slots = in_flight < e->microbatches ? in_flight : e->microbatches;
    w->late_loss = !tp_next && w->slots >= e->microbatches;
    w->model = e->m;
    if (tp == 1 && !w->local) {
        /* Another rank runs it: only its place in the job is needed here
         * (segments, ownership of the state). */
        mpt__model_param_range(e->m, st->first, st->last, &w->p0, &w->np);
        goto out;
    } else if (tp == 1) {
        MPT_TRY(mpt__stage_create_with(e->m, w->dev, st->first, st->last, max_mb, w->slots,
                                       e->microbatches > 1 && e->zero != 2, seed, init,
                                       stage_flags(e, st), &w->ex));
    } else {
        int *members = malloc(tp * sizeof *members);
        if (!members || !(fractions = malloc(tp * sizeof *fractions))) {
            free(members);
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t j = 0; j < tp; j++)
            members[j] = (int)(base + j), fractions[j] = st->devices[j].fraction;
        /* One tag per group: its collectives run in the same order on
         * every member, so they match in posting order. */
        mpt__group_t group = {e->t, members, (int)tp, (int)g, e->tags.tp + (int)base, NULL};
        status = mpt__shard_create(e->m, st->first, st->last, &st->roles, fractions, tp, g,
                                   &group, max_mb, &w->shard);
        free(members);
        if (status < 0)
            goto out;
        w->model = mpt__shard_model(w->shard);
        if (!w->local) { /* its slice's layout only (as above) */
            mpt__model_param_range(w->model, 0, w->model->nlayers - 1, &w->p0, &w->np);
            goto out;
        }
        if (!(local = malloc((w->model->param_floats + 1) * sizeof *local))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        mpt__shard_gather(w->shard, init, local);
        MPT_TRY(mpt__stage_create_with(w->model, w->dev, 0, w->model->nlayers - 1, max_mb,
                                       w->slots, e->microbatches > 1 && e->zero != 2, seed,
                                       local, stage_flags(e, st), &w->ex));
    }
    w->p0 = mpt__stage_param_first(w->ex), w->np = mpt__stage_param_count(w->ex);
    size_t width_in = mpt__stage_in_floats(w->ex), width_out = mpt__stage_out_floats(w->ex);
    size_t widest = width_in > width_out ? width_in : width_out;
    if (!(w->fwd_stage = malloc(e->microbatches * max_mb * width_out * sizeof(float) + 1)) ||
        !(w->bwd_stage = malloc(e->microbatches * max_mb * width_in * sizeof(float) + 1)) ||
        !(w->recv_stage = malloc(max_mb * widest * sizeof(float) + 1)) ||
        !(w->sends = calloc(e->microbatches * (w->nfwd_to + w->nbwd_to) + 1 /* tied */,
                            sizeof *w->sends)) ||
        !(w->gbuf = malloc((w->np ? w->np : 1) * sizeof(float)))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t used, peak;
    mpt_device_memory(w->dev, &used, &peak);
    w->stats.memory_bytes = (size_t)used, w->stats.peak_memory_bytes = (size_t)peak;
out:
    if (status < 0)
        mpt__fail_context(status, "replica %zu stage %zu (device %zu)", r, s,
                          st->devices[g].device);
    free(local);
    free(fractions);
    return status;
}
