/*
 * engine/engine.c: a plan on several devices (see engine.h).
 *
 * Threads: the caller's thread posts a job (train step, evaluation) and
 * waits; one worker per (replica, stage) runs it on its device; with data
 * parallelism each worker has a reducer thread that all-reduces gradient
 * buckets while the worker goes on with the backward pass.
 *
 * Messages (transport endpoints = worker indices): activations forward
 * (TAG_ACT) and their gradients backward (TAG_GRAD) between neighbouring
 * stages of a replica, in micro-batch order, so constant tags match in
 * posting order; evaluation chunks (TAG_EVAL); all-reduce groups use tags
 * from TAG_GROUP up, one per parameter segment.
 *
 * Data-parallel segments: replicas may split the layers differently, so
 * the model's parameter elements are cut at every stage boundary of every
 * replica; each segment is owned by one worker per replica, which form its
 * all-reduce group.  Every reducer reduces its segments from the last to
 * the first, so groups that share a worker never wait on each other in a
 * cycle.
 *
 * Ranks (mpt__engine_create_ranks): every rank builds the whole table of
 * workers, but runs threads only for those of its own devices; endpoints
 * are the worker indices, then one control endpoint per rank, which the
 * caller's thread uses between jobs to gather the per-worker results
 * (loss, statistics) and the model's state at rank 0 and broadcast them
 * back, so that each rank sees the job as one process does.
 *
 * Tied weights across stages (lm_head on a later stage than its
 * embedding): the head's stage holds a copy (executor.c).  After its
 * backward it sends the copy's gradient to the embedding's stage, which adds
 * it to its own before that gradient leaves for the data-parallel
 * all-reduce (or, without replicas, before the update); the embedding's
 * stage then sends the summed, reduced gradient back, so both apply the same
 * update to the same values and the copy stays equal to the owner's weight.
 *
 * Failure: a worker whose job fails records the error, aborts the
 * transport (every blocked peer returns MPT_ERR_ABORTED at once) and
 * finishes the job; the caller reports the first real error with the
 * device that raised it.  An engine that failed refuses further work: its
 * replicas may be out of step.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "device/device.h"
#include "engine/engine.h"
#include "engine/shard.h"

enum { TAG_ACT = 1, TAG_GRAD = 2, TAG_EVAL = 3, TAG_NORM = 4, TAG_GATHER = 5, TAG_CTL = 6,
       TAG_TIED = 7, TAG_GROUP = 1 << 16, TAG_TP = 1 << 22 };

/* Per-worker results that ranks exchange after each job (doubles). */
enum { R_LOSS, R_CORRECT, R_NORM, R_STEP_S, R_ALLREDUCE_S, R_ALLREDUCE_BYTES, R_MEMORY,
       R_TP_S, R_TP_BYTES, R_COUNT };

/* Gradient buckets are handed to the reducer once this many bytes of
 * finished layers have gathered (or at a segment's end): large enough
 * that the ring's per-message latency is small against its bytes, small
 * enough that the first bucket leaves early in the backward pass. */
#define BUCKET_BYTES ((size_t)1 << 20)

typedef enum { JOB_NONE, JOB_TRAIN, JOB_EVAL, JOB_QUIT } job_kind_t;

typedef struct {
    size_t first, count; /* model parameter elements */
    int *members;        /* one worker per replica */
    int self, tag;
    int *node;           /* per member its rank, when the plan's all-reduce is
                          * hierarchical (comm.h); else NULL */
} segment_t;

typedef struct bucket {
    size_t first, count; /* model elements, inside one segment */
    const segment_t *seg;
    cl_event ready;      /* the read of these gradients into gbuf (owned) */
} bucket_t;

typedef struct worker worker_t;

/* One span of a real step for the Chrome trace (--trace). */
typedef struct {
    const char *name; /* "forward", "backward", "recv", "allreduce" */
    int mb;           /* micro-batch, or -1 */
    double t0, t1;    /* mpt__now() */
} span_t;

typedef struct {
    span_t *v;
    size_t n, cap;
} spans_t;

struct worker {
    mpt__engine_t *e;
    int index, replica, stage, device;
    int rank, local;           /* the rank that runs it; whether that is this one */
    int member, tp;            /* position in the stage's tensor-parallel group, its size */
    mpt_device_t *dev;
    mpt__shard_t *shard;       /* tp > 1: the member's slice of the stage */
    const mpt__model_t *model; /* what the executor runs: the model, or the shard's */
    mpt__executor_t *ex;
    size_t p0, np;             /* its parameter elements (of `model`) */
    size_t slots, max_mb;
    int prev, next;            /* the workers it receives activations and gradients
                                * from, -1 at the ends */
    int *fwd_to, *bwd_to;      /* the workers it sends activations and gradients to */
    size_t nfwd_to, nbwd_to;
    segment_t *segs;
    size_t nsegs;
    int tied_peer;             /* the worker of this replica on the other side of a
                                * tied weight, -1 for none */
    int tied_copy;             /* 1: this one holds the copy; 0: the owner */
    int tied_owner_layer;      /* the owner: the layer whose backward finishes it */
    size_t tied_first, tied_count; /* the tied model elements */
    float *tied_buf;           /* their gradient, on the host */
    int tied_added;            /* the owner: the copy's gradient is in, this step */
    float *gbuf;               /* host copy of its gradients (np) */
    float *fwd_stage;          /* outgoing activations: one region per micro-batch */
    float *bwd_stage;          /* outgoing gradients: one region per micro-batch, apart
                                * from the activations, since 1F1B interleaves both and
                                * a send's buffer must stay unchanged until received */
    float *recv_stage;
    mpt__request_t **sends;
    size_t nsends;
    pthread_t thread;
    int thread_started;
    /* reducer */
    pthread_t reducer;
    int reducer_started, rquit;
    pthread_mutex_t rlock;
    pthread_cond_t rcond;
    bucket_t *queue;
    size_t qhead, qtail, qcap;
    int rstatus;
    char rerror[512];
    spans_t spans, rspans;     /* the worker's and its reducer's (tracing only) */
    /* results of the job */
    int status;
    char error[512];
    double loss_sum, correct, norm, step_s;
    mpt__engine_device_stats_t stats;
};

