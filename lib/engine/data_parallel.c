/*
 * engine/data_parallel.c: gradients of data-parallel replicas summed while
 * the backward pass goes on.  The model's parameter elements are cut into
 * segments, each owned by one worker per replica (its all-reduce group);
 * as the last micro-batch's backward finishes layers, their gradients are
 * read to the host in buckets (on a CPU device: mapped, and summed in
 * place; mpt__eng_reduce_in_place) and a reducer thread per worker
 * all-reduces them.  Every reducer reduces its segments from the last to the first, so
 * groups that share a worker never wait on each other in a cycle.
 *
 * ZeRO-1 (plan zero = 1): each segment is cut into one shard per replica
 * in proportion to the replicas' samples; the same buckets are
 * reduce-scattered instead, each worker updates its shards with optimizer
 * state for them alone, then all-gathers every segment's parameters (in
 * increasing segment order, the same for every worker: no cycle either).
 * The all-gather runs on the worker thread after the update, overlapped
 * with nothing.
 *
 * ZeRO-2 (plan zero = 2) shards the gradients too.  The stage's device
 * buffer holds one layer's gradients at a time (executor.c, the window):
 * after each layer's backward they are read to the host at once, and the
 * queue's order keeps the next layer from overwriting them first.  Every
 * micro-batch's buckets are reduce-scattered (as DeepSpeed's stage 2 does:
 * there is no whole buffer left to accumulate in), and the reducer adds
 * each member's shard to its sum so far (zgrad, host); before the next
 * micro-batch's backward writes into the host copy again, the worker waits
 * for the reducer.  At the step's end the sums go into the same device
 * buffer, packed, for the update.  Communication: one reduce-scatter per
 * micro-batch instead of one per step.
 */
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine_impl.h"

/* ---- ZeRO-1 ---------------------------------------------------------------------- */

/* Member r's part of [first, first + count): its shard of the segment cut
 * to the range (shards partition the segment in member order, so the parts
 * lie one after the other as mpt__reduce_scatter and mpt__allgather want). */
static void shard_counts(const segment_t *s, size_t members, size_t first, size_t count,
                         size_t *counts)
{
    for (size_t r = 0; r < members; r++) {
        size_t a = s->bounds[r] > first ? s->bounds[r] : first;
        size_t z = s->bounds[r + 1] < first + count ? s->bounds[r + 1] : first + count;
        counts[r] = z > a ? z - a : 0;
    }
}

static int zero_reduce_scatter(worker_t *w, const mpt__group_t *g, const bucket_t *b,
                               mpt__coll_stats_t *cs)
{
    size_t *counts = malloc(w->e->nreplicas * sizeof *counts);
    if (!counts)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    shard_counts(b->seg, w->e->nreplicas, b->first, b->count, counts);
    int status = mpt__reduce_scatter(g, w->gbuf + (b->first - w->p0), counts, cs);
    if (status == MPT_OK && w->e->zero == 2) { /* this micro-batch's part of the sum */
        size_t a = b->seg->bounds[b->seg->self] > b->first ? b->seg->bounds[b->seg->self]
                                                          : b->first;
        for (size_t i = a - w->p0, z = i + counts[b->seg->self]; i < z; i++)
            w->zgrad[i] += w->gbuf[i];
    }
    free(counts);
    return status;
}

/* Shards in proportion to the replicas' samples (their batch shares, so a
 * faster replica, given more of the batch, also updates more), and the
 * packed optimizer state of this worker's shards. */
