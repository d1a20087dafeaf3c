/*
 * plan/simulate.c: replays one training step of a plan under the cost model
 * (plan.h) as a discrete-event simulation, and writes the timeline as a
 * Chrome trace.
 *
 * What is modelled:
 *   - every (replica, stage) is a pipeline worker running its micro-batches
 *     in the schedule's order (GPipe: F0..F(m-1) then B(m-1)..B0; 1F1B, as
 *     PipeDream-flush: min(p - s - 1, m) warm-up forwards, then one forward
 *     and one backward in turn, then the cool-down backwards, backwards in
 *     ascending order);
 *   - an op starts when its input has arrived and every device of its
 *     stage's tensor-parallel group is free, and lasts the plan's fwd_s or
 *     bwd_s (already the slowest device of the group: the simulator never
 *     recomputes compute times; the tensor-parallel collectives inside a
 *     stage are folded into those times by the planner, so tp > 1 adds
 *     nothing here);
 *   - an activation (forward) or its gradient (backward) crosses a stage
 *     boundary as mpt__cost_transfer of (out_bytes of the stage's last
 *     layer) x (samples per micro-batch) bytes, from the last device of the
 *     sending group to the first device of the receiving one.  A transfer
 *     occupies its link (one per boundary and direction, full duplex), not
 *     the compute devices: transfers on one link are serialised, compute
 *     goes on meanwhile;
 *   - after a stage's last backward in every replica, the stage's gradients
 *     are all-reduced across the replicas: for each member j of the group,
 *     one ring all-reduce (mpt__cost_allreduce) over the j-th devices of
 *     that stage in all replicas, of the parameter bytes member j holds
 *     (mpt__cost_param_bytes: its fraction of the split layers, all of the
 *     replicated ones; replica 0's stage gives the bytes).  It occupies
 *     those devices, and overlaps with other stages still computing.
 *     Under ZeRO-2 every micro-batch's gradients are reduce-scattered (half
 *     an all-reduce each) before the one all-gather: (m + 1) / 2
 *     all-reduces, all counted after the last backward (the earlier
 *     micro-batches' in fact overlap the backward passes after them);
 *
 * When several workers could start an op, the one that can start first goes
 * first (ties: lower replica, then lower stage), so that a plan placing two
 * stages on one device (which plan JSON rejects) still gets a valid, if
 * arbitrary, timeline.
 *
 * Left out: link contention between different boundaries sharing a PCIe
 * root or network, overlap of the all-reduce with the backward pass
 * (buckets), the optimizer step, and data loading.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "plan/plan.h"
#include "trace/chrome.h"

typedef enum { N_FWD, N_BWD, N_SEND, N_ALLREDUCE } node_kind_t;

/* One timed thing: a compute op, a transfer or an all-reduce (one member
 * of a stage's group).  pred is the node whose end fixed this one's start
 * (-1: it started at 0), which gives the critical path. */
typedef struct {
    node_kind_t kind;
    size_t replica, stage, mb;
    size_t from, to;  /* a transfer's devices; an all-reduce's group member and
                       * number of devices */
    int back;         /* a transfer of a gradient (backward), over boundary stage - 1 */
    double bytes;
    double start, end;
    long pred;
} node_t;

typedef struct {
    const mpt__plan_t *p;
    const mpt__model_cost_t *mc;
    const mpt_cluster_t *c;
    size_t R, P, M, ndev;
    node_t *nodes;
    size_t nnodes, cap;
    double *dev_free;  /* per cluster device: when it is next free */
    long *dev_last;    /* the node that occupies it last */
} sim_t;

#define IDX(r, s, k) (((r) * S->P + (s)) * S->M + (k))

static long add_node(sim_t *S, node_t n)
{
    if (S->nnodes == S->cap) {
        size_t cap = S->cap ? 2 * S->cap : 256;
        node_t *grown = realloc(S->nodes, cap * sizeof *grown);
        if (!grown)
            return -1;
        S->nodes = grown, S->cap = cap;
    }
    S->nodes[S->nnodes] = n;
    return (long)S->nnodes++;
}