struct mpt__engine {
    const mpt__model_t *m;
    const mpt__plan_t *plan;
    size_t batch, microbatches, nreplicas, nworkers;
    uint64_t step;
    int pipe_1f1b;
    mpt__transport_t *t;
    worker_t *w;
    size_t *rep_first, *rep_samples; /* per replica: offset and size of its share */
    const mpt_topology_t *topo;
    const mpt_cluster_t *cluster;
    int failed;
    /* the current job */
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned long generation;
    size_t finished;
    job_kind_t kind;
    const float *x;
    const int32_t *y;         /* m->labels_per_sample labels per sample */
    size_t count;
    const mpt__optim_cfg_t *opt;
    float lr;
    int *all_members;
    int any_tp;               /* some stage has a tensor-parallel group */
    int tracing;
    double trace_t0;
    /* across ranks (nranks > 1) */
    int rank, nranks;
    size_t nlocal;            /* workers of this rank */
    int *ctl_members;         /* the ranks' control endpoints: nworkers + r */
    int *owner;               /* per model parameter element: the rank that reads it */
    size_t *owned;            /* per rank: how many elements it owns */
    double *results;          /* nworkers x R_COUNT, then as much scratch */
    float *pack;              /* the largest rank's owned elements */
};

/* Records a span when tracing; a failed allocation drops it (a trace is
 * diagnostic). */
static void span_add(const mpt__engine_t *e, spans_t *s, const char *name, int mb, double t0)
{
    if (!e->tracing)
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        span_t *grown = realloc(s->v, cap * sizeof *grown);
        if (!grown)
            return;
        s->v = grown, s->cap = cap;
    }
    s->v[s->n++] = (span_t){name, mb, t0, mpt__now()};
}

/* ---- micro-batches ----------------------------------------------------------- */

/* Samples of micro-batch j of a share of n samples over m micro-batches:
 * the first n % m get one more.  *offset is its first sample in the share. */
static size_t mb_size(size_t n, size_t m, size_t j, size_t *offset)
{
    size_t base = n / m, extra = n % m;
    if (offset)
        *offset = j * base + (j < extra ? j : extra);
    return base + (j < extra);
}

/* ---- errors ------------------------------------------------------------------ */

/* Records a worker's failure once and wakes every peer. */
static int worker_fail(worker_t *w, int status)
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

/* ---- the reducer thread ------------------------------------------------------- */

static void *reducer_main(void *arg)
{
    worker_t *w = arg;
    pthread_mutex_lock(&w->rlock);
    for (;;) {
        while (w->qhead == w->qtail && !w->rquit)
            pthread_cond_wait(&w->rcond, &w->rlock);
        if (w->qhead == w->qtail) /* told to quit, nothing left */
            break;
        bucket_t b = w->queue[w->qhead % w->qcap];
        int skip = w->rstatus < 0; /* after a failure: drain without reducing */
        pthread_mutex_unlock(&w->rlock);
        int status = MPT_OK;
        if (b.ready) {
            cl_int err = clWaitForEvents(1, &b.ready);
            clReleaseEvent(b.ready);
            if (err != CL_SUCCESS && !skip)
                status = mpt__fail_cl(err, "reading gradients of device %d for the all-reduce",
                                      w->dev->info.index);
        }
        if (b.seg && status == MPT_OK && !skip) {
            mpt__group_t g = {w->e->t, b.seg->members, (int)w->e->nreplicas, b.seg->self,
                              b.seg->tag, b.seg->node};
            mpt__coll_stats_t cs = {0};
            double t0 = mpt__now();
            status = mpt__allreduce(&g, w->gbuf + (b.first - w->p0), b.count, &cs);
            w->stats.allreduce_s += mpt__now() - t0;
            span_add(w->e, &w->rspans, "allreduce", -1, t0);
            w->stats.allreduce_bytes += b.count * sizeof(float);
        }
        if (status < 0 && status != MPT_ERR_ABORTED) {
            /* The peers of this ring (and of later ones) must not wait for
             * a member that gave up, even before its ring began. */
            char why[600];
            snprintf(why, sizeof why, "device %d (%s), replica %d stage %d, all-reduce: %s",
                     w->dev->info.index, w->dev->info.name, w->replica, w->stage,
                     mpt_last_error());
            mpt__transport_abort(w->e->t, status, why);
        }
        pthread_mutex_lock(&w->rlock);
        if (status < 0 && w->rstatus == MPT_OK) {
            w->rstatus = status;
            snprintf(w->rerror, sizeof w->rerror, "%s", mpt_last_error());
        }
        w->qhead++;
        pthread_cond_broadcast(&w->rcond);
    }
    pthread_mutex_unlock(&w->rlock);
    return NULL;
}

static void reducer_push(worker_t *w, bucket_t b)
{
    pthread_mutex_lock(&w->rlock);
    /* qcap is at least the buckets of one step (segments plus layers):
     * the queue is drained every step, so it never overflows. */
    w->queue[w->qtail++ % w->qcap] = b;
    pthread_cond_broadcast(&w->rcond);
    pthread_mutex_unlock(&w->rlock);
}

/* Waits until the reducer has done every bucket; its status. */
static int reducer_drain(worker_t *w)
{
    pthread_mutex_lock(&w->rlock);
    while (w->qhead != w->qtail)
        pthread_cond_wait(&w->rcond, &w->rlock);
    int status = w->rstatus;
    if (status < 0)
        mpt__fail(status, "%s", w->rerror);
    w->rstatus = MPT_OK;
    pthread_mutex_unlock(&w->rlock);
    return status;
}

/* ---- one training step on one worker ------------------------------------------ */

/* Hands the finished gradients [first, end) (model elements) to the
 * reducer, cut at segment boundaries.  The read into host memory is
 * enqueued without waiting: the in-order queue runs it after the backward
 * kernels that wrote them, the worker goes on enqueuing the earlier layers
 * at once, and the reducer waits for the read's event. */
static int flush_grads(worker_t *w, size_t first, size_t end)
{
    mpt_buffer_t *g = mpt__executor_grads_buffer(w->ex);
    cl_event ev = NULL;
    if (end <= first)
        return MPT_OK;
    cl_int err = clEnqueueReadBuffer(w->dev->queue, g->mem, CL_FALSE,
                                     (first - w->p0) * sizeof(float),
                                     (end - first) * sizeof(float), w->gbuf + (first - w->p0),
                                     0, NULL, &ev);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "reading gradients of device %d", w->dev->info.index);
    clFlush(w->dev->queue);
    /* Segments are in increasing order; buckets go out last first, each
     * holding its own reference to the read. */
    for (size_t k = w->nsegs; k-- > 0;) {
        const segment_t *s = &w->segs[k];
        size_t a = s->first > first ? s->first : first;
        size_t b = s->first + s->count < end ? s->first + s->count : end;
        if (b > a) {
            clRetainEvent(ev);
            reducer_push(w, (bucket_t){a, b - a, s, ev});
        }
    }
    clReleaseEvent(ev);
    return MPT_OK;
}