int mpt__eng_zero_setup(mpt__engine_t *e, worker_t *w)
{
    size_t floats = 0, n = e->nreplicas;
    for (size_t k = 0; k < w->nsegs; k++) {
        segment_t *s = &w->segs[k];
        if (!(s->bounds = malloc((n + 1) * sizeof *s->bounds)))
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        size_t before = 0; /* samples of the replicas before r */
        for (size_t r = 0; r <= n; r++) {
            /* exact in integers: count * before / batch, floor */
            s->bounds[r] = s->first + (size_t)((unsigned long long)s->count * before / e->batch);
            if (r < n)
                before += e->rep_samples[r];
        }
        s->slot_at = floats;
        floats += s->bounds[s->self + 1] - s->bounds[s->self];
    }
    if (e->zero == 2 && !(w->zgrad = calloc(w->np ? w->np : 1, sizeof *w->zgrad)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    return mpt__stage_shard_slots(w->ex, floats);
}

/* The reducer left the sum of this worker's shards in gbuf (ZeRO-2: in
 * zgrad, over the micro-batches too): they go to the device's gradients
 * (ZeRO-1: at their places, the rest of that buffer holding this replica's
 * own gradients, which nothing reads; ZeRO-2: packed), and *sumsq gets
 * their squares. */
int mpt__eng_zero_grads(worker_t *w, double *sumsq)
{
    mpt_buffer_t *g = mpt__executor_grads_buffer(w->ex);
    const float *sum = w->e->zero == 2 ? w->zgrad : w->gbuf;
    const mpt__model_t *m = w->model;
    int status = MPT_OK;
    *sumsq = 0;
    for (size_t k = 0; k < w->nsegs && status == MPT_OK; k++) {
        const segment_t *s = &w->segs[k];
        size_t a = s->bounds[s->self], z = s->bounds[s->self + 1];
        size_t at = w->e->zero == 2 ? s->slot_at : a - w->p0;
        /* A tensor-parallel member's replica of a parameter that member 0
         * also holds does not count again. */
        for (size_t i = 0; i < m->nlayers; i++)
            for (int q = 0; q < m->layers[i].nparams; q++) {
                const mpt__param_t *pr = &m->layers[i].params[q];
                size_t lo = pr->offset > a ? pr->offset : a;
                size_t hi = pr->offset + pr->numel < z ? pr->offset + pr->numel : z;
                for (size_t j = lo; !pr->counted_elsewhere && j < hi; j++)
                    *sumsq += (double)sum[j - w->p0] * (double)sum[j - w->p0];
            }
        if (z > a)
            status = mpt_buffer_write(g, at * sizeof(float), sum + (a - w->p0),
                                      (z - a) * sizeof(float));
    }
    return status;
}

/* The optimizer on this worker's shards, then every segment's parameters
 * all-gathered from their owners (through gbuf) and written back whole. */
int mpt__eng_zero_update(worker_t *w)
{
    mpt__engine_t *e = w->e;
    mpt_buffer_t *pb = mpt__executor_params_buffer(w->ex);
    size_t *counts = malloc(e->nreplicas * sizeof *counts);
    int status = counts ? MPT_OK : mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < w->nsegs && status == MPT_OK; k++) {
        const segment_t *s = &w->segs[k];
        size_t a = s->bounds[s->self], z = s->bounds[s->self + 1];
        status = mpt__stage_update_range(w->ex, e->opt, e->lr, a - w->p0, z - a, s->slot_at);
        if (status == MPT_OK && z > a)
            status = mpt_buffer_read(pb, (a - w->p0) * sizeof(float), w->gbuf + (a - w->p0),
                                     (z - a) * sizeof(float));
        if (status < 0)
            break;
        mpt__group_t g = {e->t, s->members, (int)e->nreplicas, s->self, s->tag, NULL};
        mpt__coll_stats_t cs = {0};
        double t0 = mpt__now();
        shard_counts(s, e->nreplicas, s->first, s->count, counts);
        status = mpt__allgather(&g, w->gbuf + (s->first - w->p0), counts, &cs);
        w->stats.allreduce_s += mpt__now() - t0;
        w->stats.allreduce_bytes += s->count * sizeof(float);
        span_add(e, &w->spans, "all-gather", -1, t0);
        if (status == MPT_OK)
            status = mpt_buffer_write(pb, (s->first - w->p0) * sizeof(float),
                                      w->gbuf + (s->first - w->p0), s->count * sizeof(float));
    }
    free(counts);
    return status;
}

/* A tensor-parallel member's elements [a, z) of its compact buffer
 * (buf, from a) from their places in the whole model's layout (in), or to
 * them (out) through its slice's pieces; towards the model only those
 * that count here: member 0 writes the replicated layers, so that every
 * element has one writer (engine.c sums the ranks' arrays). */
static void slice_copy(const worker_t *w, size_t a, size_t z, float *buf, const float *in,
                       float *out)
{
    size_t np = 0;
    const mpt__piece_t *pc = mpt__shard_pieces(w->shard, &np);
    const mpt__model_t *m = w->model;
    for (size_t i = 0; i < m->nlayers; i++)
        for (int q = 0; q < m->layers[i].nparams; q++) {
            const mpt__param_t *pr = &m->layers[i].params[q];
            size_t lo = pr->offset > a ? pr->offset : a;
            size_t hi = pr->offset + pr->numel < z ? pr->offset + pr->numel : z;
            if (out && pr->counted_elsewhere)
                continue;
            for (size_t k = 0; k < np && lo < hi; k++) {
                size_t b = pc[k].local > lo ? pc[k].local : lo;
                size_t e = pc[k].local + pc[k].count < hi ? pc[k].local + pc[k].count : hi;
                for (size_t j = b; j < e; j++) {
                    size_t whole = pc[k].model + (j - pc[k].local);
                    if (out)
                        out[whole] = buf[j - a];
                    else
                        buf[j - a] = in[whole];
                }
            }
        }
}

/* Checkpoint I/O of the sharded optimizer state: each worker reads (out)
 * or writes (in) its shards at their places in the whole model's layout
 * (a tensor-parallel member's through its slice's pieces, by way of gbuf:
 * the workers are idle between jobs); together the replicas cover every
 * element once. */
int mpt__eng_zero_slot_io(worker_t *w, int slot, float *out, const float *in)
{
    int status = MPT_OK;
    for (size_t k = 0; w->local && k < w->nsegs && status == MPT_OK; k++) {
        const segment_t *s = &w->segs[k];
        size_t a = s->bounds[s->self], z = s->bounds[s->self + 1];
        if (!w->shard) {
            status = mpt__stage_slot_io(w->ex, slot, s->slot_at, z - a, out ? out + a : NULL,
                                        in ? in + a : NULL);
            continue;
        }
        float *buf = w->gbuf + (a - w->p0);
        if (in)
            slice_copy(w, a, z, buf, in, NULL);
        status = mpt__stage_slot_io(w->ex, slot, s->slot_at, z - a, out ? buf : NULL,
                                    in ? buf : NULL);
        if (status == MPT_OK && out)
            slice_copy(w, a, z, buf, NULL, out);
    }
    return status;
}

/* ---- the reducer thread ------------------------------------------------------- */

void *mpt__eng_reducer_main(void *arg)
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
            if (w->e->zero) /* each member keeps the sum of its shard only */
                status = zero_reduce_scatter(w, &g, &b, &cs);
            else
                status = mpt__allreduce(&g, b.data ? b.data : w->gbuf + (b.first - w->p0),
                                        b.count, &cs);
            w->stats.allreduce_s += mpt__now() - t0;
            span_add(w->e, &w->rspans, w->e->zero ? "reduce-scatter" : "allreduce", -1, t0);
            mpt__comm_times_t ct = mpt__comm_take_times(); /* the reducer's own */
            w->stats.allreduce_wait_s += ct.wait_s, w->stats.allreduce_transfer_s += ct.transfer_s;
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

/* Waits until the reducer has done every bucket, then gives the ranges it
 * summed in place back to the device (the queue runs the update after
 * the unmaps); its status. */
int mpt__eng_reducer_drain(worker_t *w)
{
    pthread_mutex_lock(&w->rlock);
    while (w->qhead != w->qtail)
        pthread_cond_wait(&w->rcond, &w->rlock);
    int status = w->rstatus;
    if (status < 0)
        mpt__fail(status, "%s", w->rerror);
    w->rstatus = MPT_OK;
    pthread_mutex_unlock(&w->rlock);
    mpt_buffer_t *g = w->nmaps ? mpt__executor_grads_buffer(w->ex) : NULL;
    for (size_t k = 0; k < w->nmaps; k++) { /* even after a failure: no map left behind */
        cl_int err = clEnqueueUnmapMemObject(w->dev->queue, g->mem, w->maps[k], 0, NULL, NULL);
        if (err != CL_SUCCESS && status == MPT_OK)
            status = mpt__fail_cl(err, "unmapping the gradients of device %d",
                                  w->dev->info.index);
    }
    w->nmaps = 0;
    return status;
}

/* ---- gradients to the reducer ----------------------------------------------------- */

/* Reads gradients [first, first + count) (model elements) from the device
 * buffer's element `at` into their place in gbuf, without waiting: the
 * in-order queue runs the read after the backward kernels that wrote them,
 * and the worker goes on enqueuing the earlier layers at once. */
static int read_grads(worker_t *w, size_t at, size_t first, size_t count, cl_event *ev)
{
    mpt_buffer_t *g = mpt__executor_grads_buffer(w->ex);
    cl_int err = clEnqueueReadBuffer(w->dev->queue, g->mem, CL_FALSE, at * sizeof(float),
                                     count * sizeof(float), w->gbuf + (first - w->p0), 0, NULL,
                                     ev);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "reading gradients of device %d", w->dev->info.index);
    return MPT_OK;
}

