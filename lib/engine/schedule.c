/*
 * engine/schedule.c: what a worker does in a job.  A training step runs the
 * stage's micro-batches in the plan's schedule (GPipe or 1F1B), receiving
 * activations from the previous stage and gradients from the next, sending
 * its own on, handing finished gradients to the data-parallel reducer
 * (data_parallel.c) and exchanging a tied weight's gradient (tied.c), then
 * clips and updates; an evaluation or a logits job runs forward only
 * through replica 0's pipeline.
 */
#include <math.h>
#include <string.h>

#include "engine/engine_impl.h"

/* Samples of micro-batch j of a share of n samples over m micro-batches:
 * the first n % m get one more.  *offset is its first sample in the share. */
static size_t mb_size(size_t n, size_t m, size_t j, size_t *offset)
{
    size_t base = n / m, extra = n % m;
    if (offset)
        *offset = j * base + (j < extra ? j : extra);
    return base + (j < extra);
}

int mpt__eng_send_async(worker_t *w, int peer, int tag, const float *buf, size_t floats)
{
    mpt__request_t *req = NULL;
    int status = mpt__isend(w->e->t, w->index, peer, tag, buf, floats * sizeof *buf, &req);
    if (status == MPT_OK)
        w->sends[w->nsends++] = req;
    return status;
}

int mpt__eng_wait_sends(worker_t *w)
{
    int status = MPT_OK;
    for (size_t i = 0; i < w->nsends; i++) {
        int s = mpt__wait(w->e->t, w->sends[i]);
        status = status < 0 ? status : s;
    }
    w->nsends = 0;
    return status;
}

static int forward_mb(worker_t *w, size_t j, size_t share, size_t share_first)
{
    mpt__engine_t *e = w->e;
    size_t off = 0, n = mb_size(share, e->microbatches, j, &off), slot = j % w->slots;
    size_t in = mpt__stage_in_floats(w->ex), out = mpt__stage_out_floats(w->ex);
    int status;
    double t0 = mpt__now();
    if (w->prev < 0) {
        MPT_TRY(mpt__stage_put_input(w->ex, slot, e->x + (share_first + off) * in, n));
    } else {
        float *r = w->recv_stage;
        MPT_TRY(mpt__recv(e->t, w->index, w->prev, e->tags.act, r, n * in * sizeof *r));
        span_add(e, &w->spans, "recv", (int)j, t0);
        w->stats.p2p_s += mpt__now() - t0;
        t0 = mpt__now();
        MPT_TRY(mpt__stage_put_input(w->ex, slot, r, n));
    }
    if (w->next < 0)
        MPT_TRY(mpt__stage_put_labels(w->ex, slot,
                                      e->y + (share_first + off) * e->m->labels_per_sample, n));
    /* Dropout draws the masks of the samples' places in the whole batch. */
    MPT_TRY(mpt__stage_set_first_sample(w->ex, slot, share_first + off));
    MPT_TRY(mpt__stage_forward(w->ex, slot, n, 1));
    if (w->next >= 0) {
        float *s = w->fwd_stage + j * w->max_mb * out;
        MPT_TRY(mpt__stage_get_output(w->ex, slot, s, n));
        for (size_t k = 0; k < w->nfwd_to; k++)
            MPT_TRY(mpt__eng_send_async(w, w->fwd_to[k], e->tags.act, s, n * out));
    }
    span_add(e, &w->spans, "forward", (int)j, t0);
    w->stats.forward_s += mpt__now() - t0;
out:
    return status;
}