/* ---- tied weights across stages ---------------------------------------------- */

static int send_async(worker_t *w, int peer, int tag, const float *buf, size_t floats);

/* The copy's side, after its backward: its gradient to the owner. */
static int tied_send_copy(worker_t *w)
{
    int status = mpt__stage_read_tied_grads(w->ex, w->tied_buf);
    return status < 0 ? status : send_async(w, w->tied_peer, TAG_TIED, w->tied_buf, w->tied_count);
}

/* The owner's side, once its own gradient of the tied weight is final: the
 * copy's added to it (once a step). */
static int tied_take_copy(worker_t *w)
{
    int status;
    double t0 = mpt__now();
    if (w->tied_peer < 0 || w->tied_copy || w->tied_added)
        return MPT_OK;
    MPT_TRY(mpt__recv(w->e->t, w->index, w->tied_peer, TAG_TIED, w->tied_buf,
                      w->tied_count * sizeof(float)));
    MPT_TRY(mpt__stage_add_grads_at(w->ex, w->tied_first, w->tied_count, w->tied_buf));
    w->tied_added = 1;
    span_add(w->e, &w->spans, "tied", -1, t0);
out:
    return status;
}

/* The owner, after the data-parallel all-reduce: the summed gradient back
 * to the copy (from the host copy the all-reduce left, or read now). */
static int tied_send_sum(worker_t *w)
{
    int status = MPT_OK;
    const float *g = w->tied_buf;
    if (w->nsegs)
        g = w->gbuf + (w->tied_first - w->p0);
    else
        MPT_TRY(mpt__stage_read_grads_at(w->ex, w->tied_first, w->tied_count, w->tied_buf));
    status = send_async(w, w->tied_peer, TAG_TIED, g, w->tied_count);
out:
    return status;
}

/* The copy, after its own sends completed (tied_buf is free again): the
 * summed gradient replaces its own. */
static int tied_take_sum(worker_t *w)
{
    int status;
    double t0 = mpt__now();
    MPT_TRY(mpt__recv(w->e->t, w->index, w->tied_peer, TAG_TIED, w->tied_buf,
                      w->tied_count * sizeof(float)));
    MPT_TRY(mpt__stage_write_tied_grads(w->ex, w->tied_buf));
    span_add(w->e, &w->spans, "tied", -1, t0);
out:
    return status;
}

/* Called by the executor after each layer's backward of the last
 * micro-batch: once enough finished gradients have gathered, send them. */
typedef struct {
    worker_t *w;
    size_t pending_first, pending_end; /* finished, not yet handed over */
    int status;
} bucket_ctx_t;

static void layer_done(void *arg, size_t layer)
{
    bucket_ctx_t *b = arg;
    worker_t *w = b->w;
    const mpt__layer_t *l = &w->model->layers[layer];
    if (b->status < 0 || l->nparams == 0)
        return;
    /* The tied weight's gradient leaves with the copy's part in it. */
    if ((int)layer == w->tied_owner_layer && (b->status = tied_take_copy(w)) < 0)
        return;
    size_t lo = l->params[0].offset, hi = lo;
    for (int q = 0; q < l->nparams; q++) {
        size_t a = l->params[q].offset, z = a + l->params[q].numel;
        lo = a < lo ? a : lo;
        hi = z > hi ? z : hi;
    }
    if (b->pending_end == 0)
        b->pending_end = hi;
    b->pending_first = lo;
    /* A segment boundary at lo means the next layer belongs to another
     * group: flush there too. */
    int boundary = 0;
    for (size_t k = 0; k < w->nsegs; k++)
        boundary |= w->segs[k].first == lo;
    if ((b->pending_end - b->pending_first) * sizeof(float) >= BUCKET_BYTES || boundary) {
        b->status = flush_grads(w, b->pending_first, b->pending_end);
        b->pending_end = 0;
    }
}

static int send_async(worker_t *w, int peer, int tag, const float *buf, size_t floats)
{
    mpt__request_t *req = NULL;
    int status = mpt__isend(w->e->t, w->index, peer, tag, buf, floats * sizeof *buf, &req);
    if (status == MPT_OK)
        w->sends[w->nsends++] = req;
    return status;
}

static int wait_sends(worker_t *w)
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
        MPT_TRY(mpt__recv(e->t, w->index, w->prev, TAG_ACT, r, n * in * sizeof *r));
        span_add(e, &w->spans, "recv", (int)j, t0);
        t0 = mpt__now();
        MPT_TRY(mpt__stage_put_input(w->ex, slot, r, n));
    }
    if (w->next < 0)
        MPT_TRY(mpt__stage_put_labels(w->ex, slot,
                                      e->y + (share_first + off) * e->m->labels_per_sample, n));
    MPT_TRY(mpt__stage_forward(w->ex, slot, n, 1));
    if (w->next >= 0) {
        float *s = w->fwd_stage + j * w->max_mb * out;
        MPT_TRY(mpt__stage_get_output(w->ex, slot, s, n));
        for (size_t k = 0; k < w->nfwd_to; k++)
            MPT_TRY(send_async(w, w->fwd_to[k], TAG_ACT, s, n * out));
    } else {
        double sum = 0;
        MPT_TRY(mpt__stage_loss_sum(w->ex, slot, n, &sum));
        w->loss_sum += sum;
    }
    span_add(e, &w->spans, "forward", (int)j, t0);
out:
    return status;
}