/* Maps gradients [first, first + count) (model elements) of the device
 * buffer for the reducer to sum in place, without waiting: the map runs
 * after the backward kernels that wrote them. */
static int map_grads(worker_t *w, size_t first, size_t count, float **data, cl_event *ev)
{
    mpt_buffer_t *g = mpt__executor_grads_buffer(w->ex);
    cl_int err;
    if (w->nmaps == w->qcap) /* a flush pushes a bucket, and qcap holds a step's */
        return mpt__fail(MPT_ERR_RANGE, "device %d: more gradient maps than buckets",
                         w->dev->info.index);
    *data = clEnqueueMapBuffer(w->dev->queue, g->mem, CL_FALSE, CL_MAP_READ | CL_MAP_WRITE,
                               (first - w->p0) * sizeof(float), count * sizeof(float), 0, NULL,
                               ev, &err);
    if (!*data)
        return mpt__fail_cl(err, "mapping gradients of device %d", w->dev->info.index);
    w->maps[w->nmaps++] = *data;
    return MPT_OK;
}

/* Hands b's finished gradients [pending_first, pending_end) to the
 * reducer, cut at segment boundaries, with the event of their read or map
 * (made here, or under ZeRO-2 the last layer's read: the queue ran the
 * others before it); the reducer waits for it. */