static const mpt__plan_stage_t *stage_of(const sim_t *S, size_t r, size_t s)
{
    return &S->p->replicas[r].stages[s];
}

/* The schedule of stage s: 2m ops, each k * 2 + (1 for a backward). */
static void schedule(mpt__pipe_schedule_t kind, size_t P, size_t M, size_t s, size_t *ops)
{
    size_t n = 0;
    if (kind == MPT__PIPE_GPIPE) {
        for (size_t k = 0; k < M; k++)
            ops[n++] = 2 * k;
        for (size_t k = M; k-- > 0;)
            ops[n++] = 2 * k + 1;
        return;
    }
    size_t warm = P - s - 1 < M ? P - s - 1 : M;
    for (size_t k = 0; k < warm; k++)
        ops[n++] = 2 * k;
    for (size_t i = 0; i + warm < M; i++) {
        ops[n++] = 2 * (warm + i);
        ops[n++] = 2 * i + 1;
    }
    for (size_t k = M - warm; k < M; k++)
        ops[n++] = 2 * k + 1;
}

static int check_plan(const sim_t *S)
{
    const mpt__plan_t *p = S->p;
    if (p->nreplicas == 0 || !p->replicas || p->microbatches == 0)
        return mpt__fail(MPT_ERR_INVALID, "simulate: a plan needs replicas and micro-batches");
    for (size_t r = 0; r < p->nreplicas; r++) {
        const mpt__plan_replica_t *rep = &p->replicas[r];
        if (rep->nstages == 0 || !rep->stages)
            return mpt__fail(MPT_ERR_INVALID, "simulate: replica %zu has no stages", r);
        /* The per-stage all-reduce pairs stage s of every replica. */
        if (rep->nstages != p->replicas[0].nstages)
            return mpt__fail(MPT_ERR_INVALID,
                             "simulate: replica %zu has %zu stages, replica 0 has %zu", r,
                             rep->nstages, p->replicas[0].nstages);
        if (!(rep->batch_share >= 0) || !isfinite(rep->batch_share))
            return mpt__fail(MPT_ERR_INVALID, "simulate: replica %zu: bad batch share %g", r,
                             rep->batch_share);
        for (size_t s = 0; s < rep->nstages; s++) {
            const mpt__plan_stage_t *st = &rep->stages[s];
            if (st->ndevices == 0 || !st->devices)
                return mpt__fail(MPT_ERR_INVALID, "simulate: replica %zu stage %zu has no devices",
                                 r, s);
            if (st->first > st->last || st->last >= S->mc->nlayers)
                return mpt__fail(MPT_ERR_RANGE,
                                 "simulate: replica %zu stage %zu: layers %zu-%zu outside 0-%zu",
                                 r, s, st->first, st->last, S->mc->nlayers - 1);
            if (!(st->fwd_s >= 0) || !(st->bwd_s >= 0) || !isfinite(st->fwd_s) ||
                !isfinite(st->bwd_s))
                return mpt__fail(MPT_ERR_INVALID,
                                 "simulate: replica %zu stage %zu: bad times fwd %g s, bwd %g s",
                                 r, s, st->fwd_s, st->bwd_s);
            for (size_t g = 0; g < st->ndevices; g++)
                if (st->devices[g].device >= S->ndev)
                    return mpt__fail(MPT_ERR_RANGE,
                                     "simulate: replica %zu stage %zu: device %zu not in the "
                                     "cluster of %zu",
                                     r, s, st->devices[g].device, S->ndev);
        }
    }
    return MPT_OK;
}

/* Sends `bytes` from device `from` to `to` once node `producer` has ended
 * and the link (its free time and last node) is free; returns the transfer
 * node, or -1 when out of memory. */