static int backward_mb(worker_t *w, size_t j, size_t share, bucket_ctx_t *bucket)
{
    mpt__engine_t *e = w->e;
    size_t n = mb_size(share, e->microbatches, j, NULL), slot = j % w->slots;
    size_t in = mpt__stage_in_floats(w->ex), out = mpt__stage_out_floats(w->ex);
    int status, last_mb = j + 1 == e->microbatches;
    double t0 = mpt__now();
    if (w->next >= 0) {
        float *r = w->recv_stage;
        MPT_TRY(mpt__recv(e->t, w->index, w->next, TAG_GRAD, r, n * out * sizeof *r));
        span_add(e, &w->spans, "recv", (int)j, t0);
        t0 = mpt__now();
        MPT_TRY(mpt__stage_put_dy(w->ex, r, n));
    }
    /* The last micro-batch's backward finishes each layer's gradients:
     * with replicas, buckets leave for the reducer as it goes. */
    mpt__stage_set_layer_hook(w->ex, last_mb && bucket ? layer_done : NULL, bucket);
    float scale = 1.0f / (float)(e->batch * e->m->labels_per_sample); /* the mean over labels */
    status = mpt__stage_backward(w->ex, slot, n, scale, j > 0, w->prev >= 0);
    mpt__stage_set_layer_hook(w->ex, NULL, NULL);
    if (status < 0)
        goto out;
    if (bucket && bucket->status < 0) {
        status = bucket->status;
        goto out;
    }
    if (w->prev >= 0) {
        float *s = w->bwd_stage + j * w->max_mb * in;
        MPT_TRY(mpt__stage_get_dx(w->ex, s, n));
        for (size_t k = 0; k < w->nbwd_to; k++)
            MPT_TRY(send_async(w, w->bwd_to[k], TAG_GRAD, s, n * in));
    }
    span_add(e, &w->spans, "backward", (int)j, t0);
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

/* Global gradient norm: replica 0's stages hold every element once. */
static int grad_norm(worker_t *w, double *norm)
{
    mpt__engine_t *e = w->e;
    double sumsq = 0;
    float v;
    int status;
    if (w->replica == 0)
        MPT_TRY(mpt__stage_grad_sumsq(w->ex, &sumsq));
    if (e->nworkers == 1) { /* exactly the one-device executor's norm */
        *norm = (float)sqrt(sumsq);
        return MPT_OK;
    }
    v = (float)sumsq;
    mpt__group_t g = {e->t, e->all_members, (int)e->nworkers, w->index, TAG_NORM, NULL};
    MPT_TRY(mpt__allreduce(&g, &v, 1, NULL));
    *norm = (float)sqrt((double)v);
out:
    return status;
}

static int train_job(worker_t *w)
{
    mpt__engine_t *e = w->e;
    size_t share = e->rep_samples[w->replica], share_first = e->rep_first[w->replica];
    bucket_ctx_t bucket = {w, 0, 0, MPT_OK};
    int status;
    w->loss_sum = 0;
    w->stats.allreduce_s = 0, w->stats.allreduce_bytes = 0;
    if (w->shard) /* forget what evaluations moved */
        mpt__shard_take_comm(w->shard, &w->stats.tp_s, &w->stats.tp_bytes);
    mpt__executor_set_step(w->ex, e->step);
    w->tied_added = 0;
    MPT_TRY(run_schedule(w, share, share_first, w->nsegs ? &bucket : NULL));
    if (w->tied_peer >= 0 && w->tied_copy)
        MPT_TRY(tied_send_copy(w));
    MPT_TRY(tied_take_copy(w)); /* an owner the hook did not call (no replicas) */
    if (w->nsegs) {
        /* What the hook did not flush yet (the stage's first layers). */
        if (bucket.pending_end > 0)
            MPT_TRY(flush_grads(w, bucket.pending_first, bucket.pending_end));
        MPT_TRY(reducer_drain(w));
        MPT_TRY(mpt__executor_write_grads(w->ex, w->gbuf));
    }
    if (w->tied_peer >= 0 && !w->tied_copy)
        MPT_TRY(tied_send_sum(w));
    MPT_TRY(wait_sends(w));
    if (w->tied_peer >= 0 && w->tied_copy)
        MPT_TRY(tied_take_sum(w));
    if (e->opt->clip_norm > 0) {
        double norm = 0;
        MPT_TRY(grad_norm(w, &norm));
        double coef = (double)e->opt->clip_norm / (norm + 1e-6);
        if (coef < 1.0)
            MPT_TRY(mpt__stage_scale_grads(w->ex, (float)coef));
        w->norm = norm;
    }
    MPT_TRY(mpt__stage_update(w->ex, e->opt, e->lr));
    if (w->shard)
        mpt__shard_take_comm(w->shard, &w->stats.tp_s, &w->stats.tp_bytes);
out:
    if (status < 0) {
        /* Abort first: pending sends and the reducer's rings then return
         * at once instead of waiting for peers that will never come. */
        worker_fail(w, status);
        wait_sends(w);
        int rs = w->nsegs ? reducer_drain(w) : MPT_OK;
        /* A worker that only saw the abort reports the reducer's cause. */
        if (w->status == MPT_ERR_ABORTED && rs < 0 && rs != MPT_ERR_ABORTED) {
            w->status = status = rs;
            snprintf(w->error, sizeof w->error, "%s", mpt_last_error());
        }
    }
    return status;
}

/* Evaluation through replica 0's pipeline, in chunks of a micro-batch. */
static int eval_job(worker_t *w)
{
    mpt__engine_t *e = w->e;
    size_t in = mpt__stage_in_floats(w->ex), out = mpt__stage_out_floats(w->ex);
    int status = MPT_OK;
    w->loss_sum = 0, w->correct = 0;
    if (w->replica != 0)
        return MPT_OK;
    for (size_t first = 0; first < e->count; first += w->max_mb) {
        size_t n = e->count - first < w->max_mb ? e->count - first : w->max_mb;
        if (w->prev < 0) {
            MPT_TRY(mpt__stage_put_input(w->ex, 0, e->x + first * in, n));
        } else {
            MPT_TRY(mpt__recv(e->t, w->index, w->prev, TAG_EVAL, w->recv_stage,
                              n * in * sizeof(float)));
            MPT_TRY(mpt__stage_put_input(w->ex, 0, w->recv_stage, n));
        }
        if (w->next < 0)
            MPT_TRY(mpt__stage_put_labels(w->ex, 0, e->y + first * e->m->labels_per_sample, n));
        MPT_TRY(mpt__stage_forward(w->ex, 0, n, 0));
        if (w->next >= 0) {
            MPT_TRY(mpt__stage_get_output(w->ex, 0, w->fwd_stage, n));
            for (size_t k = 0; k < w->nfwd_to; k++)
                MPT_TRY(mpt__send(e->t, w->index, w->fwd_to[k], TAG_EVAL, w->fwd_stage,
                                  n * out * sizeof(float)));
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

static void *worker_main(void *arg)
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
        int status = kind == JOB_TRAIN ? train_job(w) : eval_job(w);
        if (status < 0)
            worker_fail(w, status);
        w->step_s = mpt__now() - t0;
        pthread_mutex_lock(&e->lock);
        e->finished++;
        pthread_cond_broadcast(&e->done);
        pthread_mutex_unlock(&e->lock);
    }
    return NULL;
}

/* ---- across ranks: the caller's thread, between jobs ------------------------- */

/* The control group: one endpoint per rank, member r = rank r. */
static mpt__group_t ctl_group(const mpt__engine_t *e)
{
    return (mpt__group_t){e->t, e->ctl_members, e->nranks, e->rank, TAG_CTL, NULL};
}

/* Every rank sends `bytes` of its own to rank 0 (which receives them in
 * rank order through `take`), then rank 0's `all` (of all_bytes) reaches
 * every rank. */
static int gather_then_broadcast(mpt__engine_t *e, const void *mine, size_t bytes,
                                 int (*take)(mpt__engine_t *e, int rank, void *ctx), void *ctx,
                                 void *all, size_t all_bytes)
{
    int status = MPT_OK, self = e->ctl_members[e->rank];
    if (e->rank != 0) {
        MPT_TRY(mpt__send(e->t, self, e->ctl_members[0], TAG_GATHER, mine, bytes));
    } else {
        for (int r = 1; r < e->nranks; r++)
            MPT_TRY(take(e, r, ctx));
    }
    mpt__group_t g = ctl_group(e);
    MPT_TRY(mpt__broadcast(&g, all, all_bytes, 0, NULL));
out:
    return status;
}

static void results_put(const worker_t *w, double *row)
{
    const mpt__engine_device_stats_t *st = &w->stats;
    row[R_LOSS] = w->loss_sum, row[R_CORRECT] = w->correct, row[R_NORM] = w->norm;
    row[R_STEP_S] = w->step_s, row[R_ALLREDUCE_S] = st->allreduce_s;
    row[R_ALLREDUCE_BYTES] = (double)st->allreduce_bytes;
    row[R_MEMORY] = (double)st->memory_bytes, row[R_TP_S] = st->tp_s;
    row[R_TP_BYTES] = (double)st->tp_bytes;
}

static void results_get(worker_t *w, const double *row)
{
    mpt__engine_device_stats_t *st = &w->stats;
    w->loss_sum = row[R_LOSS], w->correct = row[R_CORRECT], w->norm = row[R_NORM];
    w->step_s = row[R_STEP_S], st->allreduce_s = row[R_ALLREDUCE_S];
    st->allreduce_bytes = (size_t)row[R_ALLREDUCE_BYTES];
    st->memory_bytes = (size_t)row[R_MEMORY], st->tp_s = row[R_TP_S];
    st->tp_bytes = (size_t)row[R_TP_BYTES];
}

/* Rank 0 receives rank r's rows (its workers, in index order) into the table. */
static int take_results(mpt__engine_t *e, int r, void *ctx)
{
    (void)ctx;
    double *rows = e->results + e->nworkers * R_COUNT;
    size_t n = 0;
    for (size_t i = 0; i < e->nworkers; i++)
        n += e->w[i].rank == r;
    int status = mpt__recv(e->t, e->ctl_members[0], e->ctl_members[r], TAG_GATHER, rows,
                           n * R_COUNT * sizeof *rows);
    for (size_t i = 0, k = 0; status == MPT_OK && i < e->nworkers; i++)
        if (e->w[i].rank == r)
            memcpy(e->results + i * R_COUNT, rows + R_COUNT * k++, R_COUNT * sizeof *rows);
    return status;
}

/* After a job: every worker's loss, counts and statistics on every rank,
 * so that the sums below run over all workers in index order, exactly as
 * in one process. */
static int exchange_results(mpt__engine_t *e)
{
    double *mine = e->results + e->nworkers * R_COUNT; /* the scratch */
    size_t k = 0;
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].local) {
            results_put(&e->w[i], e->results + i * R_COUNT);
            memcpy(mine + R_COUNT * k++, e->results + i * R_COUNT, R_COUNT * sizeof *mine);
        }
    int status = gather_then_broadcast(e, mine, k * R_COUNT * sizeof *mine, take_results, NULL,
                                       e->results, e->nworkers * R_COUNT * sizeof *e->results);
    for (size_t i = 0; status == MPT_OK && i < e->nworkers; i++)
        results_get(&e->w[i], e->results + i * R_COUNT);
    return status;
}

