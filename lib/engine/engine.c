/*
 * engine/engine.c: a plan on its devices (engine.h): checking the plan,
 * making the workers from it (workers.c) with their data-parallel
 * segments (data_parallel.c), tied-weight pairs (tied.c) and, across
 * ranks, the transport and state ownership (ranks.c); the job calls
 * (train step, evaluation, logits), whole-model state I/O and the trace.
 * engine_impl.h says how the pieces fit.
 *
 * Plan invariance: every stage starts from exactly the one-device values
 * of the model's elements it owns (counter-based init), every replica sees
 * its contiguous share of the step's batch, and gradients are scaled by
 * 1 / (the whole batch) at the loss, so the summed update is the
 * one-device update up to the order of float sums.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/gemm.h"
#include "engine/engine_impl.h"

/* ---- creation ------------------------------------------------------------------- */

/* Replica shares of the batch, from the plan's fractions (whole samples,
 * largest remainder, in replica order). */
static int split_batch(mpt__engine_t *e)
{
    size_t given = 0, n = e->nreplicas;
    double *rest = calloc(n, sizeof *rest);
    if (!rest)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t r = 0; r < n; r++) {
        double ideal = e->plan->replicas[r].batch_share * (double)e->batch;
        e->rep_samples[r] = (size_t)ideal;
        rest[r] = ideal - (double)e->rep_samples[r];
        given += e->rep_samples[r];
    }
    while (given < e->batch) {
        size_t top = 0;
        for (size_t r = 1; r < n; r++)
            if (rest[r] > rest[top])
                top = r;
        e->rep_samples[top]++, rest[top] = -1, given++;
    }
    free(rest);
    if (given != e->batch)
        return mpt__fail(MPT_ERR_INVALID, "the plan's batch shares give %zu samples for a "
                         "batch of %zu (they must sum to 1)", given, e->batch);
    for (size_t r = 0, off = 0; r < n; off += e->rep_samples[r], r++) {
        e->rep_first[r] = off;
        if (e->rep_samples[r] < e->microbatches)
            return mpt__fail(MPT_ERR_INVALID,
                             "replica %zu gets %zu of the %zu samples, fewer than its %zu "
                             "micro-batches",
                             r, e->rep_samples[r], e->batch, e->microbatches);
    }
    return MPT_OK;
}

/* Every tag the engine's messages use, from the transport's allocator.
 * Segments: at most one per pair of neighbouring cuts of every worker's
 * range (make_segments); tensor-parallel groups: named by their first
 * worker. */
static int alloc_tags(mpt__engine_t *e)
{
    engine_tags_t *t = &e->tags;
    mpt__tags_t a;
    int p2p = 0, status;
    mpt__tags_init(&a);
    MPT_TRY(mpt__tags_p2p(&a, 5, "the engine's messages", &p2p));
    t->act = p2p, t->grad = p2p + 1, t->eval = p2p + 2, t->gather = p2p + 3, t->tied = p2p + 4;
    MPT_TRY(mpt__tags_group(&a, 1, "the gradient norm", &t->norm));
    MPT_TRY(mpt__tags_group(&a, 1, "the ranks' control group", &t->ctl));
    MPT_TRY(mpt__tags_group(&a, (int)(2 * e->nworkers + 2), "data-parallel segments",
                            &t->segments));
    MPT_TRY(mpt__tags_group(&a, (int)e->nworkers, "tensor-parallel groups", &t->tp));
out:
    return status;
}