static long transfer(sim_t *S, long producer, double *link_free, long *link_last, int back,
                     size_t from, size_t to, double bytes)
{
    const node_t *p = &S->nodes[producer];
    node_t n = {.kind = N_SEND, .replica = p->replica, .stage = p->stage, .mb = p->mb,
                .from = from, .to = to, .back = back, .bytes = bytes, .start = p->end,
                .pred = producer};
    if (*link_free > n.start)
        n.start = *link_free, n.pred = *link_last;
    n.end = n.start + mpt__cost_transfer(S->c, from, to, bytes);
    long id = add_node(S, n);
    if (id >= 0)
        *link_free = n.end, *link_last = id;
    return id;
}

/* Passes 1-2: the pipelines of every replica, op by op. */
/* When worker w (replica w / P, stage w % P) could start its next op:
 * its input produced (a forward from the stage before, a gradient from the
 * stage after, or the last stage's own forward) and its devices free.
 * INFINITY when it is done or its input does not exist yet. */
static void candidate(const sim_t *S, size_t w, size_t P, size_t M, const size_t *ops,
                      const size_t *next, const long *fnode, const long *fin, const long *bin,
                      double *start_out, long *pred_out)
{
    size_t r = w / P, s = w % P;
    *start_out = INFINITY, *pred_out = -1;
    if (next[w] == 2 * M)
        return;
    size_t op = ops[s * 2 * M + next[w]], k = op / 2;
    long dep = -1;
    if (!(op & 1) && s > 0)
        dep = fin[IDX(r, s, k)];
    else if ((op & 1) && s + 1 < P)
        dep = bin[IDX(r, s, k)];
    else if (op & 1)
        dep = fnode[IDX(r, s, k)]; /* the last stage turns around */
    int needs = s > 0 || (op & 1);
    if (needs && dep < 0)
        return; /* its input has not been produced yet */
    double start = dep >= 0 ? S->nodes[dep].end : 0;
    long pred = dep;
    const mpt__plan_stage_t *st = stage_of(S, r, s);
    for (size_t g = 0; g < st->ndevices; g++) {
        size_t d = st->devices[g].device;
        if (S->dev_free[d] > start)
            start = S->dev_free[d], pred = S->dev_last[d];
    }
    *start_out = start, *pred_out = pred;
}