static int backward_mb(worker_t *w, size_t j, size_t share, bucket_ctx_t *bucket)
{
    mpt__engine_t *e = w->e;
    size_t n = mb_size(share, e->microbatches, j, NULL), slot = j % w->slots;
    size_t in = mpt__stage_in_floats(w->ex), out = mpt__stage_out_floats(w->ex);
    int status, last_mb = j + 1 == e->microbatches, zero2 = e->zero == 2;
    double t0 = mpt__now();
    /* ZeRO-2: the previous micro-batch's reduce-scatters still read the
     * host copy this backward's gradients go to (a wait for the reducer,
     * counted as such). */
    if (zero2 && bucket && j > 0) {
        MPT_TRY(mpt__eng_reducer_drain(w));
        w->stats.reduce_wait_s += mpt__now() - t0;
        t0 = mpt__now();
    }
    if (w->next >= 0) {
        float *r = w->recv_stage;
        MPT_TRY(mpt__recv(e->t, w->index, w->next, e->tags.grad, r, n * out * sizeof *r));
        span_add(e, &w->spans, "recv", (int)j, t0);
        w->stats.p2p_s += mpt__now() - t0;
        t0 = mpt__now();
        MPT_TRY(mpt__stage_put_dy(w->ex, r, n));
    }
    /* The last micro-batch's backward finishes each layer's gradients:
     * with replicas, buckets leave for the reducer as it goes (ZeRO-2:
     * every micro-batch's, summed on the host instead of the device). */
    mpt__stage_set_layer_hook(w->ex, (last_mb || zero2) && bucket ? mpt__eng_layer_done : NULL,
                              bucket);
    float scale = 1.0f / (float)(e->batch * e->m->labels_per_sample); /* the mean over labels */
    status = mpt__stage_backward(w->ex, slot, n, scale, j > 0 && !zero2, w->prev >= 0);
    mpt__stage_set_layer_hook(w->ex, NULL, NULL);
    if (status < 0)
        goto out;
    if (bucket && bucket->status < 0) {
        status = bucket->status;
        goto out;
    }
    if (zero2 && bucket) /* what the hook did not flush yet (the first layers) */
        MPT_TRY(mpt__eng_flush_grads(w, bucket));
    /* A training forward leaves the loss rows to the backward (the loss
     * layer computes them with the gradient). */
    if (w->next < 0 && !w->late_loss) {
        double sum = 0;
        MPT_TRY(mpt__stage_loss_sum(w->ex, slot, n, &sum));
        w->loss_sum += sum;
    }
    if (w->prev >= 0) {
        float *s = w->bwd_stage + j * w->max_mb * in;
        MPT_TRY(mpt__stage_get_dx(w->ex, s, n));
        for (size_t k = 0; k < w->nbwd_to; k++)
            MPT_TRY(mpt__eng_send_async(w, w->bwd_to[k], e->tags.grad, s, n * in));
    }
    span_add(e, &w->spans, "backward", (int)j, t0);
    w->stats.backward_s += mpt__now() - t0;
out:
    return status;
}

/* The schedule of this stage: GPipe (every forward, then every backward)
 * or 1F1B (pp - stage - 1 forwards to fill the pipeline, then one forward
 * and one backward in turn, then the remaining backwards).  Both run the
 * backwards in micro-batch order, so gradients add up in the same order
 * whatever the schedule. */
static int run_schedule(worker_t *w, size_t share, size_t share_first, bucket_ctx_t *bucket)
{
    mpt__engine_t *e = w->e;
    size_t m = e->microbatches, pp = e->plan->replicas[w->replica].nstages;
    size_t warm = e->pipe_1f1b ? pp - (size_t)w->stage - 1 : m;
    int status = MPT_OK;
    if (warm > m)
        warm = m;
    for (size_t j = 0; j < warm; j++)
        MPT_TRY(forward_mb(w, j, share, share_first));
    for (size_t i = 0; i < m - warm; i++) {
        MPT_TRY(forward_mb(w, warm + i, share, share_first));
        MPT_TRY(backward_mb(w, i, share, bucket));
    }
    for (size_t j = m - warm; j < m; j++)
        MPT_TRY(backward_mb(w, j, share, bucket));
out:
    return status;
}

/* Global gradient norm: replica 0's stages hold every element once; under
 * ZeRO each worker's shards do (*shard_sumsq, summed on the host).  With
 * `with_loss`, the same reduction says whether any last stage's loss is
 * not finite (*bad_loss): one message decides the non-finite guard. */
static int grad_norm(worker_t *w, const double *shard_sumsq, int with_loss, double *norm,
                     int *bad_loss)
{
    mpt__engine_t *e = w->e;
    double sumsq = 0;
    int status = MPT_OK;
    if (shard_sumsq)
        sumsq = *shard_sumsq;
    else if (w->replica == 0)
        MPT_TRY(mpt__stage_grad_sumsq(w->ex, &sumsq));
    float v[2] = {(float)sumsq, w->next < 0 && !isfinite(w->loss_sum) ? 1.0f : 0.0f};
    if (e->nworkers == 1) { /* exactly the one-device executor's norm */
        *norm = (float)sqrt(sumsq);
        *bad_loss = with_loss && v[1] > 0;
        return MPT_OK;
    }
    mpt__group_t g = {e->t, e->all_members, (int)e->nworkers, w->index, e->tags.norm, NULL};
    MPT_TRY(mpt__allreduce(&g, v, with_loss ? 2 : 1, NULL));
    *norm = (float)sqrt((double)v[0]);
    *bad_loss = with_loss && v[1] > 0;
out:
    return status;
}

/* The last stage's loss rows of every micro-batch, read back late
 * (worker_t.late_loss): `start` queues the reads, `finish` waits for them
 * and adds them up. */