static int check_plan(const mpt__model_t *m, const mpt__plan_t *p, size_t ndevices, size_t batch)
{
    if (p->microbatches == 0 || p->nreplicas == 0)
        return mpt__fail(MPT_ERR_INVALID, "a plan without replicas or micro-batches");
    /* One batch size: the plan's shares and micro-batches were cut for it. */
    if (p->batch && p->batch != batch)
        return mpt__fail(MPT_ERR_INVALID, "the plan was made for batch %zu but the trainer's "
                         "batch is %zu: plan and train with one batch size", p->batch, batch);
    unsigned char *used = calloc(ndevices ? ndevices : 1, 1);
    if (!used)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
            if (st->recompute && st->ndevices > 1) {
                free(used);
                return mpt__fail(MPT_ERR_UNSUPPORTED, "replica %zu stage %zu: recomputation "
                                 "in a tensor-parallel stage is not implemented", r, s);
            }
            if (st->ndevices == 0 || st->last >= m->nlayers || st->first > st->last) {
                free(used);
                return mpt__fail(MPT_ERR_INVALID, "replica %zu stage %zu: %zu devices, layers "
                                 "%zu..%zu of %zu", r, s, st->ndevices, st->first, st->last,
                                 m->nlayers);
            }
            for (size_t g = 0; g < st->ndevices; g++) {
                size_t d = st->devices[g].device;
                if (d >= ndevices) {
                    free(used);
                    return mpt__fail(MPT_ERR_INVALID, "replica %zu stage %zu: device %zu of "
                                     "%zu opened", r, s, d, ndevices);
                }
                /* One worker per device: two would race on its queue and events. */
                if (used[d]++) {
                    free(used);
                    return mpt__fail(MPT_ERR_INVALID, "replica %zu stage %zu: device %zu "
                                     "already runs another stage", r, s, d);
                }
            }
        }
    free(used);
    return MPT_OK;
}

/* A plan whose predicted memory on a device passes that device's cap
 * (mpt_device_set_memory_limit) is refused before anything is allocated,
 * naming the device and the shortfall; the allocator enforces the cap on
 * what the prediction misses. */
static int check_caps(const mpt__plan_t *p, mpt_device_t *const *devices, size_t ndevices)
{
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
            for (size_t g = 0; g < st->ndevices; g++) {
                size_t d = st->devices[g].device;
                uint64_t cap = d < ndevices ? mpt_device_memory_limit(devices[d]) : 0;
                double need = st->devices[g].memory_bytes;
                if (cap && need > (double)cap)
                    return mpt__fail(MPT_ERR_DEVICE_MEMORY,
                                     "the plan needs %.0f bytes on device %d (%s) for replica "
                                     "%zu stage %zu (layers %zu..%zu), over its %llu-byte "
                                     "cap (--device-memory): %.0f bytes short",
                                     need, devices[d]->info.index, devices[d]->info.name, r, s,
                                     st->first, st->last, (unsigned long long)cap,
                                     need - (double)cap);
            }
        }
    return MPT_OK;
}

/* ZeRO-1 and 2 run on data-parallel replicas, in one process or across
 * ranks, with or without tensor-parallel groups, but not with a tied
 * weight copied across stages (the copy's gradient is summed with the
 * owner's whole before the update) or the hierarchical all-reduce (it has
 * no reduce-scatter of its own); there they are refused rather than run
 * half-sharded.  One replica has nothing to shard: the plan runs as
 * ZeRO-0. */
static int check_zero(mpt__engine_t *e)
{
    const mpt__plan_t *p = e->plan;
    if (p->zero < 0 || p->zero > 2)
        return mpt__fail(MPT_ERR_UNSUPPORTED, "ZeRO stage %d: only 0, 1 and 2 are implemented "
                         "(docs/memory.md)", p->zero);
    e->zero = e->nreplicas > 1 ? p->zero : 0;
    if (!e->zero)
        return MPT_OK;
    const char *why = p->allreduce == MPT_ALLREDUCE_HIERARCHICAL ? "the hierarchical all-reduce"
                                                                  : NULL;
    for (size_t i = 0; !why && i < e->m->nlayers; i++)
        if (e->m->layers[i].tied_layer >= 0)
            for (size_t r = 0; !why && r < p->nreplicas; r++)
                for (size_t s = 0; !why && s < p->replicas[r].nstages; s++) {
                    const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
                    if (st->first <= i && i <= st->last &&
                        (size_t)e->m->layers[i].tied_layer < st->first)
                        why = "a tied weight copied across pipeline stages";
                }
    return why ? mpt__fail(MPT_ERR_UNSUPPORTED, "ZeRO-%d with %s is not implemented: plan "
                           "with zero 0 (docs/memory.md)", e->zero, why)
               : MPT_OK;
}