static int run_pipelines(sim_t *S, double *busy, long *stage_end)
{
    int status = MPT_OK;
    size_t R = S->R, P = S->P, M = S->M, W = R * P;
    size_t *ops = malloc(P * 2 * M * sizeof *ops), *next = calloc(W, sizeof *next);
    long *fnode = malloc(W * M * sizeof *fnode);  /* F(r,s,k) */
    long *fin = malloc(W * M * sizeof *fin);      /* activation arriving at (r,s,k) */
    long *bin = malloc(W * M * sizeof *bin);      /* gradient arriving at (r,s,k) */
    double *link_free = calloc(2 * W, sizeof *link_free); /* (r, boundary s, direction) */
    long *link_last = malloc(2 * W * sizeof *link_last);
    double *bytes = malloc(W * sizeof *bytes);    /* crossing boundary s -> s+1 of r */

    if (!ops || !next || !fnode || !fin || !bin || !link_free || !link_last || !bytes) {
        status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
        goto out;
    }
    for (size_t i = 0; i < W * M; i++)
        fnode[i] = fin[i] = bin[i] = -1;
    for (size_t i = 0; i < 2 * W; i++)
        link_last[i] = -1;
    for (size_t s = 0; s < P; s++)
        schedule(S->p->schedule, P, M, s, ops + s * 2 * M);
    for (size_t r = 0; r < R; r++) {
        double samples = (double)S->p->batch * S->p->replicas[r].batch_share / (double)M;
        for (size_t s = 0; s < P; s++)
            bytes[r * P + s] = S->mc->layers[stage_of(S, r, s)->last].out_bytes * samples;
    }

    /* Each worker's next op and when it could start, kept up to date
     * incrementally: an op changes only its own worker, its pipeline
     * neighbours (whose inputs it produces) and the workers sharing its
     * devices; the rest keep their candidates.  Picking the earliest is
     * then a scan of W numbers, not W dependency walks. */
    double *cstart = malloc(W * sizeof *cstart);
    long *cpred = malloc(W * sizeof *cpred);
    size_t *dev_first = calloc(S->ndev + 1, sizeof *dev_first), *dev_workers = NULL;
    if (!cstart || !cpred || !dev_first) {
        free(cstart), free(cpred), free(dev_first);
        status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
        goto out;
    }
    for (size_t w = 0; w < W; w++) { /* workers of each device, as CSR */
        const mpt__plan_stage_t *st = stage_of(S, w / P, w % P);
        for (size_t g = 0; g < st->ndevices; g++)
            dev_first[st->devices[g].device + 1]++;
    }
    for (size_t d = 0; d < S->ndev; d++)
        dev_first[d + 1] += dev_first[d];
    if (!(dev_workers = malloc((dev_first[S->ndev] + 1) * sizeof *dev_workers))) {
        free(cstart), free(cpred), free(dev_first);
        status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
        goto out;
    }
    {
        size_t *fill = calloc(S->ndev + 1, sizeof *fill);
        if (!fill) {
            free(cstart), free(cpred), free(dev_first), free(dev_workers);
            status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
            goto out;
        }
        for (size_t w = 0; w < W; w++) {
            const mpt__plan_stage_t *st = stage_of(S, w / P, w % P);
            for (size_t g = 0; g < st->ndevices; g++) {
                size_t d = st->devices[g].device;
                dev_workers[dev_first[d] + fill[d]++] = w;
            }
        }
        free(fill);
    }
    for (size_t w = 0; w < W; w++)
        candidate(S, w, P, M, ops, next, fnode, fin, bin, &cstart[w], &cpred[w]);

    for (size_t left = W * 2 * M; left > 0; left--) {
        /* Pick the op that can start first (the lowest worker on a tie). */
        size_t best = W;
        double best_start = INFINITY;
        long best_pred = -1;
        for (size_t w = 0; w < W; w++)
            if (cstart[w] < best_start)
                best = w, best_start = cstart[w], best_pred = cpred[w];
        if (best == W) {
            free(cstart), free(cpred), free(dev_first), free(dev_workers);
            status = mpt__fail(MPT_ERR_INVALID, "simulate: the schedule deadlocks");
            goto out;
        }
        size_t r = best / P, s = best % P, op = ops[s * 2 * M + next[best]], k = op / 2;
        const mpt__plan_stage_t *st = stage_of(S, r, s);
        double dur = (op & 1) ? st->bwd_s : st->fwd_s;
        node_t n = {.kind = (op & 1) ? N_BWD : N_FWD, .replica = r, .stage = s, .mb = k,
                    .start = best_start, .end = best_start + dur, .pred = best_pred};
        long id = add_node(S, n);
        if (id < 0) {
            status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
            goto out;
        }
        for (size_t g = 0; g < st->ndevices; g++) {
            size_t d = st->devices[g].device;
            S->dev_free[d] = n.end, S->dev_last[d] = id;
            busy[d] += dur;
        }
        long t = 0;
        if (!(op & 1)) {
            fnode[IDX(r, s, k)] = id;
            if (s + 1 < P) {
                const mpt__plan_stage_t *to = stage_of(S, r, s + 1);
                t = transfer(S, id, &link_free[2 * best], &link_last[2 * best], 0,
                             st->devices[st->ndevices - 1].device, to->devices[0].device,
                             bytes[best]);
                if (t >= 0)
                    fin[IDX(r, s + 1, k)] = t;
            }
        } else if (s > 0) {
            const mpt__plan_stage_t *to = stage_of(S, r, s - 1);
            size_t b = best - 1; /* boundary s-1 -> s, backward direction */
            t = transfer(S, id, &link_free[2 * b + 1], &link_last[2 * b + 1], 1,
                         st->devices[0].device, to->devices[to->ndevices - 1].device, bytes[b]);
            if (t >= 0)
                bin[IDX(r, s - 1, k)] = t;
        }
        if (t < 0) {
            status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
            goto out;
        }
        if (++next[best] == 2 * M)
            stage_end[best] = id;
        size_t r0 = best / P, s0 = best % P;
        candidate(S, best, P, M, ops, next, fnode, fin, bin, &cstart[best], &cpred[best]);
        if (s0 > 0)
            candidate(S, best - 1, P, M, ops, next, fnode, fin, bin, &cstart[best - 1],
                      &cpred[best - 1]);
        if (s0 + 1 < P)
            candidate(S, best + 1, P, M, ops, next, fnode, fin, bin, &cstart[best + 1],
                      &cpred[best + 1]);
        (void)r0;
        for (size_t g = 0; g < st->ndevices; g++) {
            size_t d = st->devices[g].device;
            for (size_t i = dev_first[d]; i < dev_first[d + 1]; i++)
                if (dev_workers[i] != best)
                    candidate(S, dev_workers[i], P, M, ops, next, fnode, fin, bin,
                              &cstart[dev_workers[i]], &cpred[dev_workers[i]]);
        }
    }
    free(cstart), free(cpred), free(dev_first), free(dev_workers);
out:
    free(ops);
    free(next);
    free(fnode);
    free(fin);
    free(bin);
    free(link_free);
    free(link_last);
    free(bytes);
    return status;
}