static int late_losses(worker_t *w, size_t share, int start, int finish)
{
    mpt__engine_t *e = w->e;
    int status = MPT_OK;
    for (size_t j = 0; w->late_loss && start && j < e->microbatches; j++)
        MPT_TRY(mpt__stage_loss_start(w->ex, j, mb_size(share, e->microbatches, j, NULL)));
    for (size_t j = 0; w->late_loss && finish && j < e->microbatches; j++) {
        double sum = 0;
        MPT_TRY(mpt__stage_loss_sum(w->ex, j, mb_size(share, e->microbatches, j, NULL), &sum));
        w->loss_sum += sum;
    }
out:
    return status;
}

int mpt__eng_train_job(worker_t *w)
{
    mpt__engine_t *e = w->e;
    size_t share = e->rep_samples[w->replica], share_first = e->rep_first[w->replica];
    bucket_ctx_t bucket = {w, 0, 0, NULL, MPT_OK};
    double zero_sumsq = 0; /* ZeRO: this worker's shards' part of the squared norm */
    unsigned long kernels0 = w->dev->launches, blas0 = w->dev->blas_calls;
    int status;
    w->loss_sum = 0;
    w->stats.allreduce_s = 0, w->stats.allreduce_bytes = 0;
    /* The phases of this step (calibration): each span below is timed
     * where the host waits, so together they make the step. */
    w->stats.forward_s = w->stats.backward_s = w->stats.p2p_s = 0;
    w->stats.reduce_wait_s = w->stats.update_s = 0;
    w->stats.allreduce_wait_s = w->stats.allreduce_transfer_s = 0;
    mpt__comm_take_times(); /* this step's waits only */
    double t0;
    if (w->shard) /* forget what evaluations moved */
        mpt__shard_take_comm(w->shard, &w->stats.tp_s, &w->stats.tp_bytes);
    mpt__executor_set_step(w->ex, e->step);
    w->tied_added = 0;
    if (w->zgrad) /* ZeRO-2: the sums over this step's micro-batches start afresh */
        memset(w->zgrad, 0, w->np * sizeof *w->zgrad);
    MPT_TRY(run_schedule(w, share, share_first, w->nsegs ? &bucket : NULL));
    t0 = mpt__now();
    if (w->tied_peer >= 0 && w->tied_copy)
        MPT_TRY(mpt__eng_tied_send_copy(w));
    MPT_TRY(mpt__eng_tied_take_copy(w)); /* an owner the hook did not call (no replicas) */
    w->stats.p2p_s += mpt__now() - t0;
    t0 = mpt__now();
    if (w->nsegs) {
        /* What the hook did not flush yet (the stage's first layers). */
        MPT_TRY(mpt__eng_flush_grads(w, &bucket));
        MPT_TRY(mpt__eng_reducer_drain(w));
        if (e->zero)
            MPT_TRY(mpt__eng_zero_grads(w, &zero_sumsq));
        else if (!mpt__eng_reduce_in_place(w)) /* in place: the sums are there already */
            MPT_TRY(mpt__executor_write_grads(w->ex, w->gbuf));
    }
    w->stats.reduce_wait_s += mpt__now() - t0;
    if (w->nsegs)
        span_add(e, &w->spans, "reduce-wait", -1, t0);
    t0 = mpt__now();
    int sending = w->nsends > 0 || w->tied_peer >= 0; /* a span only when there is a wait */
    if (w->tied_peer >= 0 && !w->tied_copy)
        MPT_TRY(mpt__eng_tied_send_sum(w));
    MPT_TRY(mpt__eng_wait_sends(w));
    if (w->tied_peer >= 0 && w->tied_copy)
        MPT_TRY(mpt__eng_tied_take_sum(w));
    w->stats.p2p_s += mpt__now() - t0;
    if (sending)
        span_add(e, &w->spans, "send-wait", -1, t0);
    t0 = mpt__now();
    if (e->inject_nonfinite) { /* MPT_FAIL_NONFINITE: as a diverging step's gradients */
        MPT_TRY(mpt__stage_scale_grads(w->ex, NAN));
        zero_sumsq = NAN;
    }
    /* The non-finite guard decides before any device updates, from the
     * reduced norm and loss, so every worker decides alike; it needs the
     * loss first.  Otherwise the loss rows leave before the update is
     * queued and are waited for after: the host then waits for those
     * reads only, and the update (one launch over the stage's flat
     * buffers) runs while the step returns. */
    int guard = e->opt->skip_nonfinite;
    w->skipped = 0;
    if (guard)
        MPT_TRY(late_losses(w, share, 1, 1));
    if (e->opt->clip_norm > 0 || guard) {
        double norm = 0;
        int bad_loss = 0;
        MPT_TRY(grad_norm(w, e->zero ? &zero_sumsq : NULL, guard, &norm, &bad_loss));
        w->skipped = guard && (!isfinite(norm) || bad_loss);
        double coef = (double)e->opt->clip_norm / (norm + 1e-6);
        if (!w->skipped && e->opt->clip_norm > 0 && coef < 1.0)
            MPT_TRY(mpt__stage_scale_grads(w->ex, (float)coef));
        w->norm = norm;
    }
    if (!guard)
        MPT_TRY(late_losses(w, share, 1, 0));
    mpt__executor_set_updates(w->ex, e->updates);
    if (!w->skipped && e->zero)
        MPT_TRY(mpt__eng_zero_update(w));
    else if (!w->skipped)
        MPT_TRY(mpt__stage_update(w->ex, e->opt, e->lr));
    if (!guard)
        MPT_TRY(late_losses(w, share, 0, 1));
    w->stats.kernels = w->dev->launches - kernels0;
    w->stats.blas_calls = w->dev->blas_calls - blas0;
    w->stats.update_s += mpt__now() - t0;
    span_add(e, &w->spans, "update", -1, t0);
    uint64_t used, peak; /* what the step held on the device, against the plan */
    mpt_device_memory(w->dev, &used, &peak);
    w->stats.memory_bytes = (size_t)used, w->stats.peak_memory_bytes = (size_t)peak;
    mpt__comm_times_t ct = mpt__comm_take_times();
    w->stats.peer_wait_s = ct.wait_s, w->stats.transfer_s = ct.transfer_s;
    if (w->shard)
        mpt__shard_take_comm(w->shard, &w->stats.tp_s, &w->stats.tp_bytes);
out:
    if (bucket.read) /* ZeRO-2: a read not handed over */
        clReleaseEvent(bucket.read);
    if (status < 0) {
        /* Abort first: pending sends and the reducer's rings then return
         * at once instead of waiting for peers that will never come. */
        mpt__eng_worker_fail(w, status);
        mpt__eng_wait_sends(w);
        int rs = w->nsegs ? mpt__eng_reducer_drain(w) : MPT_OK;
        /* A worker that only saw the abort reports the reducer's cause. */
        if (w->status == MPT_ERR_ABORTED && rs < 0 && rs != MPT_ERR_ABORTED) {
            w->status = status = rs;
            snprintf(w->error, sizeof w->error, "%s", mpt_last_error());
        }
    }
    return status;
}