int mpt__eng_flush_grads(worker_t *w, bucket_ctx_t *bc)
{
    size_t first = bc->pending_first, end = bc->pending_end;
    cl_event ev = bc->read;
    float *mapped = NULL;
    int status = MPT_OK;
    bc->pending_end = 0, bc->read = NULL;
    if (end <= first) {
        if (ev)
            clReleaseEvent(ev);
        return MPT_OK;
    }
    if (!ev && mpt__eng_reduce_in_place(w))
        status = map_grads(w, first, end - first, &mapped, &ev);
    else if (!ev)
        status = read_grads(w, first - w->p0, first, end - first, &ev);
    if (status < 0)
        return status;
    clFlush(w->dev->queue);
    /* Segments are in increasing order; buckets go out last first, each
     * holding its own reference to the read. */
    for (size_t k = w->nsegs; k-- > 0;) {
        const segment_t *s = &w->segs[k];
        size_t a = s->first > first ? s->first : first;
        size_t b = s->first + s->count < end ? s->first + s->count : end;
        if (b > a) {
            clRetainEvent(ev);
            reducer_push(w, (bucket_t){a, b - a, s, ev, mapped ? mapped + (a - first) : NULL});
        }
    }
    clReleaseEvent(ev);
    return MPT_OK;
}

/* ---- buckets as the backward pass goes ------------------------------------- */

void mpt__eng_layer_done(void *arg, size_t layer)
{
    bucket_ctx_t *b = arg;
    worker_t *w = b->w;
    const mpt__layer_t *l = &w->model->layers[layer];
    if (b->status < 0 || l->nparams == 0)
        return;
    /* The tied weight's gradient leaves with the copy's part in it. */
    if ((int)layer == w->tied_owner_layer && (b->status = mpt__eng_tied_take_copy(w)) < 0)
        return;
    size_t lo = l->params[0].offset, hi = lo;
    for (int q = 0; q < l->nparams; q++) {
        size_t a = l->params[q].offset, z = a + l->params[q].numel;
        lo = a < lo ? a : lo;
        hi = z > hi ? z : hi;
    }
    if (w->e->zero == 2) { /* out of the window before the next layer writes there */
        cl_event ev = NULL;
        if ((b->status = read_grads(w, mpt__stage_grads_at(w->ex, layer), lo, hi - lo, &ev)) < 0)
            return;
        if (b->read)
            clReleaseEvent(b->read);
        b->read = ev;
    }
    if (b->pending_end == 0)
        b->pending_end = hi;
    b->pending_first = lo;
    /* A segment boundary at lo means the next layer belongs to another
     * group: flush there too. */
    int boundary = 0;
    for (size_t k = 0; k < w->nsegs; k++)
        boundary |= w->segs[k].first == lo;
    if ((b->pending_end - b->pending_first) * sizeof(float) >= BUCKET_BYTES || boundary)
        b->status = mpt__eng_flush_grads(w, b);
}