/* Pass 3: per stage and group member, the all-reduce across replicas. */
static int run_allreduces(sim_t *S, const long *stage_end)
{
    size_t *devs = malloc(S->R * sizeof *devs);
    if (!devs)
        return mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
    for (size_t s = 0; s < S->P; s++) {
        const mpt__plan_stage_t *st0 = stage_of(S, 0, s);
        for (size_t j = 0;; j++) {
            size_t n = 0;
            double fraction = -1;
            for (size_t r = 0; r < S->R; r++) {
                const mpt__plan_stage_t *st = stage_of(S, r, s);
                if (j < st->ndevices) {
                    devs[n++] = st->devices[j].device;
                    if (fraction < 0)
                        fraction = st->devices[j].fraction;
                }
            }
            if (n == 0)
                break;
            if (n < 2)
                continue;
            node_t a = {.kind = N_ALLREDUCE, .stage = s, .from = j, .to = n,
                        .bytes = mpt__cost_param_bytes(S->mc, st0->first, st0->last, fraction),
                        .pred = -1};
            for (size_t r = 0; r < S->R; r++) {
                long e = stage_end[r * S->P + s];
                if (S->nodes[e].end > a.start)
                    a.start = S->nodes[e].end, a.pred = e;
            }
            for (size_t i = 0; i < n; i++)
                if (S->dev_free[devs[i]] > a.start)
                    a.start = S->dev_free[devs[i]], a.pred = S->dev_last[devs[i]];
            double rounds = S->p->zero == 2 ? ((double)S->p->microbatches + 1) / 2 : 1;
            a.end = a.start + rounds * mpt__cost_allreduce_by(S->c, devs, n, a.bytes,
                                                              S->p->allreduce);
            long id = add_node(S, a);
            if (id < 0) {
                free(devs);
                return mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
            }
            for (size_t i = 0; i < n; i++)
                S->dev_free[devs[i]] = a.end, S->dev_last[devs[i]] = id;
        }
    }
    free(devs);
    return MPT_OK;
}

/* ---- the Chrome trace (trace/chrome.h) ------------------------------------- */

/* Tracks: pid = replica; tid = device index for its compute and
 * all-reduces; tid = ndev + 2 * boundary + direction for a link. */