int mpt__engine_create(const mpt__model_t *m, mpt_device_t *const *devices, size_t ndevices,
                       const mpt__plan_t *plan, size_t batch, uint64_t seed,
                       const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                       mpt__engine_t **out)
{
    return mpt__engine_create_ranks(m, devices, ndevices, plan, batch, seed, topo, cluster, NULL,
                                    out);
}

/* The host-BLAS threads of the devices this rank runs in the plan: the
 * cores shared among those, not among every device opened (a plan that
 * leaves one of two devices on the same cores idle gives the other all
 * of them; device/gemm_host.c). */
static int set_blas_threads(const mpt__plan_t *plan, mpt_device_t *const *devices,
                            size_t ndevices)
{
    mpt_device_t **used = calloc(ndevices ? ndevices : 1, sizeof *used);
    size_t n = 0;
    if (!used)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t r = 0; r < plan->nreplicas; r++) /* marked at their plan index */
        for (size_t s = 0; s < plan->replicas[r].nstages; s++)
            for (size_t g = 0; g < plan->replicas[r].stages[s].ndevices; g++) {
                size_t d = plan->replicas[r].stages[s].devices[g].device;
                if (d < ndevices)
                    used[d] = devices[d]; /* NULL: another rank's */
            }
    for (size_t d = 0; d < ndevices; d++) /* packed */
        if (used[d])
            used[n++] = used[d];
    if (n)
        mpt__gemm_set_threads(used, n);
    free(used);
    return MPT_OK;
}