/* Rank 0 receives rank r's owned state elements into the model array. */
static int take_state(mpt__engine_t *e, int r, void *ctx)
{
    float *out = ctx;
    int status = mpt__recv(e->t, e->ctl_members[0], e->ctl_members[r], TAG_GATHER, e->pack,
                           e->owned[r] * sizeof *e->pack);
    for (size_t i = 0, k = 0; status == MPT_OK && i < e->m->param_floats; i++)
        if (e->owner[i] == r)
            out[i] = e->pack[k++];
    return status;
}

/* After each rank read its own workers' parts of a model array: the whole
 * array on every rank. */
static int exchange_state(mpt__engine_t *e, float *out)
{
    size_t k = 0;
    for (size_t i = 0; e->rank != 0 && i < e->m->param_floats; i++)
        if (e->owner[i] == e->rank)
            e->pack[k++] = out[i];
    return gather_then_broadcast(e, e->pack, k * sizeof *e->pack, take_state, out, out,
                                 e->m->param_floats * sizeof *out);
}

/* Which rank reads each model element: the first worker of replica 0 that
 * holds it (a replicated layer of a tensor-parallel group is held by every
 * member; any copy will do). */
static int assign_owners(mpt__engine_t *e)
{
    size_t n = e->m->param_floats, most = 0;
    if (!(e->owner = malloc((n ? n : 1) * sizeof *e->owner)) ||
        !(e->owned = calloc((size_t)e->nranks, sizeof *e->owned)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        e->owner[i] = -1;
    for (size_t i = 0; i < e->nworkers; i++) {
        const worker_t *w = &e->w[i];
        if (w->replica != 0)
            continue;
        size_t npieces = 1;
        const mpt__piece_t *pieces = w->shard ? mpt__shard_pieces(w->shard, &npieces) : NULL;
        mpt__piece_t whole = {w->p0, 0, w->np};
        for (size_t q = 0; q < npieces; q++) {
            const mpt__piece_t *pc = pieces ? &pieces[q] : &whole;
            for (size_t j = pc->model; j < pc->model + pc->count; j++)
                if (e->owner[j] < 0)
                    e->owner[j] = w->rank, e->owned[w->rank]++;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (e->owner[i] < 0)
            return mpt__fail(MPT_ERR_INVALID, "parameter element %zu is on no device of "
                             "replica 0", i);
    for (int r = 0; r < e->nranks; r++)
        most = e->owned[r] > most ? e->owned[r] : most;
    if (!(e->pack = malloc((most ? most : 1) * sizeof *e->pack)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    return MPT_OK;
}

/* Posts a job to every worker and waits; the first real failure (not the
 * aborts it caused) is the engine's. */
static int run_job(mpt__engine_t *e, job_kind_t kind)
{
    if (e->failed)
        return mpt__fail(MPT_ERR_ABORTED, "the engine stopped after an earlier failure");
    pthread_mutex_lock(&e->lock);
    e->kind = kind;
    e->finished = 0;
    e->generation++;
    pthread_cond_broadcast(&e->go);
    while (e->finished < e->nlocal)
        pthread_cond_wait(&e->done, &e->lock);
    pthread_mutex_unlock(&e->lock);
    const worker_t *first = NULL;
    for (size_t i = 0; i < e->nworkers; i++) {
        const worker_t *w = &e->w[i];
        if (w->local && w->status < 0 && (!first || (first->status == MPT_ERR_ABORTED &&
                                                     w->status != MPT_ERR_ABORTED)))
            first = w;
    }
    if (!first)
        return e->nranks > 1 ? exchange_results(e) : MPT_OK;
    e->failed = 1;
    char where[32] = "";
    if (e->nranks > 1) /* the other ranks wait: the caller must end the process (mpt.h) */
        snprintf(where, sizeof where, "rank %d of %d, ", e->rank, e->nranks);
    return mpt__fail(first->status, "%sdevice %d (%s), replica %d stage %d: %s", where,
                     first->dev->info.index, first->dev->info.name, first->replica,
                     first->stage, first->error);
}

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

/* The all-reduce segments of worker w: the model's parameter elements cut
 * at every worker's range boundaries. */
/* A segment's node map: the rank of each member, so that the hierarchical
 * all-reduce sums inside each process over its threads before the ring
 * across processes.  Only when the plan asks for it; a layout it cannot
 * run (uneven, one rank) stays a flat ring inside comm. */
static int set_nodes(const mpt__engine_t *e, segment_t *s)
{
    if (e->plan->allreduce != MPT_ALLREDUCE_HIERARCHICAL)
        return MPT_OK;
    if (!(s->node = malloc(e->nreplicas * sizeof *s->node)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t r = 0; r < e->nreplicas; r++)
        s->node[r] = e->w[s->members[r]].rank;
    return MPT_OK;
}

static int make_segments(mpt__engine_t *e, worker_t *w)
{
    size_t nb = 0, *cuts = malloc((2 * e->nworkers + 2) * sizeof *cuts);
    if (!cuts)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < e->nworkers; i++) {
        cuts[nb++] = e->w[i].p0;
        cuts[nb++] = e->w[i].p0 + e->w[i].np;
    }
    for (size_t i = 1; i < nb; i++) /* sort */
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1], cuts[j - 1] = t;
        }
    w->segs = calloc(nb, sizeof *w->segs);
    if (!w->segs) {
        free(cuts);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k + 1 < nb; k++) {
        size_t a = cuts[k], b = cuts[k + 1];
        if (b <= a || a < w->p0 || b > w->p0 + w->np)
            continue;
        segment_t *s = &w->segs[w->nsegs];
        if (!(s->members = malloc(e->nreplicas * sizeof *s->members))) {
            free(cuts);
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        }
        s->first = a, s->count = b - a, s->tag = TAG_GROUP + (int)k;
        for (size_t i = 0; i < e->nworkers; i++) {
            const worker_t *o = &e->w[i];
            if (o->np && o->p0 <= a && b <= o->p0 + o->np) {
                s->members[o->replica] = o->index;
                if (o == w)
                    s->self = o->replica;
            }
        }
        w->nsegs++;
        if (set_nodes(e, s) < 0) {
            free(cuts);
            return MPT_ERR_NOMEM;
        }
    }
    free(cuts);
    return MPT_OK;
}

/* With tensor-parallel stages, replicas must split alike (checked by
 * check_alike): worker w's whole compact buffer is one segment, reduced
 * with the worker in the same place of every other replica. */
static int make_aligned_segment(mpt__engine_t *e, worker_t *w)
{
    size_t per_replica = e->nworkers / e->nreplicas, place = (size_t)w->index % per_replica;
    if (w->np == 0)
        return MPT_OK;
    if (!(w->segs = calloc(1, sizeof *w->segs)) ||
        !(w->segs[0].members = malloc(e->nreplicas * sizeof *w->segs[0].members)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    segment_t *sg = &w->segs[0];
    sg->first = w->p0, sg->count = w->np, sg->tag = TAG_GROUP + (int)place;
    sg->self = w->replica;
    for (size_t r = 0; r < e->nreplicas; r++)
        sg->members[r] = (int)(r * per_replica + place);
    w->nsegs = 1;
    return set_nodes(e, sg);
}

/* Whether every replica is cut and split as replica 0 (same stages, group
 * sizes and, member by member, the same parameter elements). */
static int check_alike(const mpt__engine_t *e)
{
    size_t per_replica = e->nworkers / e->nreplicas;
    for (size_t r = 1; r < e->nreplicas; r++) {
        int same = e->plan->replicas[r].nstages == e->plan->replicas[0].nstages &&
                   per_replica * e->nreplicas == e->nworkers;
        for (size_t i = 0; same && i < per_replica; i++) {
            const worker_t *a = &e->w[i], *b = &e->w[r * per_replica + i];
            same = a->stage == b->stage && a->tp == b->tp && a->p0 == b->p0 && a->np == b->np &&
                   (!a->shard || mpt__shard_same_layout(a->shard, b->shard));
        }
        if (!same)
            return mpt__fail(MPT_ERR_UNSUPPORTED,
                             "replica %zu is cut or split differently from replica 0: data "
                             "parallelism over tensor-parallel stages needs every replica to "
                             "hold the same slices (give the replicas alike devices, or plan "
                             "with --dp 1)", r);
    }
    return MPT_OK;
}

static int has_dropout(const mpt__model_t *m)
{
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].kind->flags & MPT_KIND_WHOLE_BATCH)
            return 1;
    return 0;
}

static int check_plan(const mpt__model_t *m, const mpt__plan_t *p, size_t ndevices, size_t batch)
{
    if (p->microbatches == 0 || p->nreplicas == 0)
        return mpt__fail(MPT_ERR_INVALID, "a plan without replicas or micro-batches");
    if (has_dropout(m) && (p->microbatches > 1 || p->nreplicas > 1))
        return mpt__fail(MPT_ERR_UNSUPPORTED,
                         "dropout masks are drawn per element of the whole batch: a model with "
                         "dropout runs with one replica and one micro-batch only");
    if (p->batch && p->batch != batch)
        mpt__log(MPT_LOG_INFO, "engine: the plan was made for batch %zu, running batch %zu",
                 p->batch, batch);
    unsigned char *used = calloc(ndevices ? ndevices : 1, 1);
    if (!used)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
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

/* Worker `w`: member g of the tp devices of replica r's stage s, whose
 * group's workers start at `base`.  Activations come from member
 * g % tp_prev of the previous group and go to every member j of the next
 * with j % tp = g (each member of a group holds the whole output); the
 * gradients take the mirror paths. */
static int make_worker(mpt__engine_t *e, worker_t *w, size_t r, size_t s, size_t g, size_t base,
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
    w->dev = w->local ? devices[w->device] : NULL; /* rank and local: set by the caller */
    e->all_members[k] = (int)k;
    w->stats.device = w->device, w->stats.replica = (int)r, w->stats.stage = (int)s;
    w->stats.member = (int)g;
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
    w->model = e->m;
    if (tp == 1 && !w->local) {
        /* Another rank runs it: only its place in the job is needed here
         * (segments, ownership of the state). */
        mpt__model_param_range(e->m, st->first, st->last, &w->p0, &w->np);
        goto out;
    } else if (tp == 1) {
        MPT_TRY(mpt__stage_create(e->m, w->dev, st->first, st->last, max_mb, w->slots,
                                  e->microbatches > 1, seed, init, &w->ex));
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
        mpt__group_t group = {e->t, members, (int)tp, (int)g, TAG_TP + (int)base, NULL};
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
        MPT_TRY(mpt__stage_create(w->model, w->dev, 0, w->model->nlayers - 1, max_mb, w->slots,
                                  e->microbatches > 1, seed, local, &w->ex));
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
    w->stats.memory_bytes = mpt__executor_device_bytes(w->ex);
out:
    if (status < 0)
        mpt__fail_context(status, "replica %zu stage %zu (device %zu)", r, s,
                          st->devices[g].device);
    free(local);
    free(fractions);
    return status;
}

/* Pairs each worker running a tied layer (lm_head) without the layer that
 * owns its weight with the worker of the same replica that runs the owner. */
static int pair_tied(mpt__engine_t *e)
{
    for (size_t i = 0; i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        const mpt__plan_stage_t *st = &e->plan->replicas[w->replica].stages[w->stage];
        for (size_t l = st->first; l <= st->last; l++) {
            int owner = e->m->layers[l].tied_layer;
            if (owner < 0 || (size_t)owner >= st->first)
                continue;
            worker_t *o = NULL;
            for (size_t j = 0; j < e->nworkers && !o; j++) {
                const mpt__plan_stage_t *sj =
                    &e->plan->replicas[e->w[j].replica].stages[e->w[j].stage];
                if (e->w[j].replica == w->replica && sj->first <= (size_t)owner &&
                    (size_t)owner <= sj->last)
                    o = &e->w[j];
            }
            if (!o)
                return mpt__fail(MPT_ERR_INVALID, "replica %d: no stage runs layer %d", w->replica,
                                 owner);
            if (w->tp > 1 || o->tp > 1)
                return mpt__fail(MPT_ERR_UNSUPPORTED, "replica %d: %s (layer %zu) and the %s it "
                                 "is tied to (layer %d) are on different stages, one of them "
                                 "tensor-parallel: a tied weight across stages needs both stages "
                                 "on one device each", w->replica, e->m->layers[l].kind->name, l,
                                 e->m->layers[owner].kind->name, owner);
            if (w->tied_peer >= 0 || o->tied_peer >= 0)
                return mpt__fail(MPT_ERR_UNSUPPORTED, "replica %d: a stage with more than one "
                                 "tied weight across stages", w->replica);
            const mpt__param_t *pr = &e->m->layers[l].tied;
            size_t copy_first = 0;
            /* The executor laid the copy out from the same model: a local
             * copy's range must be the weight's, or the exchange would
             * move the wrong elements. */
            if (w->local && (mpt__stage_tied_copy(w->ex, &copy_first) != pr->numel ||
                             copy_first != pr->offset))
                return mpt__fail(MPT_ERR_INVALID, "replica %d stage %d: the executor's copy of "
                                 "the tied weight is not layer %d's", w->replica, w->stage,
                                 owner);
            w->tied_peer = o->index, w->tied_copy = 1;
            o->tied_peer = w->index, o->tied_copy = 0, o->tied_owner_layer = owner;
            w->tied_first = o->tied_first = pr->offset;
            w->tied_count = o->tied_count = pr->numel;
            if (o->local) {
                int status = mpt__stage_reserve_addend(o->ex, pr->numel);
                if (status < 0)
                    return status;
                o->stats.memory_bytes = mpt__executor_device_bytes(o->ex);
            }
            worker_t *both[2] = {w, o};
            for (int q = 0; q < 2; q++)
                if (both[q]->local &&
                    !(both[q]->tied_buf = malloc(pr->numel * sizeof *both[q]->tied_buf)))
                    return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        }
    }
    return MPT_OK;
}

int mpt__engine_create(const mpt__model_t *m, mpt_device_t *const *devices, size_t ndevices,
                       const mpt__plan_t *plan, size_t batch, uint64_t seed,
                       const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                       mpt__engine_t **out)
{
    return mpt__engine_create_ranks(m, devices, ndevices, plan, batch, seed, topo, cluster, NULL,
                                    out);
}

/* Each worker's rank (that of its device) and whether it is this one's;
 * then, across ranks, the MPI transport over the workers and the ranks'
 * control endpoints; else the local one. */
static int make_transport(mpt__engine_t *e, const mpt__engine_ranks_t *ranks)
{
    if (e->nranks == 1) {
        for (size_t i = 0; i < e->nworkers; i++)
            e->w[i].local = 1;
        e->nlocal = e->nworkers;
        return mpt__transport_local_create((int)e->nworkers, &e->t);
    }
    int n = (int)e->nworkers + e->nranks, *rank_of = malloc((size_t)n * sizeof *rank_of);
    if (!rank_of || !(e->ctl_members = malloc((size_t)e->nranks * sizeof *e->ctl_members)) ||
        !(e->results = calloc(2 * e->nworkers * R_COUNT + 1, sizeof *e->results))) {
        free(rank_of);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    /* Workers in creation order: replica, stage, member. */
    const mpt__plan_t *p = e->plan;
    for (size_t r = 0, k = 0; r < e->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            for (size_t g = 0; g < p->replicas[r].stages[s].ndevices; g++, k++) {
                worker_t *w = &e->w[k];
                size_t d = p->replicas[r].stages[s].devices[g].device;
                w->rank = rank_of[k] = ranks->device_rank[d];
                w->local = w->rank == e->rank;
                e->nlocal += (size_t)w->local;
            }
    for (int r = 0; r < e->nranks; r++)
        rank_of[e->nworkers + (size_t)r] = r, e->ctl_members[r] = (int)e->nworkers + r;
    int status = mpt__transport_mpi_create_mapped(n, rank_of, &e->t);
    free(rank_of);
    return status;
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
    MPT_TRY(make_transport(e, ranks));
    mpt__model_init_params(m, seed, init);
    /* CLBlast's caches are filled from one thread before workers use it
     * concurrently (device/blas.c). */
    for (size_t i = 0; i < ndevices; i++)
        if (devices[i])
            MPT_TRY(mpt__device_blas_warmup(devices[i]));
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
                MPT_TRY(make_worker(e, &e->w[k], r, s, g, base, tp_prev, tp_next, max_mb,
                                    devices, seed, init));
        }
    }
    MPT_TRY(pair_tied(e));
    /* Data parallelism: each worker's all-reduce segments and reducer. */
    if (e->nreplicas > 1 && e->any_tp)
        MPT_TRY(check_alike(e));
    if (e->nranks > 1)
        MPT_TRY(assign_owners(e));
    for (size_t i = 0; e->nreplicas > 1 && i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        if (!w->local)
            continue;
        MPT_TRY(e->any_tp ? make_aligned_segment(e, w) : make_segments(e, w));
        w->qcap = 2 * (w->nsegs + m->nlayers) + 2; /* buckets per step, at most */
        if (!(w->queue = calloc(w->qcap, sizeof *w->queue))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (w->nsegs) {
            if (pthread_create(&w->reducer, NULL, reducer_main, w) != 0) {
                status = mpt__fail(MPT_ERR_NOMEM, "cannot start a reducer thread");
                goto out;
            }
            w->reducer_started = 1;
        }
    }
    for (size_t i = 0; i < e->nworkers; i++) {
        if (!e->w[i].local)
            continue;
        if (pthread_create(&e->w[i].thread, NULL, worker_main, &e->w[i]) != 0) {
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
            }
            free(w->segs);
            free(w->queue);
            free(w->gbuf);
            free(w->tied_buf);
            free(w->fwd_stage);
            free(w->bwd_stage);
            free(w->recv_stage);
            free(w->sends);
            free(w->fwd_to);
            free(w->bwd_to);
            free(w->spans.v);
            free(w->rspans.v);
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
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->go);
    pthread_cond_destroy(&e->done);
    free(e);
}

/* ---- jobs ------------------------------------------------------------------------ */

int mpt__engine_train_step(mpt__engine_t *e, const float *x, const int32_t *y,
                           const mpt__optim_cfg_t *opt, float lr, double *loss,
                           double *grad_norm)
{
    e->x = x, e->y = y, e->opt = opt, e->lr = lr;
    int status = run_job(e, JOB_TRAIN);
    double sum = 0;
    *grad_norm = 0;
    for (size_t i = 0; i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        if (w->next < 0 && w->member == 0) /* the loss is replicated in a group */
            sum += w->loss_sum;
        if (opt->clip_norm > 0 && i == 0)
            *grad_norm = w->norm;
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
    e->x = x, e->y = y, e->count = count;
    int status = run_job(e, JOB_EVAL);
    *loss_sum = 0, *correct = 0;
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].replica == 0 && e->w[i].next < 0 && e->w[i].member == 0)
            *loss_sum += e->w[i].loss_sum, *correct += e->w[i].correct;
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
        status = exchange_state(e, out);
    return status;
}

int mpt__engine_read_params(mpt__engine_t *e, float *out) { return state_io(e, -1, out, NULL); }
int mpt__engine_write_params(mpt__engine_t *e, const float *in) { return state_io(e, -1, NULL, in); }
int mpt__engine_read_slot(mpt__engine_t *e, int slot, float *out) { return state_io(e, slot & 1, out, NULL); }
int mpt__engine_write_slot(mpt__engine_t *e, int slot, const float *in) { return state_io(e, slot & 1, NULL, in); }
uint64_t mpt__engine_step(const mpt__engine_t *e) { return e->step; }
size_t mpt__engine_worker_count(const mpt__engine_t *e) { return e->nworkers; }

void mpt__engine_set_step(mpt__engine_t *e, uint64_t step)
{
    e->step = step;
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].local)
            mpt__executor_set_step(e->w[i].ex, step);
}

void mpt__engine_set_tracing(mpt__engine_t *e, int on)
{
    if (on && !e->tracing) { /* a new trace: forget the spans of an earlier one */
        e->trace_t0 = mpt__now();
        for (size_t i = 0; i < e->nworkers; i++)
            e->w[i].spans.n = e->w[i].rspans.n = 0;
    }
    e->tracing = on;
}

/* Chrome Trace Event JSON: one track (tid) per worker, named by its device,
 * and one per reducer; complete events ("X") in microseconds. */
int mpt__engine_trace_json(const mpt__engine_t *e, char **text)
{
    json_t *events = json_array();
    for (size_t i = 0; i < e->nworkers; i++) {
        const worker_t *w = &e->w[i];
        char track[160];
        if (!w->local) /* its rank records it */
            continue;
        for (int r = 0; r < (w->nsegs ? 2 : 1); r++) {
            snprintf(track, sizeof track, "device %d %s (replica %d stage %d)%s",
                     w->dev->info.index, w->dev->info.name, w->replica, w->stage,
                     r ? " all-reduce" : "");
            json_array_append_new(events, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name",
                                                    "thread_name", "ph", "M", "pid", 0, "tid",
                                                    (int)(2 * i + (size_t)r), "args", "name",
                                                    track));
            const spans_t *s = r ? &w->rspans : &w->spans;
            for (size_t k = 0; k < s->n; k++) {
                const span_t *sp = &s->v[k];
                json_t *ev = json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i}", "name", sp->name,
                                       "cat", r ? "comm" : "compute", "ph", "X", "ts",
                                       (sp->t0 - e->trace_t0) * 1e6, "dur",
                                       (sp->t1 - sp->t0) * 1e6, "pid", 0, "tid",
                                       (int)(2 * i + (size_t)r));
                if (sp->mb >= 0)
                    json_object_set_new(ev, "args", json_pack("{s:i}", "microbatch", sp->mb));
                json_array_append_new(events, ev);
            }
        }
    }
    json_t *root = json_pack("{s:o, s:s}", "traceEvents", events, "displayTimeUnit", "ms");
    *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return *text ? MPT_OK : mpt__fail(MPT_ERR_NOMEM, "out of memory writing the trace");
}

const mpt__engine_device_stats_t *mpt__engine_device_stats(const mpt__engine_t *e, size_t i)
{
    return i < e->nworkers ? &e->w[i].stats : NULL;
}