/* ---- segments ------------------------------------------------------------------ */

/* A segment's node map: the rank of each member, so that the hierarchical
 * all-reduce sums inside each process over its threads before the ring
 * across processes.  Only when the plan asks for it; a layout it cannot
 * run (one rank, one replica per rank, uneven) is refused here rather
 * than left to run the flat ring under the hierarchical name.  (In one
 * process the replicas' threads share the host memory: a hierarchy
 * inside it would only add steps.) */
static int set_nodes(const mpt__engine_t *e, segment_t *s)
{
    if (e->plan->allreduce != MPT_ALLREDUCE_HIERARCHICAL)
        return MPT_OK;
    if (!(s->node = malloc(e->nreplicas * sizeof *s->node)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int ranks = 0;
    for (size_t r = 0; r < e->nreplicas; r++) {
        s->node[r] = e->w[s->members[r]].rank;
        int seen = 0;
        for (size_t q = 0; q < r && !seen; q++)
            seen = s->node[q] == s->node[r];
        ranks += !seen;
    }
    mpt__group_t g = {e->t, s->members, (int)e->nreplicas, s->self, s->tag, s->node};
    if (!mpt__allreduce_is_hierarchical(&g, NULL, NULL))
        return mpt__fail(MPT_ERR_UNSUPPORTED,
                         "the hierarchical all-reduce needs the replicas on two or more MPI "
                         "ranks with the same number, at least two, on each; this plan's %zu "
                         "replicas are on %d rank%s: use --allreduce ring or auto, or run under "
                         "mpirun with several devices per rank", e->nreplicas, ranks,
                         ranks == 1 ? "" : "s");
    return MPT_OK;
}

/* The all-reduce segments of worker w: the model's parameter elements cut
 * at every worker's range boundaries. */
int mpt__eng_make_segments(mpt__engine_t *e, worker_t *w)
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
        s->first = a, s->count = b - a, s->tag = e->tags.segments + (int)k;
        for (size_t i = 0; i < e->nworkers; i++) {
            const worker_t *o = &e->w[i];
            if (o->np && o->p0 <= a && b <= o->p0 + o->np) {
                s->members[o->replica] = o->index;
                if (o == w)
                    s->self = o->replica;
            }
        }
        w->nsegs++;
        int status = set_nodes(e, s);
        if (status < 0) {
            free(cuts);
            return status;
        }
    }
    free(cuts);
    return MPT_OK;
}

/* With tensor-parallel stages, replicas must split alike (checked by
 * mpt__eng_check_alike): worker w's whole compact buffer is one segment, reduced
 * with the worker in the same place of every other replica. */
int mpt__eng_make_aligned_segment(mpt__engine_t *e, worker_t *w)
{
    size_t per_replica = e->nworkers / e->nreplicas, place = (size_t)w->index % per_replica;
    if (w->np == 0)
        return MPT_OK;
    if (!(w->segs = calloc(1, sizeof *w->segs)) ||
        !(w->segs[0].members = malloc(e->nreplicas * sizeof *w->segs[0].members)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    segment_t *sg = &w->segs[0];
    sg->first = w->p0, sg->count = w->np, sg->tag = e->tags.segments + (int)place;
    sg->self = w->replica;
    for (size_t r = 0; r < e->nreplicas; r++)
        sg->members[r] = (int)(r * per_replica + place);
    w->nsegs = 1;
    return set_nodes(e, sg);
}

/* Whether every replica is cut and split as replica 0 (same stages, group
 * sizes and, member by member, the same parameter elements). */
int mpt__eng_check_alike(const mpt__engine_t *e)
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