int mpt__engine_create_ranks(const mpt__model_t *m, mpt_device_t *const *devices,
                             size_t ndevices, const mpt__plan_t *plan, size_t batch,
                             uint64_t seed, const mpt_topology_t *topo,
                             const mpt_cluster_t *cluster, const mpt__engine_ranks_t *ranks,
                             mpt__engine_t **out)
{
    int status = MPT_OK;
    float *init = NULL;
    mpt__engine_t *e = NULL;
    *out = NULL;
    MPT_TRY(check_plan(m, plan, ndevices, batch));
    MPT_TRY(check_caps(plan, devices, ndevices));
    if (ranks && ranks->nranks > 1)
        for (size_t d = 0; d < ndevices; d++)
            if (ranks->device_rank[d] < 0 || ranks->device_rank[d] >= ranks->nranks ||
                (ranks->device_rank[d] == ranks->rank) != (devices[d] != NULL))
                return mpt__fail(MPT_ERR_INVALID, "device %zu: in rank %d of %d, %s here", d,
                                 ranks->device_rank[d], ranks->nranks,
                                 devices[d] ? "opened" : "not opened");
    if (!(e = calloc(1, sizeof *e))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->go, NULL);
    pthread_cond_init(&e->done, NULL);
    e->m = m, e->plan = plan, e->batch = batch, e->microbatches = plan->microbatches;
    e->nreplicas = plan->nreplicas, e->pipe_1f1b = plan->schedule == MPT__PIPE_1F1B;
    e->topo = topo, e->cluster = cluster;
    e->nranks = ranks && ranks->nranks > 1 ? ranks->nranks : 1;
    e->rank = e->nranks > 1 ? ranks->rank : 0;
    for (size_t r = 0; r < e->nreplicas; r++)
        for (size_t s = 0; s < plan->replicas[r].nstages; s++) {
            e->nworkers += plan->replicas[r].stages[s].ndevices;
            e->any_tp |= plan->replicas[r].stages[s].ndevices > 1;
        }
    if (!(e->w = calloc(e->nworkers, sizeof *e->w)) ||
        !(e->rep_first = calloc(e->nreplicas, sizeof *e->rep_first)) ||
        !(e->rep_samples = calloc(e->nreplicas, sizeof *e->rep_samples)) ||
        !(e->all_members = calloc(e->nworkers, sizeof *e->all_members)) ||
        !(init = malloc((m->param_floats ? m->param_floats : 1) * sizeof *init))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    MPT_TRY(split_batch(e));
    MPT_TRY(check_zero(e));
    MPT_TRY(alloc_tags(e));
    MPT_TRY(mpt__eng_make_transport(e, ranks));
    mpt__model_init_params(m, seed, init);
    MPT_TRY(set_blas_threads(plan, devices, ndevices));
    /* CLBlast's caches are filled from one thread before workers use it
     * concurrently (device/blas.c). */
    for (size_t i = 0; i < ndevices; i++)
        if (devices[i])
            MPT_TRY(mpt__device_blas_warmup(devices[i]));
    /* Peaks count from here: what the engine holds, not what came before. */
    for (size_t i = 0; i < ndevices; i++)
        if (devices[i])
            mpt_device_reset_peak(devices[i]);
    size_t k = 0;
    for (size_t r = 0; r < e->nreplicas; r++) {
        const mpt__plan_replica_t *rep = &plan->replicas[r];
        size_t max_mb = (e->rep_samples[r] + e->microbatches - 1) / e->microbatches;
        for (size_t s = 0; s < rep->nstages; s++) {
            const mpt__plan_stage_t *st = &rep->stages[s];
            /* Workers are numbered replica by replica, stage by stage,
             * member by member: the neighbouring groups start at base -
             * tp_prev and base + tp. */
            size_t base = k, tp = st->ndevices;
            size_t tp_prev = s > 0 ? rep->stages[s - 1].ndevices : 0;
            size_t tp_next = s + 1 < rep->nstages ? rep->stages[s + 1].ndevices : 0;
            for (size_t g = 0; g < tp; g++, k++)
                MPT_TRY(mpt__eng_make_worker(e, &e->w[k], r, s, g, base, tp_prev, tp_next, max_mb,
                                    devices, seed, init));
        }
    }
    MPT_TRY(mpt__eng_pair_tied(e));
    /* Data parallelism: each worker's all-reduce segments and reducer. */
    if (e->nreplicas > 1 && e->any_tp)
        MPT_TRY(mpt__eng_check_alike(e));
    if (e->nranks > 1)
        MPT_TRY(mpt__eng_assign_owners(e));
    for (size_t i = 0; e->nreplicas > 1 && i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        if (!w->local)
            continue;
        MPT_TRY(e->any_tp ? mpt__eng_make_aligned_segment(e, w) : mpt__eng_make_segments(e, w));
        if (e->zero)
            MPT_TRY(mpt__eng_zero_setup(e, w));
        w->qcap = 2 * (w->nsegs + m->nlayers) + 2; /* buckets per step, at most */
        if (!(w->queue = calloc(w->qcap, sizeof *w->queue)) ||
            !(w->maps = calloc(w->qcap, sizeof *w->maps))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (w->nsegs) {
            if (pthread_create(&w->reducer, NULL, mpt__eng_reducer_main, w) != 0) {
                status = mpt__fail(MPT_ERR_NOMEM, "cannot start a reducer thread");
                goto out;
            }
            w->reducer_started = 1;
        }
    }
    for (size_t i = 0; i < e->nworkers; i++) {
        if (!e->w[i].local)
            continue;
        if (pthread_create(&e->w[i].thread, NULL, mpt__eng_worker_main, &e->w[i]) != 0) {
            status = mpt__fail(MPT_ERR_NOMEM, "cannot start worker thread %zu", i);
            goto out;
        }
        e->w[i].thread_started = 1;
    }
out:
    free(init);
    if (status < 0) {
        mpt__engine_free(e);
        e = NULL;
    }
    *out = e;
    return status;
}

void mpt__engine_free(mpt__engine_t *e)
{
    if (!e)
        return;
    if (e->w) {
        int any = 0;
        for (size_t i = 0; i < e->nworkers; i++)
            any |= e->w[i].thread_started;
        if (any) {
            pthread_mutex_lock(&e->lock);
            e->kind = JOB_QUIT;
            e->generation++;
            pthread_cond_broadcast(&e->go);
            pthread_mutex_unlock(&e->lock);
            for (size_t i = 0; i < e->nworkers; i++)
                if (e->w[i].thread_started)
                    pthread_join(e->w[i].thread, NULL);
        }
        for (size_t i = 0; i < e->nworkers; i++) {
            worker_t *w = &e->w[i];
            if (w->reducer_started) {
                pthread_mutex_lock(&w->rlock);
                w->rquit = 1;
                pthread_cond_broadcast(&w->rcond);
                pthread_mutex_unlock(&w->rlock);
                pthread_join(w->reducer, NULL);
            }
            if (w->e) {
                pthread_mutex_destroy(&w->rlock);
                pthread_cond_destroy(&w->rcond);
            }
            for (size_t k = 0; k < w->nsegs; k++) {
                free(w->segs[k].members);
                free(w->segs[k].node);
                free(w->segs[k].bounds);
            }
            free(w->segs);
            free(w->queue);
            free(w->maps);
            free(w->gbuf);
            free(w->zgrad);
            free(w->tied_buf);
            free(w->fwd_stage);
            free(w->bwd_stage);
            free(w->recv_stage);
            free(w->sends);
            free(w->fwd_to);
            free(w->bwd_to);
            mpt__spans_free(&w->spans);
            mpt__spans_free(&w->rspans);
            mpt__executor_free(w->ex);
            mpt__shard_free(w->shard);
        }
    }
    if (e->t)
        mpt__transport_destroy(e->t);
    free(e->w);
    free(e->rep_first);
    free(e->rep_samples);
    free(e->all_members);
    free(e->ctl_members);
    free(e->owner);
    free(e->owned);
    free(e->results);
    free(e->pack);
    mpt__spans_free(&e->host_spans);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->go);
    pthread_cond_destroy(&e->done);
    free(e);
}

/* ---- jobs ------------------------------------------------------------------------ */

/* MPT_FAIL_NONFINITE=STEP[,STEP...]: whether training step `step`
 * (1-based) is one whose gradients the test hook makes NaN. */
static int nonfinite_injected(uint64_t step)
{
    const char *p = mpt__env(MPT_ENV_FAIL_NONFINITE);
    while (*p) {
        char *end = NULL;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p)
            return 0;
        if (v == step)
            return 1;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

int mpt__engine_train_step(mpt__engine_t *e, const float *x, const int32_t *y,
                           const mpt__optim_cfg_t *opt, float lr, uint64_t updates,
                           double *loss, double *grad_norm, int *skipped)
{
    e->x = x, e->y = y, e->opt = opt, e->lr = lr, e->updates = updates;
    e->inject_nonfinite = nonfinite_injected(e->step + 1);
    int status = mpt__eng_run_job(e, JOB_TRAIN);
    double sum = 0;
    *grad_norm = 0, *skipped = 0;
    for (size_t i = 0; i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        if (w->next < 0 && w->member == 0) /* the loss is replicated in a group */
            sum += w->loss_sum;
        if ((opt->clip_norm > 0 || opt->skip_nonfinite) && i == 0)
            *grad_norm = w->norm;
        if (w->local) /* every worker decided alike, from the same reduced values */
            *skipped |= w->skipped;
        w->stats.step_s = w->step_s;
    }
    *loss = sum / (double)(e->batch * e->m->labels_per_sample);
    if (status == MPT_OK)
        e->step++;
    return status;
}

int mpt__engine_evaluate(mpt__engine_t *e, const float *x, const int32_t *y, size_t count,
                         double *loss_sum, double *correct)
{
    if (!e) /* a trainer whose engine is gone (no device left) */
        return mpt__fail(MPT_ERR_ABORTED, "no engine: its devices failed");
    e->x = x, e->y = y, e->count = count;
    int status = mpt__eng_run_job(e, JOB_EVAL);
    *loss_sum = 0, *correct = 0;
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].replica == 0 && e->w[i].next < 0 && e->w[i].member == 0)
            *loss_sum += e->w[i].loss_sum, *correct += e->w[i].correct;
    return status;
}