static int write_trace(const sim_t *S, char **text)
{
    char name[64];
    mpt__trace_t *t = NULL;
    int status;
    MPT_TRY(mpt__trace_new(0, &t));
    for (size_t r = 0; r < S->R; r++) {
        char process[32];
        snprintf(process, sizeof process, "replica %zu", r);
        for (size_t s = 0; s < S->P; s++) {
            const mpt__plan_stage_t *st = stage_of(S, r, s);
            for (size_t g = 0; g < st->ndevices; g++) {
                snprintf(name, sizeof name, "device %zu", st->devices[g].device);
                MPT_TRY(mpt__trace_track(t, (int)r, (int)st->devices[g].device,
                                         s == 0 && g == 0 ? process : NULL, name));
            }
            if (s + 1 < S->P) {
                const mpt__plan_stage_t *to = stage_of(S, r, s + 1);
                size_t a = st->devices[st->ndevices - 1].device, b = to->devices[0].device;
                snprintf(name, sizeof name, "link %zu->%zu", a, b);
                MPT_TRY(mpt__trace_track(t, (int)r, (int)(S->ndev + 2 * s), NULL, name));
                snprintf(name, sizeof name, "link %zu->%zu", b, a);
                MPT_TRY(mpt__trace_track(t, (int)r, (int)(S->ndev + 2 * s + 1), NULL, name));
            }
        }
    }
    for (size_t i = 0; i < S->nnodes; i++) {
        const node_t *n = &S->nodes[i];
        const mpt__plan_stage_t *st = stage_of(S, n->replica, n->stage);
        if (n->kind == N_FWD || n->kind == N_BWD) {
            snprintf(name, sizeof name, "%c%zu", n->kind == N_FWD ? 'F' : 'B', n->mb);
            for (size_t g = 0; g < st->ndevices; g++)
                MPT_TRY(mpt__trace_span(
                    t, (int)n->replica, (int)st->devices[g].device, name,
                    n->kind == N_FWD ? "forward" : "backward", n->start, n->end,
                    json_pack("{s:I,s:I,s:I,s:I,s:I}", "replica", (json_int_t)n->replica, "stage",
                              (json_int_t)n->stage, "microbatch", (json_int_t)n->mb,
                              "first_layer", (json_int_t)st->first, "last_layer",
                              (json_int_t)st->last)));
        } else if (n->kind == N_SEND) {
            int back = n->back;
            size_t boundary = back ? n->stage - 1 : n->stage;
            MPT_TRY(mpt__trace_span(
                t, (int)n->replica, (int)(S->ndev + 2 * boundary + (size_t)back), "send", "p2p",
                n->start, n->end,
                json_pack("{s:I,s:s,s:I,s:I,s:I,s:f}", "microbatch", (json_int_t)n->mb,
                          "direction", back ? "backward" : "forward", "from_device",
                          (json_int_t)n->from, "to_device", (json_int_t)n->to, "from_stage",
                          (json_int_t)n->stage, "bytes", n->bytes)));
        } else {
            for (size_t r = 0; r < S->R; r++) {
                const mpt__plan_stage_t *sr = stage_of(S, r, n->stage);
                if (n->from >= sr->ndevices)
                    continue;
                MPT_TRY(mpt__trace_span(
                    t, (int)r, (int)sr->devices[n->from].device, "allreduce", "allreduce",
                    n->start, n->end,
                    json_pack("{s:I,s:I,s:I,s:f}", "stage", (json_int_t)n->stage, "member",
                              (json_int_t)n->from, "devices", (json_int_t)n->to, "bytes",
                              n->bytes)));
            }
        }
    }
    status = mpt__trace_dump(t, text);
out:
    mpt__trace_free(t);
    if (status < 0)
        mpt__fail_context(status, "simulate");
    return status;
}

/* ---- the step --------------------------------------------------------------- */

void mpt__sim_result_free(mpt__sim_result_t *r)
{
    if (!r)
        return;
    free(r->busy_s);
    free(r->utilisation);
    memset(r, 0, sizeof *r);
}

/*
 * The result:
 *   step_s          the end of the last op of the step: a backward, or an
 *                   all-reduce when there are several replicas;
 *   bubble_fraction 1 - B / (N * T), B the compute time summed over the N
 *                   distinct devices of all pipelines (a tensor-parallel
 *                   group counts each of its devices) and T the pipeline
 *                   makespan, the end of the last backward of any replica,
 *                   all-reduces excluded.  For p uniform stages and m
 *                   micro-batches under GPipe or 1F1B it is (p-1)/(m+p-1);
 *                   a replica that ends before the slowest one adds its
 *                   idle tail to the bubble;
 *   busy_s          per cluster device, seconds computing (F and B only);
 *   utilisation     busy_s / step_s (0 when the step takes no time);
 *   compute_s, p2p_s, allreduce_s: the critical path, walked back from the
 *                   op that ends last through whatever fixed each op's
 *                   start (its input, or its device being busy), split by
 *                   kind: they sum to step_s.
 */