/* Evaluation (JOB_EVAL: loss and correct counts) or the logits
 * (JOB_LOGITS: member 0 of the last stage writes them) through replica 0's
 * pipeline, in chunks of a micro-batch. */
int mpt__eng_eval_job(worker_t *w, job_kind_t kind)
{
    mpt__engine_t *e = w->e;
    size_t in = mpt__stage_in_floats(w->ex), out = mpt__stage_out_floats(w->ex);
    size_t lps = e->m->labels_per_sample, row = lps * (size_t)e->m->classes;
    int status = MPT_OK;
    w->loss_sum = 0, w->correct = 0;
    if (w->replica != 0)
        return MPT_OK;
    for (size_t first = 0; first < e->count; first += w->max_mb) {
        size_t n = e->count - first < w->max_mb ? e->count - first : w->max_mb;
        if (w->prev < 0) {
            MPT_TRY(mpt__stage_put_input(w->ex, 0, e->x + first * in, n));
        } else {
            MPT_TRY(mpt__recv(e->t, w->index, w->prev, e->tags.eval, w->recv_stage,
                              n * in * sizeof(float)));
            MPT_TRY(mpt__stage_put_input(w->ex, 0, w->recv_stage, n));
        }
        /* Without labels (logits) the loss layer runs on whatever labels
         * the slot holds: its rows are not read. */
        if (w->next < 0 && kind == JOB_EVAL)
            MPT_TRY(mpt__stage_put_labels(w->ex, 0, e->y + first * lps, n));
        MPT_TRY(mpt__stage_forward(w->ex, 0, n, 0));
        if (w->next >= 0) {
            MPT_TRY(mpt__stage_get_output(w->ex, 0, w->fwd_stage, n));
            for (size_t k = 0; k < w->nfwd_to; k++)
                MPT_TRY(mpt__send(e->t, w->index, w->fwd_to[k], e->tags.eval, w->fwd_stage,
                                  n * out * sizeof(float)));
        } else if (kind == JOB_LOGITS) {
            if (w->member == 0) /* every member of a group holds the whole logits */
                MPT_TRY(mpt__stage_get_logits(w->ex, 0, e->logits + first * row, n));
        } else {
            double sum = 0, hits = 0;
            MPT_TRY(mpt__stage_loss_sum(w->ex, 0, n, &sum));
            MPT_TRY(mpt__stage_correct(w->ex, 0, n, &hits));
            /* per sample, the mean over its labels (positions) */
            double lps = (double)e->m->labels_per_sample;
            w->loss_sum += sum / lps, w->correct += hits / lps;
        }
    }
out:
    return status;
}