/* The worker that writes the logits: member 0 of replica 0's last stage. */
static const worker_t *logits_worker(const mpt__engine_t *e)
{
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].replica == 0 && e->w[i].next < 0 && e->w[i].member == 0)
            return &e->w[i];
    return NULL;
}

int mpt__engine_logits(mpt__engine_t *e, const float *x, size_t count, float *logits)
{
    if (!e)
        return mpt__fail(MPT_ERR_ABORTED, "no engine: its devices failed");
    e->x = x, e->y = NULL, e->count = count, e->logits = logits;
    int status = mpt__eng_run_job(e, JOB_LOGITS);
    e->logits = NULL;
    if (status == MPT_OK && e->nranks > 1) {
        /* Its rank has them; every rank gets them, as every rank gets a loss. */
        size_t bytes = count * e->m->labels_per_sample * (size_t)e->m->classes * sizeof *logits;
        mpt__group_t g = mpt__eng_ctl_group(e);
        status = mpt__broadcast(&g, logits, bytes, logits_worker(e)->rank, NULL);
    }
    return status;
}

/* ---- state ------------------------------------------------------------------------- */

/* Reads (replica 0) or writes (every replica) a whole-model state array
 * through each worker's range; `what` < 0: parameters, else an optimizer
 * slot.  The workers are idle between jobs, so the caller's thread may use
 * their devices' queues. */