int mpt__simulate(const mpt__plan_t *p, const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                  mpt__sim_result_t *out, char **trace_json)
{
    int status = MPT_OK;
    sim_t S = {0};
    long *stage_end = NULL;

    if (trace_json)
        *trace_json = NULL;
    if (out)
        memset(out, 0, sizeof *out);
    if (!p || !mc || !c || !out)
        return mpt__fail(MPT_ERR_INVALID, "simulate: NULL argument");
    S.p = p, S.mc = mc, S.c = c;
    S.ndev = mpt_cluster_device_count(c);
    MPT_TRY(check_plan(&S));
    S.R = p->nreplicas, S.P = p->replicas[0].nstages, S.M = p->microbatches;

    out->ndevices = S.ndev;
    out->busy_s = calloc(S.ndev ? S.ndev : 1, sizeof *out->busy_s);
    out->utilisation = calloc(S.ndev ? S.ndev : 1, sizeof *out->utilisation);
    S.dev_free = calloc(S.ndev ? S.ndev : 1, sizeof *S.dev_free);
    S.dev_last = malloc((S.ndev ? S.ndev : 1) * sizeof *S.dev_last);
    stage_end = malloc(S.R * S.P * sizeof *stage_end);
    if (!out->busy_s || !out->utilisation || !S.dev_free || !S.dev_last || !stage_end) {
        status = mpt__fail(MPT_ERR_NOMEM, "simulate: out of memory");
        goto out;
    }
    for (size_t d = 0; d < S.ndev; d++)
        S.dev_last[d] = -1;

    /* 1-2. Pipelines and their transfers. */
    MPT_TRY(run_pipelines(&S, out->busy_s, stage_end));
    double makespan = 0;
    for (size_t w = 0; w < S.R * S.P; w++)
        makespan = fmax(makespan, S.nodes[stage_end[w]].end);
    /* 3. Gradient all-reduces (none with one replica). */
    if (S.R > 1)
        MPT_TRY(run_allreduces(&S, stage_end));

    /* 4. Figures. */
    long last = 0;
    for (size_t i = 0; i < S.nnodes; i++)
        if (S.nodes[i].end > S.nodes[last].end)
            last = (long)i;
    out->step_s = S.nodes[last].end;
    for (long i = last; i >= 0; i = S.nodes[i].pred) {
        double d = S.nodes[i].end - S.nodes[i].start;
        switch (S.nodes[i].kind) {
        case N_FWD:
        case N_BWD: out->compute_s += d; break;
        case N_SEND: out->p2p_s += d; break;
        case N_ALLREDUCE: out->allreduce_s += d; break;
        }
    }
    double busy = 0;
    size_t used = 0;
    for (size_t d = 0; d < S.ndev; d++) {
        /* A device is in a pipeline when an op ran on it, even one of no
         * time: count those from the plan, not from busy_s. */
        int in_pipeline = 0;
        for (size_t r = 0; r < S.R && !in_pipeline; r++)
            for (size_t s = 0; s < S.P && !in_pipeline; s++) {
                const mpt__plan_stage_t *st = stage_of(&S, r, s);
                for (size_t g = 0; g < st->ndevices; g++)
                    in_pipeline |= st->devices[g].device == d;
            }
        used += (size_t)in_pipeline;
        busy += out->busy_s[d];
        out->utilisation[d] = out->step_s > 0 ? out->busy_s[d] / out->step_s : 0;
    }
    out->bubble_fraction = makespan > 0 ? 1 - busy / ((double)used * makespan) : 0;

    if (trace_json)
        MPT_TRY(write_trace(&S, trace_json));
out:
    if (status < 0)
        mpt__sim_result_free(out);
    free(stage_end);
    free(S.nodes);
    free(S.dev_free);
    free(S.dev_last);
    return status;
}