static int state_io(mpt__engine_t *e, int what, float *out, const float *in)
{
    int status = MPT_OK;
    if (e->zero && what >= 0) { /* every replica holds a part of the slots */
        if (out && e->nranks > 1)
            memset(out, 0, e->m->param_floats * sizeof *out);
        for (size_t i = 0; i < e->nworkers && status == MPT_OK; i++)
            status = mpt__eng_zero_slot_io(&e->w[i], what, out, in);
        /* Across ranks each element is one worker's, the other ranks add
         * zeros: the sum is exact. */
        if (status == MPT_OK && out && e->nranks > 1) {
            mpt__group_t g = mpt__eng_ctl_group(e);
            status = mpt__allreduce(&g, out, e->m->param_floats, NULL);
        }
        return status;
    }
    for (size_t i = 0; i < e->nworkers && status == MPT_OK; i++) {
        worker_t *w = &e->w[i];
        if (!w->local)
            continue;
        if (w->shard && out && w->replica == 0) {
            /* A member's compact buffer (through gbuf, idle between jobs)
             * to and from the model's layout. */
            status = what < 0 ? mpt__executor_read_params(w->ex, w->gbuf)
                              : mpt__executor_read_slot(w->ex, what, w->gbuf);
            if (status == MPT_OK)
                mpt__shard_scatter(w->shard, w->gbuf, out);
        } else if (w->shard && in) {
            mpt__shard_gather(w->shard, in, w->gbuf);
            status = what < 0 ? mpt__executor_write_params(w->ex, w->gbuf)
                              : mpt__executor_write_slot(w->ex, what, w->gbuf);
        } else if (w->shard) {
            continue;
        } else if (out && w->replica == 0)
            status = what < 0 ? mpt__executor_read_params(w->ex, out + w->p0)
                              : mpt__executor_read_slot(w->ex, what, out + w->p0);
        else if (in) {
            status = what < 0 ? mpt__executor_write_params(w->ex, in + w->p0)
                              : mpt__executor_write_slot(w->ex, what, in + w->p0);
            /* A tied copy takes the owner's values. */
            if (status == MPT_OK && w->tied_peer >= 0 && w->tied_copy)
                status = mpt__stage_write_tied(w->ex, what, in + w->tied_first);
        }
    }
    if (status == MPT_OK && out && e->nranks > 1)
        status = mpt__eng_exchange_state(e, out);
    return status;
}

int mpt__engine_read_params(mpt__engine_t *e, float *out) { return state_io(e, -1, out, NULL); }
int mpt__engine_write_params(mpt__engine_t *e, const float *in) { return state_io(e, -1, NULL, in); }
int mpt__engine_read_slot(mpt__engine_t *e, int slot, float *out) { return state_io(e, slot & 1, out, NULL); }
int mpt__engine_write_slot(mpt__engine_t *e, int slot, const float *in) { return state_io(e, slot & 1, NULL, in); }
uint64_t mpt__engine_step(const mpt__engine_t *e) { return e->step; }
size_t mpt__engine_worker_count(const mpt__engine_t *e) { return e ? e->nworkers : 0; }

void mpt__engine_set_step(mpt__engine_t *e, uint64_t step)
{
    e->step = step;
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].local)
            mpt__executor_set_step(e->w[i].ex, step);
}

void mpt__engine_set_tracing(mpt__engine_t *e, int on)
{
    if (!e)
        return;
    if (on && !e->tracing) { /* a new trace: forget the spans of an earlier one */
        e->trace_t0 = mpt__now();
        mpt__spans_clear(&e->host_spans);
        for (size_t i = 0; i < e->nworkers; i++) {
            mpt__spans_clear(&e->w[i].spans);
            mpt__spans_clear(&e->w[i].rspans);
        }
    }
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].shard)
            mpt__shard_set_spans(e->w[i].shard, on ? &e->w[i].spans : NULL);
    e->tracing = on;
}

void mpt__engine_host_span(mpt__engine_t *e, const char *name, double t0)
{
    if (e)
        span_add(e, &e->host_spans, name, -1, t0);
}

double mpt__engine_trace_origin(const mpt__engine_t *e)
{
    return e ? e->trace_t0 : 0;
}

/* One track (tid) per worker, named by its device, and one per reducer;
 * this rank's workers only (each rank records its own); then the host's
 * (tid 2 x workers). */
int mpt__engine_trace_json(const mpt__engine_t *e, char **text)
{
    mpt__trace_t *t = NULL;
    char track[160];
    int status;
    if (!e)
        return mpt__fail(MPT_ERR_ABORTED, "no engine: its devices failed");
    MPT_TRY(mpt__trace_new(e->trace_t0, &t));
    for (size_t i = 0; i < e->nworkers; i++) {
        const worker_t *w = &e->w[i];
        if (!w->local)
            continue;
        for (int r = 0; r < (w->nsegs ? 2 : 1); r++) {
            int tid = (int)(2 * i + (size_t)r);
            /* the plan's device id: unique across the ranks of a job */
            snprintf(track, sizeof track, "device %d %s (replica %d stage %d)%s",
                     w->device, w->dev->info.name, w->replica, w->stage,
                     r ? " all-reduce" : "");
            MPT_TRY(mpt__trace_track(t, 0, tid, NULL, track));
            MPT_TRY(mpt__trace_spans(t, 0, tid, r ? "comm" : "compute",
                                     r ? &w->rspans : &w->spans));
        }
    }
    int host = (int)(2 * e->nworkers);
    MPT_TRY(mpt__trace_track(t, 0, host, NULL, "host (training loop)"));
    MPT_TRY(mpt__trace_spans(t, 0, host, "host", &e->host_spans));
    status = mpt__trace_dump(t, text);
out:
    mpt__trace_free(t);
    return status;
}

mpt_device_t *mpt__engine_worker_device(const mpt__engine_t *e, size_t i)
{
    return i < e->nworkers && e->w[i].local ? e->w[i].dev : NULL;
}

const mpt__engine_device_stats_t *mpt__engine_device_stats(const mpt__engine_t *e, size_t i)
{
    return i < e->nworkers ? &e->w[i].stats : NULL;
}
